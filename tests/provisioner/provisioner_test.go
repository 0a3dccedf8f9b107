package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"
)

func options(pv string, mode corev1.PersistentVolumeMode, node string) controller.ProvisionOptions {
	return controller.ProvisionOptions{
		PVName:           pv,
		StorageClass:     &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "local-hostpath"}},
		SelectedNodeName: node,
		PVC: &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: "c", Namespace: "ns"},
			Spec: corev1.PersistentVolumeClaimSpec{
				VolumeMode:  &mode,
				AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("8Mi")}},
			},
		},
	}
}

// A Filesystem claim gets a world-writable directory as a local PV pinned to the scheduler's node; Delete
// removes it; a PV made elsewhere is ignored.
func TestProvisionFilesystem(t *testing.T) {
	root := t.TempDir()
	p := &Provisioner{Root: root, Node: "default-node"}
	pv, state, err := p.Provision(context.Background(), options("pvc-1", corev1.PersistentVolumeFilesystem, "picked"))
	if err != nil || state != controller.ProvisioningFinished {
		t.Fatalf("provision: %v %s", err, state)
	}
	dir := filepath.Join(root, "pvc-1")
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o777 {
		t.Fatalf("volume directory: %v %v", st, err)
	}
	if pv.Spec.Local == nil || pv.Spec.Local.Path != dir || *pv.Spec.VolumeMode != corev1.PersistentVolumeFilesystem ||
		pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete || pv.Spec.Capacity.Storage().String() != "8Mi" {
		t.Errorf("PV %+v", pv.Spec)
	}
	if v := pv.Spec.NodeAffinity.Required.NodeSelectorTerms[0].MatchExpressions[0].Values; len(v) != 1 || v[0] != "picked" {
		t.Errorf("node affinity %v, want the selected node", v)
	}
	if err := p.Delete(context.Background(), pv); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("directory left after Delete: %v", err)
	}
	foreign := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "x", Annotations: map[string]string{annBacking: "/etc"}}}
	if err := p.Delete(context.Background(), foreign); err == nil || !strings.Contains(err.Error(), "not made under") {
		t.Errorf("foreign PV: %v", err)
	}
}

// A Block claim gets a loop device over a sparse file of the claim's size; Delete detaches it and removes
// the file.
func TestProvisionBlock(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("loop devices need root")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("no loop devices: %v", err)
	}
	root := t.TempDir()
	p := &Provisioner{Root: root, Node: "n"}
	pv, _, err := p.Provision(context.Background(), options("pvc-b", corev1.PersistentVolumeBlock, ""))
	if err != nil {
		t.Fatal(err)
	}
	dev := pv.Spec.Local.Path
	file := filepath.Join(root, "pvc-b.img")
	if got, ok := loopOf(file); !ok || got != dev || *pv.Spec.VolumeMode != corev1.PersistentVolumeBlock {
		t.Fatalf("PV path %s mode %s; loop of %s: %s %v", dev, *pv.Spec.VolumeMode, file, got, ok)
	}
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	size, _ := f.Seek(0, 2)
	f.Close()
	if size != 8<<20 {
		t.Errorf("device size %d", size)
	}
	if v := pv.Spec.NodeAffinity.Required.NodeSelectorTerms[0].MatchExpressions[0].Values; v[0] != "n" {
		t.Errorf("node affinity %v, want the provisioner's node for an Immediate class", v)
	}
	// A retry of the same PV reuses its device.
	again, _, err := p.Provision(context.Background(), options("pvc-b", corev1.PersistentVolumeBlock, ""))
	if err != nil || again.Spec.Local.Path != dev {
		t.Errorf("retry: %v %v", again, err)
	}
	if err := p.Delete(context.Background(), pv); err != nil {
		t.Fatal(err)
	}
	if _, ok := loopOf(file); ok {
		t.Error("loop device still attached after Delete")
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Errorf("backing file left: %v", err)
	}
}
