package controller

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"

	v1 "github.com/kvirt/kvirt/api/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// Persistent disks in the launcher pod, in KubeVirt's layout (pkg/virt-controller/services/rendervolumes.go,
// pkg/host-disk), which the launcher reads (launcher/volumes):
//
//   - a Filesystem-mode persistentVolumeClaim is mounted at VMIDisksDir/<volume>/; the disk is the file
//     disk.img inside it, which the launcher creates at the claim's size when it is missing;
//   - a Block-mode claim is a volumeDevice at /dev/<volume>;
//   - a hostDisk is a hostPath volume of the directory holding hostDisk.path (type Directory for Disk,
//     DirectoryOrCreate for DiskOrCreate), mounted at VMIDisksDir/<volume>/, the disk being the file of
//     path's base name there.
//
// The claim's read-only flag goes on the pod volume, so the kubelet mounts it read-only. The launcher
// learns each claim's mode, access modes, request and capacity from status.volumeStatus of its copy of
// the VMI (KubeVirt's PersistentVolumeClaimInfo), since it has no API access.
//
// A claim that does not exist keeps the VMI Pending without a pod: Synchronized=False with reason
// FailedPvcNotFound and PodScheduled=False/Unschedulable, as KubeVirt's VMI controller writes them (the VM
// then shows ErrorPvcNotFound); creating the claim re-syncs the VMI and the pod is created. An existing but
// unbound claim does not hold the pod back: the scheduler waits for the binding (WaitForFirstConsumer
// classes bind only then), and the VM shows WaitingForVolumeBinding meanwhile (vmdecide.go).
const (
	// VMIDisksDir is where filesystem-mode claims and hostDisk directories are mounted (launcher/volumes.VMIDisksDir).
	VMIDisksDir = "/var/run/kubevirt-private/vmi-disks"
)

// PVCBlockDevicePath is the device path of a Block-mode claim volume in the launcher container.
func PVCBlockDevicePath(volume string) string { return filepath.Join("/dev", volume) }

// podVolumes is what a VMI's persistent volumes add to its launcher pod.
type podVolumes struct {
	volumes []corev1.Volume
	mounts  []corev1.VolumeMount
	devices []corev1.VolumeDevice
	// status is the VMI's status.volumeStatus for its claims, for the launcher's copy of the VMI.
	status []v1.VolumeStatus
}

// claimNames lists the claim names of the VMI's persistentVolumeClaim volumes, without duplicates.
func claimNames(spec *v1.VirtualMachineInstanceSpec) []string {
	var out []string
	for _, vol := range spec.Volumes {
		if c := vol.PersistentVolumeClaim; c != nil && c.ClaimName != "" && !slices.Contains(out, c.ClaimName) {
			out = append(out, c.ClaimName)
		}
	}
	return out
}

// missingClaims returns the VMI's claims that are not in claims (by name), in volume order.
func missingClaims(spec *v1.VirtualMachineInstanceSpec, claims map[string]*corev1.PersistentVolumeClaim) []string {
	var out []string
	for _, name := range claimNames(spec) {
		if claims[name] == nil {
			out = append(out, name)
		}
	}
	return out
}

// pvcNotFoundMessage is KubeVirt's message for a claim that does not exist (areDataVolumesReady).
func pvcNotFoundMessage(namespace, claim string) string {
	return fmt.Sprintf("PVC %s/%s does not exist, waiting for it to appear", namespace, claim)
}

// ErrHostDisksDisabled refuses a hostDisk volume when virt-controller runs without --host-disks.
var ErrHostDisksDisabled = errors.New("hostDisk volumes are disabled: they give whoever creates a VMI write access to files on the node; an administrator enables them with virt-controller --host-disks (KubeVirt's HostDisk feature gate)")

