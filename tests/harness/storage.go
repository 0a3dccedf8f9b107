package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

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

// detachLoops detaches every loop device whose backing file is under dir (the cluster's block volumes), so
// removing the files frees the devices. It returns the devices it could not detach.
func detachLoops(dir string) []string {
	var left []string
	for _, dev := range loopsUnder(dir) {
		f, err := os.OpenFile(dev, os.O_RDWR, 0)
		if err == nil {
			err = unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0)
			f.Close()
		}
		if err != nil && !errors.Is(err, unix.ENXIO) {
			left = append(left, fmt.Sprintf("loop device %s: %v", dev, err))
		}
	}
	return left
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
