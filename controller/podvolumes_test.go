package controller

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/launcher/volumes"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func claim(name string, mode corev1.PersistentVolumeMode, bound bool) *corev1.PersistentVolumeClaim {
	c := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns"},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
	if mode != "" {
		c.Spec.VolumeMode = &mode
	}
	if bound {
		c.Status.Phase = corev1.ClaimBound
		c.Status.Capacity = corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("2Gi")}
	}
	return c
}

func pvcVMI(vols ...v1.Volume) *v1.VirtualMachineInstance {
	mem := resource.MustParse("64Mi")
	vmi := &v1.VirtualMachineInstance{ObjectMeta: metav1.ObjectMeta{Name: "vm", Namespace: "ns", UID: "uid-1"}}
	vmi.Spec.Domain.Memory = &v1.Memory{Guest: &mem}
	for _, vol := range vols {
		vmi.Spec.Domain.Devices.Disks = append(vmi.Spec.Domain.Devices.Disks, v1.Disk{Name: vol.Name})
	}
	vmi.Spec.Volumes = vols
	return vmi
}

func pvcVol(name, claim string, ro bool) v1.Volume {
	return v1.Volume{Name: name, PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: claim, ReadOnly: ro}}
}

// The controller and the launcher agree on where a claim and a hostDisk appear in the pod.
func TestPodVolumePathsMatchLauncher(t *testing.T) {
	if VMIDisksDir != volumes.VMIDisksDir {
		t.Errorf("controller mounts claims at %s, the launcher reads %s", VMIDisksDir, volumes.VMIDisksDir)
	}
	if got, want := PVCBlockDevicePath("data"), volumes.PVCBlockPath("", "data"); got != want {
		t.Errorf("block device at %s, the launcher opens %s", got, want)
	}
}

// KubeVirt's rendervolumes.go: filesystem claims mounted at vmi-disks/<volume>, block claims as
// volumeDevices /dev/<volume>, readOnly on the pod volume, hostDisk as a hostPath of its directory.
func TestRenderPodVolumes(t *testing.T) {
	dir, dirOrCreate := corev1.HostPathDirectory, corev1.HostPathDirectoryOrCreate
	claims := map[string]*corev1.PersistentVolumeClaim{
		"fs":    claim("fs", corev1.PersistentVolumeFilesystem, true),
		"unset": claim("unset", "", false),
		"blk":   claim("blk", corev1.PersistentVolumeBlock, true),
	}
	tests := []struct {
		name    string
		vol     v1.Volume
		volume  corev1.Volume
		mount   *corev1.VolumeMount
		device  *corev1.VolumeDevice
		hasInfo bool
	}{
		{"filesystem claim", pvcVol("root", "fs", false),
			corev1.Volume{Name: "root", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "fs"}}},
			&corev1.VolumeMount{Name: "root", MountPath: "/var/run/kubevirt-private/vmi-disks/root"}, nil, true},
		{"volumeMode unset is Filesystem", pvcVol("data", "unset", false),
			corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "unset"}}},
			&corev1.VolumeMount{Name: "data", MountPath: "/var/run/kubevirt-private/vmi-disks/data"}, nil, true},
		{"read-only filesystem claim", pvcVol("ro", "fs", true),
			corev1.Volume{Name: "ro", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "fs", ReadOnly: true}}},
			&corev1.VolumeMount{Name: "ro", MountPath: "/var/run/kubevirt-private/vmi-disks/ro", ReadOnly: true}, nil, true},
		{"block claim", pvcVol("disk", "blk", false),
			corev1.Volume{Name: "disk", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "blk"}}},
			nil, &corev1.VolumeDevice{Name: "disk", DevicePath: "/dev/disk"}, true},
		{"read-only block claim", pvcVol("disk", "blk", true),
			corev1.Volume{Name: "disk", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "blk", ReadOnly: true}}},
			nil, &corev1.VolumeDevice{Name: "disk", DevicePath: "/dev/disk"}, true},
		{"hostDisk Disk", v1.Volume{Name: "host", HostDisk: &v1.HostDisk{Path: "/srv/vms/a.img", Type: v1.HostDiskExists}},
			corev1.Volume{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/srv/vms", Type: &dir}}},
			&corev1.VolumeMount{Name: "host", MountPath: "/var/run/kubevirt-private/vmi-disks/host"}, nil, false},
		{"hostDisk DiskOrCreate", v1.Volume{Name: "host", HostDisk: &v1.HostDisk{Path: "/srv/new/b.img", Type: v1.HostDiskExistsOrCreate, Capacity: resource.MustParse("1Gi")}},
			corev1.Volume{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/srv/new", Type: &dirOrCreate}}},
			&corev1.VolumeMount{Name: "host", MountPath: "/var/run/kubevirt-private/vmi-disks/host"}, nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pv, err := renderPodVolumes(pvcVMI(tc.vol), claims, true)
			if err != nil {
				t.Fatal(err)
			}
			if len(pv.volumes) != 1 || !equality.Semantic.DeepEqual(pv.volumes[0], tc.volume) {
				t.Errorf("volumes %+v, want %+v", pv.volumes, tc.volume)
			}
			if (tc.mount == nil) != (len(pv.mounts) == 0) || tc.mount != nil && pv.mounts[0] != *tc.mount {
				t.Errorf("mounts %+v, want %+v", pv.mounts, tc.mount)
			}
			if (tc.device == nil) != (len(pv.devices) == 0) || tc.device != nil && pv.devices[0] != *tc.device {
				t.Errorf("devices %+v, want %+v", pv.devices, tc.device)
			}
			if tc.hasInfo != (len(pv.status) == 1) {
				t.Errorf("volume status %+v", pv.status)
			}
		})
	}
	if _, err := renderPodVolumes(pvcVMI(pvcVol("root", "gone", false)), claims, true); err == nil {
		t.Error("a missing claim rendered")
	}
	host := v1.Volume{Name: "host", HostDisk: &v1.HostDisk{Path: "/etc/cron.d/x", Type: v1.HostDiskExistsOrCreate}}
	if _, err := renderPodVolumes(pvcVMI(host), claims, false); !errors.Is(err, ErrHostDisksDisabled) || !strings.Contains(err.Error(), "spec.volumes[0].hostDisk") {
		t.Errorf("hostDisk without --host-disks: %v", err)
	}
}