// renderPodVolumes renders the VMI's persistentVolumeClaim and hostDisk volumes. Every claim must be in
// claims (missingClaims first); the claim's spec.volumeMode picks filesystem or block (unset means
// Filesystem, the API default). hostDisks allows hostDisk volumes.
func renderPodVolumes(vmi *v1.VirtualMachineInstance, claims map[string]*corev1.PersistentVolumeClaim, hostDisks bool) (podVolumes, error) {
	var out podVolumes
	for i, vol := range vmi.Spec.Volumes {
		switch {
		case vol.PersistentVolumeClaim != nil:
			src := vol.PersistentVolumeClaim
			claim := claims[src.ClaimName]
			if claim == nil {
				return podVolumes{}, fmt.Errorf("spec.volumes[%d].persistentVolumeClaim: %s", i, pvcNotFoundMessage(vmi.Namespace, src.ClaimName))
			}
			out.volumes = append(out.volumes, corev1.Volume{Name: vol.Name, VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: src.ClaimName, ReadOnly: src.ReadOnly},
			}})
			if isBlock(claim) {
				out.devices = append(out.devices, corev1.VolumeDevice{Name: vol.Name, DevicePath: PVCBlockDevicePath(vol.Name)})
			} else {
				out.mounts = append(out.mounts, corev1.VolumeMount{Name: vol.Name, MountPath: filepath.Join(VMIDisksDir, vol.Name), ReadOnly: src.ReadOnly})
			}
			out.status = append(out.status, v1.VolumeStatus{Name: vol.Name, PersistentVolumeClaimInfo: claimInfo(claim)})
		case vol.HostDisk != nil:
			if !hostDisks {
				return podVolumes{}, fmt.Errorf("spec.volumes[%d].hostDisk: %w", i, ErrHostDisksDisabled)
			}
			t := corev1.HostPathDirectory
			if vol.HostDisk.Type == v1.HostDiskExistsOrCreate {
				t = corev1.HostPathDirectoryOrCreate
			}
			out.volumes = append(out.volumes, corev1.Volume{Name: vol.Name, VolumeSource: corev1.VolumeSource{
				HostPath: &corev1.HostPathVolumeSource{Path: filepath.Dir(vol.HostDisk.Path), Type: &t},
			}})
			out.mounts = append(out.mounts, corev1.VolumeMount{Name: vol.Name, MountPath: filepath.Join(VMIDisksDir, vol.Name)})
		}
	}
	return out, nil
}

func isBlock(c *corev1.PersistentVolumeClaim) bool {
	return c.Spec.VolumeMode != nil && *c.Spec.VolumeMode == corev1.PersistentVolumeBlock
}

// claimInfo is KubeVirt's PersistentVolumeClaimInfo of c (the volume mode defaulted to Filesystem).
func claimInfo(c *corev1.PersistentVolumeClaim) *v1.PersistentVolumeClaimInfo {
	mode := corev1.PersistentVolumeFilesystem
	if c.Spec.VolumeMode != nil {
		mode = *c.Spec.VolumeMode
	}
	info := &v1.PersistentVolumeClaimInfo{
		ClaimName:   c.Name,
		AccessModes: slices.Clone(c.Spec.AccessModes),
		VolumeMode:  &mode,
	}
	if len(c.Status.Capacity) > 0 {
		info.Capacity = c.Status.Capacity.DeepCopy()
	}
	if len(c.Spec.Resources.Requests) > 0 {
		info.Requests = c.Spec.Resources.Requests.DeepCopy()
	}
	return info
}

// addPodVolumes adds pv to the launcher pod (whose first container is the compute container).
func addPodVolumes(pod *corev1.Pod, pv podVolumes) {
	compute := &pod.Spec.Containers[0]
	pod.Spec.Volumes = append(pod.Spec.Volumes, pv.volumes...)
	compute.VolumeMounts = append(compute.VolumeMounts, pv.mounts...)
	compute.VolumeDevices = append(compute.VolumeDevices, pv.devices...)
}

