package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Storage of the local cluster: tests/provisioner's hostpath-provisioner (Kubernetes' external-provisioner
// library with a directory / loop-device back end, both volume modes) runs on the host with its own
// kubeconfig, and tests/provisioner/storageclass.yaml makes its class the default, so a claim with no
// storageClassName gets a volume once a pod uses it (WaitForFirstConsumer). Volumes live under
// <dir>/volumes; cluster-down detaches their loop devices and removes them.
const (
	provisionerName = "hostpath-provisioner"
	// StorageClassName is the local cluster's default StorageClass.
	StorageClassName = "local-hostpath"
)

// ProvisionerBinary is where tests/provisioner/build.sh (just cluster-build) links the provisioner: beside
// the kube binary.
func ProvisionerBinary(kubeBin string) (string, error) {
	p := filepath.Join(filepath.Dir(kubeBin), provisionerName)
	if st, err := os.Stat(p); err != nil || st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("%s not built: run `just cluster-build` (tests/provisioner/build.sh)", p)
	}
	return p, nil
}

// VolumesDir is where the provisioner keeps the cluster's volumes.
func VolumesDir(dir string) string { return filepath.Join(dir, "volumes") }

// startStorage starts the provisioner and applies the default StorageClass.
func startStorage(ctx context.Context, run, dir, provBin, kubeconfig, adminKubeconfig string, client kubernetes.Interface) error {
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		return fmt.Errorf("block volumes need loop devices: %w (modprobe loop)", err)
	}
	prov, err := startDetached(run, provisionerName, provBin, []string{"--kubeconfig", kubeconfig, "--root", VolumesDir(dir), "--node", NodeName})
	if err != nil {
		return err
	}
	root, err := repoRoot()
	if err != nil {
		return err
	}
	manifest := filepath.Join(root, "tests", "provisioner", "storageclass.yaml")
	if out, err := exec.Command("kubectl", "--kubeconfig", adminKubeconfig, "apply", "-f", manifest).CombinedOutput(); err != nil {
		return fmt.Errorf("kubectl apply -f %s: %v: %s", manifest, err, out)
	}
	return poll(ctx, prov, "default StorageClass "+StorageClassName, func() (bool, error) {
		sc, err := client.StorageV1().StorageClasses().Get(ctx, StorageClassName, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return isDefaultClass(sc), errors.New("not marked default")
	})
}

func isDefaultClass(sc *storagev1.StorageClass) bool {
	return sc.Annotations["storageclass.kubernetes.io/is-default-class"] == "true"
}

// detachLoops detaches every loop device whose backing file is under dir (the cluster's block volumes,
// and the kubelet's files under its root), so removing the files frees the devices. The kubelet holds each
// block volume it maps open with a loop device of its own over the volume's device node (its
// "AttachFileDevice" lock, whose backing path reads "/" once the bind mount is gone); a device held that
// way only detaches when its holder goes, so holders are detached first. It waits briefly for the kernel's
// deferred detaches and returns the devices still attached.
func detachLoops(dir string) []string {
	ours := loopsUnder(dir)
	var order []string
	for _, dev := range ours {
		order = append(order, loopsOver(dev)...)
	}
	order = append(order, ours...)
	for _, dev := range order {
		f, err := os.OpenFile(dev, os.O_RDWR, 0)
		if err != nil {
			continue
		}
		_ = unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0) // busy: the kernel detaches it at its last close
		f.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(loopsUnder(dir)) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	var left []string
	for _, dev := range loopsUnder(dir) {
		left = append(left, "loop device "+dev+" still attached (held open by another process?)")
	}
	return left
}

// loopsOver lists the loop devices whose backing file is the device node dev (the kubelet's locks).
func loopsOver(dev string) []string {
	var node unix.Stat_t
	if err := unix.Stat(dev, &node); err != nil {
		return nil
	}
	var out []string
	all, _ := filepath.Glob("/dev/loop[0-9]*")
	for _, l := range all {
		f, err := os.Open(l)
		if err != nil {
			continue
		}
		st, err := unix.IoctlLoopGetStatus64(int(f.Fd()))
		f.Close()
		if err == nil && st.Device == node.Dev && st.Inode == node.Ino {
			out = append(out, l)
		}
	}
	return out
}

// loopsUnder lists the loop devices backed by a file under dir.
func loopsUnder(dir string) []string {
	dir = filepath.Clean(dir) + "/"
	var out []string
	entries, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, e := range entries {
		b, err := os.ReadFile(e)
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), dir) {
			out = append(out, "/dev/"+filepath.Base(filepath.Dir(filepath.Dir(e))))
		}
	}
	return out
}