// The launcher's copy of the VMI carries each claim's mode, access modes, request and capacity (KubeVirt's
// status.volumeStatus[].persistentVolumeClaimInfo), and the pod mounts the claims into the compute container.
func TestLauncherPodCarriesClaims(t *testing.T) {
	vmi := pvcVMI(pvcVol("root", "fs", false), pvcVol("disk", "blk", false))
	claims := map[string]*corev1.PersistentVolumeClaim{"fs": claim("fs", "", true), "blk": claim("blk", corev1.PersistentVolumeBlock, false)}
	pod, err := renderLauncherPod(vmi, PodConfig{Image: "img"}, claims)
	if err != nil {
		t.Fatal(err)
	}
	var got v1.VirtualMachineInstance
	if err := json.Unmarshal([]byte(pod.Annotations[VMIAnnotation]), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Status.VolumeStatus) != 2 {
		t.Fatalf("launcher VMI volumeStatus %+v", got.Status.VolumeStatus)
	}
	fs, blk := got.Status.VolumeStatus[0].PersistentVolumeClaimInfo, got.Status.VolumeStatus[1].PersistentVolumeClaimInfo
	if fs.ClaimName != "fs" || *fs.VolumeMode != corev1.PersistentVolumeFilesystem || fs.Capacity.Storage().String() != "2Gi" || fs.Requests.Storage().String() != "1Gi" {
		t.Errorf("filesystem claim info %+v", fs)
	}
	if *blk.VolumeMode != corev1.PersistentVolumeBlock || len(blk.Capacity) != 0 || blk.Requests.Storage().String() != "1Gi" || blk.AccessModes[0] != corev1.ReadWriteOnce {
		t.Errorf("unbound block claim info %+v", blk)
	}
	c := pod.Spec.Containers[0]
	if len(c.VolumeDevices) != 1 || c.VolumeDevices[0].DevicePath != "/dev/disk" {
		t.Errorf("compute volumeDevices %+v", c.VolumeDevices)
	}
	found := false
	for _, m := range c.VolumeMounts {
		found = found || m.Name == "root" && m.MountPath == VMIDisksDir+"/root"
	}
	if !found {
		t.Errorf("compute mounts %+v lack the filesystem claim", c.VolumeMounts)
	}
	if _, err := renderLauncherPod(pvcVMI(pvcVol("root", "gone", false)), PodConfig{Image: "img"}, claims); err == nil {
		t.Error("rendered a pod for a missing claim")
	}
}