// pvcSyncStatus writes KubeVirt's conditions for missing claims into st (missing: the VMI's claims that do not
// exist, when no pod exists; otherwise nil). With missing claims: Synchronized=False/FailedPvcNotFound and
// PodScheduled=False/Unschedulable, both with the message naming the first missing claim. Without: the two
// conditions it set earlier are removed (a PodScheduled condition copied from a pod is left alone). It
// reports whether the FailedPvcNotFound condition is new (for the event).
func pvcSyncStatus(st *v1.VirtualMachineInstanceStatus, namespace string, missing []string, now metav1.Time) bool {
	sync := st.Condition(v1.VirtualMachineInstanceSynchronized)
	wasMissing := sync != nil && sync.Status == corev1.ConditionFalse && sync.Reason == v1.FailedPvcNotFoundReason
	oldMsg := ""
	if wasMissing {
		oldMsg = sync.Message
	}
	if len(missing) == 0 {
		if wasMissing {
			removeVMICondition(st, v1.VirtualMachineInstanceSynchronized)
			if ps := st.Condition(v1.VirtualMachineInstancePodScheduled); ps != nil && ps.Reason == v1.UnschedulableReason && ps.Message == oldMsg {
				removeVMICondition(st, v1.VirtualMachineInstancePodScheduled)
			}
		}
		return false
	}
	msg := pvcNotFoundMessage(namespace, missing[0])
	setVMICondition(st, v1.VirtualMachineInstanceCondition{
		Type: v1.VirtualMachineInstanceSynchronized, Status: corev1.ConditionFalse, Reason: v1.FailedPvcNotFoundReason, Message: msg,
	}, now)
	setVMICondition(st, v1.VirtualMachineInstanceCondition{
		Type: v1.VirtualMachineInstancePodScheduled, Status: corev1.ConditionFalse, Reason: v1.UnschedulableReason, Message: msg,
	}, now)
	return !wasMissing || oldMsg != msg
}

// vmiPVCIndex indexes VMIs by namespace/claim of their persistentVolumeClaim volumes (a claim's event finds
// the VMIs waiting for it).
const vmiPVCIndex = "pvc"

// watchClaims makes c re-sync the VMIs naming a claim when it is added, changes or goes away.
func (c *VMIController) watchClaims(vmiInf, pvcInf cache.SharedIndexInformer) error {
	if err := vmiInf.AddIndexers(cache.Indexers{vmiPVCIndex: func(obj any) ([]string, error) {
		vmi, ok := obj.(*v1.VirtualMachineInstance)
		if !ok {
			return nil, nil
		}
		var keys []string
		for _, claim := range claimNames(&vmi.Spec) {
			keys = append(keys, vmi.Namespace+"/"+claim)
		}
		return keys, nil
	}}); err != nil {
		return err
	}
	c.vmiIndex = vmiInf.GetIndexer()
	c.pvcs = corelisters.NewPersistentVolumeClaimLister(pvcInf.GetIndexer())
	_, err := pvcInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueueVMIsOfPVC,
		UpdateFunc: func(_, n any) { c.enqueueVMIsOfPVC(n) },
		DeleteFunc: c.enqueueVMIsOfPVC,
	})
	return err
}

func (c *VMIController) enqueueVMIsOfPVC(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	pvc, ok := obj.(*corev1.PersistentVolumeClaim)
	if !ok {
		return
	}
	vmis, err := c.vmiIndex.ByIndex(vmiPVCIndex, pvc.Namespace+"/"+pvc.Name)
	if err != nil {
		return
	}
	for _, o := range vmis {
		c.enqueue(o)
	}
}

// claimsOf reads the VMI's claims from the cache; missing ones are absent from the map.
func (c *VMIController) claimsOf(vmi *v1.VirtualMachineInstance) (map[string]*corev1.PersistentVolumeClaim, error) {
	out := map[string]*corev1.PersistentVolumeClaim{}
	for _, name := range claimNames(&vmi.Spec) {
		pvc, err := c.pvcs.PersistentVolumeClaims(vmi.Namespace).Get(name)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out[name] = pvc
	}
	return out, nil
}
