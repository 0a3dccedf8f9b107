package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"
)

// ProvisionerName is the provisioner the local cluster's default StorageClass names.
const ProvisionerName = "kvirt.io/hostpath"

// Provisioner makes volumes under Root on this machine (the cluster's only node).
type Provisioner struct {
	Root string
	Node string
}

var _ controller.BlockProvisioner = (*Provisioner)(nil)

// SupportsBlock: Block claims get a loop device.
func (p *Provisioner) SupportsBlock(context.Context) bool { return true }

// Provision makes the claim's directory or loop device and returns its local PV.
func (p *Provisioner) Provision(_ context.Context, o controller.ProvisionOptions) (*corev1.PersistentVolume, controller.ProvisioningState, error) {
	size, ok := o.PVC.Spec.Resources.Requests[corev1.ResourceStorage]
	if !ok || size.Sign() <= 0 {
		return nil, controller.ProvisioningFinished, errors.New("the claim requests no storage size")
	}
	node := o.SelectedNodeName
	if node == "" {
		node = p.Node
	}
	mode := corev1.PersistentVolumeFilesystem
	var path string
	if o.PVC.Spec.VolumeMode != nil && *o.PVC.Spec.VolumeMode == corev1.PersistentVolumeBlock {
		mode = corev1.PersistentVolumeBlock
		dev, err := attachLoop(filepath.Join(p.Root, o.PVName+".img"), size.Value())
		if err != nil {
			return nil, controller.ProvisioningFinished, err
		}
		path = dev
	} else {
		path = filepath.Join(p.Root, o.PVName)
		if err := os.Mkdir(path, 0o777); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, controller.ProvisioningFinished, err
		}
		if err := os.Chmod(path, 0o777); err != nil { // any uid in a pod may write (umask aside)
			return nil, controller.ProvisioningFinished, err
		}
	}
	reclaim := corev1.PersistentVolumeReclaimDelete
	if o.StorageClass.ReclaimPolicy != nil {
		reclaim = *o.StorageClass.ReclaimPolicy
	}
	klog.Infof("provisioned %s (%s, %s) at %s on node %s for claim %s/%s", o.PVName, mode, size.String(), path, node, o.PVC.Namespace, o.PVC.Name)
	return &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: o.PVName, Annotations: map[string]string{annBacking: backingOf(p.Root, o.PVName, mode)}},
		Spec: corev1.PersistentVolumeSpec{
			PersistentVolumeReclaimPolicy: reclaim,
			AccessModes:                   o.PVC.Spec.AccessModes,
			VolumeMode:                    &mode,
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
			MountOptions:                  o.StorageClass.MountOptions,
			PersistentVolumeSource:        corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: path}},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: corev1.LabelHostname, Operator: corev1.NodeSelectorOpIn, Values: []string{node}}},
			}}}},
		},
	}, controller.ProvisioningFinished, nil
}

// annBacking on a PV names what Delete removes: the directory or the loop device's backing file.
const annBacking = "kvirt.io/hostpath-backing"

func backingOf(root, pv string, mode corev1.PersistentVolumeMode) string {
	if mode == corev1.PersistentVolumeBlock {
		return filepath.Join(root, pv+".img")
	}
	return filepath.Join(root, pv)
}

// Delete removes a volume made by Provision: detaches the loop device and removes its file, or removes the
// directory. Only paths under Root are touched.
func (p *Provisioner) Delete(_ context.Context, pv *corev1.PersistentVolume) error {
	backing := pv.Annotations[annBacking]
	if backing == "" || filepath.Dir(backing) != filepath.Clean(p.Root) {
		return &controller.IgnoredError{Reason: fmt.Sprintf("PV %s was not made under %s", pv.Name, p.Root)}
	}
	if pv.Spec.VolumeMode != nil && *pv.Spec.VolumeMode == corev1.PersistentVolumeBlock && pv.Spec.Local != nil {
		if err := detachLoop(pv.Spec.Local.Path, backing); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(backing); err != nil {
		return err
	}
	klog.Infof("deleted %s (%s)", pv.Name, backing)
	return nil
}

// attachLoop creates the sparse file (if missing) of size bytes and attaches it to a free loop device,
// returning the device's path.
func attachLoop(file string, size int64) (string, error) {
	f, err := os.OpenFile(file, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return "", err
	}
	if dev, ok := loopOf(file); ok { // a retry after the device was attached
		return dev, nil
	}
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return "", fmt.Errorf("block volumes need loop devices: %w", err)
	}
	defer ctl.Close()
	for range 8 { // another process may take the free device first
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return "", fmt.Errorf("LOOP_CTL_GET_FREE: %w", err)
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		lf, err := os.OpenFile(dev, os.O_RDWR, 0)
		if err != nil {
			return "", err
		}
		cfg := unix.LoopConfig{Fd: uint32(f.Fd())}
		copy(cfg.Info.File_name[:], file)
		err = unix.IoctlLoopConfigure(int(lf.Fd()), &cfg)
		lf.Close()
		if errors.Is(err, unix.EBUSY) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("attach %s to %s: %w", file, dev, err)
		}
		return dev, nil
	}
	return "", errors.New("no free loop device")
}

// loopOf finds the loop device whose backing file is file.
func loopOf(file string) (string, bool) {
	entries, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, e := range entries {
		b, err := os.ReadFile(e)
		if err == nil && strings.TrimSpace(string(b)) == file {
			return "/dev/" + filepath.Base(filepath.Dir(filepath.Dir(e))), true
		}
	}
	return "", false
}

// detachLoop detaches dev if its backing file is file (a device reused since is left alone).
func detachLoop(dev, file string) error {
	if cur, ok := loopOf(file); !ok || cur != dev {
		return nil
	}
	lf, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer lf.Close()
	if err := unix.IoctlSetInt(int(lf.Fd()), unix.LOOP_CLR_FD, 0); err != nil && !errors.Is(err, unix.ENXIO) {
		return fmt.Errorf("detach %s: %w", dev, err)
	}
	return nil
}