func TestMissingClaims(t *testing.T) {
	vmi := pvcVMI(pvcVol("a", "one", false), pvcVol("b", "two", false), pvcVol("c", "one", true))
	if got := missingClaims(&vmi.Spec, map[string]*corev1.PersistentVolumeClaim{"two": claim("two", "", false)}); len(got) != 1 || got[0] != "one" {
		t.Errorf("missing %v, want [one] (once)", got)
	}
	if got := missingClaims(&vmi.Spec, map[string]*corev1.PersistentVolumeClaim{"one": claim("one", "", false), "two": claim("two", "", false)}); got != nil {
		t.Errorf("missing %v with every claim present (an unbound claim is not missing)", got)
	}
}

// BEHAVIOUR.md §2 printable status 6: KubeVirt writes Synchronized=False/FailedPvcNotFound and
// PodScheduled=False/Unschedulable while a claim is missing, and drops both once the pod is created.
func TestPVCSyncStatus(t *testing.T) {
	t0 := metav1.NewTime(time.Unix(1000, 0))
	t1 := metav1.NewTime(time.Unix(2000, 0))
	missing := func() v1.VirtualMachineInstanceStatus {
		var st v1.VirtualMachineInstanceStatus
		pvcSyncStatus(&st, "ns", []string{"disk"}, t0)
		return st
	}
	tests := []struct {
		name       string
		st         v1.VirtualMachineInstanceStatus
		missing    []string
		wantNew    bool
		wantSync   string // Synchronized reason ("" absent)
		wantSched  string // PodScheduled reason ("" absent)
		wantSchedS corev1.ConditionStatus
	}{
		{"claim missing: both conditions, event", v1.VirtualMachineInstanceStatus{}, []string{"disk", "other"}, true, v1.FailedPvcNotFoundReason, v1.UnschedulableReason, corev1.ConditionFalse},
		{"still missing: no new event", missing(), []string{"disk"}, false, v1.FailedPvcNotFoundReason, v1.UnschedulableReason, corev1.ConditionFalse},
		{"another claim missing: new event", missing(), []string{"other"}, true, v1.FailedPvcNotFoundReason, v1.UnschedulableReason, corev1.ConditionFalse},
		{"claim created: both removed", missing(), nil, false, "", "", ""},
		{"the pod's own PodScheduled stays", func() v1.VirtualMachineInstanceStatus {
			st := missing()
			setVMICondition(&st, v1.VirtualMachineInstanceCondition{Type: v1.VirtualMachineInstancePodScheduled, Status: corev1.ConditionTrue}, t1)
			return st
		}(), nil, false, "", "", corev1.ConditionTrue},
		{"an image-pull Synchronized is not ours", func() v1.VirtualMachineInstanceStatus {
			var st v1.VirtualMachineInstanceStatus
			setVMICondition(&st, v1.VirtualMachineInstanceCondition{Type: v1.VirtualMachineInstanceSynchronized, Status: corev1.ConditionFalse, Reason: v1.ErrImagePullReason}, t1)
			return st
		}(), nil, false, v1.ErrImagePullReason, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := tc.st.DeepCopy()
			if got := pvcSyncStatus(st, "ns", tc.missing, t1); got != tc.wantNew {
				t.Errorf("new = %v, want %v", got, tc.wantNew)
			}
			sync := st.Condition(v1.VirtualMachineInstanceSynchronized)
			if (sync == nil) != (tc.wantSync == "") || sync != nil && sync.Reason != tc.wantSync {
				t.Errorf("Synchronized %+v, want reason %q", sync, tc.wantSync)
			}
			if sync != nil && sync.Reason == v1.FailedPvcNotFoundReason {
				if sync.Status != corev1.ConditionFalse || sync.Message != pvcNotFoundMessage("ns", tc.missing[0]) {
					t.Errorf("Synchronized %+v", sync)
				}
				if tc.name == "still missing: no new event" && !sync.LastTransitionTime.Equal(&t0) {
					t.Errorf("an unchanged condition moved its transition time to %v", sync.LastTransitionTime)
				}
			}
			ps := st.Condition(v1.VirtualMachineInstancePodScheduled)
			if (ps == nil) != (tc.wantSchedS == "") || ps != nil && (ps.Reason != tc.wantSched || ps.Status != tc.wantSchedS) {
				t.Errorf("PodScheduled %+v, want %s/%q", ps, tc.wantSchedS, tc.wantSched)
			}
		})
	}
}
