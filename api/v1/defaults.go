package v1

import (
	"github.com/google/uuid"
	k8sv1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
)

// Defaults kvirt applies where KubeVirt's mutating webhook or controllers do.
const (
	// DefaultGracePeriodSeconds is the VMI terminationGracePeriodSeconds default.
	DefaultGracePeriodSeconds int64 = 30
	// DefaultMachineType is persisted into VMs and VMIs without one (the CRDs' default for
	// domain.machine; SetDefaults_VirtualMachineInstanceSpec for specs decoded elsewhere).
	DefaultMachineType = "q35"
	// DefaultNetworkName is the name of the auto-attached pod network and interface.
	DefaultNetworkName = "default"
)

// SetDefaults_VirtualMachineInstance applies KubeVirt's VMI defaults:
//   - terminationGracePeriodSeconds 30, machine type q35;
//   - a firmware UUID from newUUID when none is set (a VMI created by a VM
//     inherits the one the VM controller wrote into the template; the launcher
//     passes no newUUID and uses the VMI's UID, see launcher/spec);
//   - a volume without a disk gets one (KubeVirt's SetDefaultVolumeDisk);
//   - a disk with neither disk nor cdrom becomes a disk; buses default to
//     virtio (disk) and sata (cdrom); cdroms are read-only;
//   - memory.guest defaults to the memory request (or limit), and the request
//     to the limit or guest memory, as KubeVirt's mutator does;
//   - with no interfaces, no networks and autoattachPodInterface not false,
//     a "default" interface with bridge binding (KubeVirt's default binding)
//     on the pod network is added.
func SetDefaults_VirtualMachineInstance(vmi *VirtualMachineInstance) {
	SetDefaults_VirtualMachineInstanceSpec(&vmi.Spec, func() types.UID { return types.UID(uuid.NewString()) })
}

// SetDefaults_VirtualMachineInstanceSpec is SetDefaults_VirtualMachineInstance
// with the UUID source injectable (for tests).
func SetDefaults_VirtualMachineInstanceSpec(spec *VirtualMachineInstanceSpec, newUUID func() types.UID) {
	if spec.TerminationGracePeriodSeconds == nil {
		g := DefaultGracePeriodSeconds
		spec.TerminationGracePeriodSeconds = &g
	}
	d := &spec.Domain
	if d.Machine == nil || d.Machine.Type == "" {
		d.Machine = &Machine{Type: DefaultMachineType}
	}
	if d.Firmware == nil {
		d.Firmware = &Firmware{}
	}
	if d.Firmware.UUID == "" && newUUID != nil {
		d.Firmware.UUID = newUUID()
	}
	hasDisk := map[string]bool{}
	for _, disk := range d.Devices.Disks {
		hasDisk[disk.Name] = true
	}
	for _, v := range spec.Volumes {
		if !hasDisk[v.Name] {
			d.Devices.Disks = append(d.Devices.Disks, Disk{Name: v.Name})
			hasDisk[v.Name] = true
		}
	}
	for i := range d.Devices.Disks {
		disk := &d.Devices.Disks[i]
		if disk.Disk == nil && disk.CDRom == nil {
			disk.Disk = &DiskTarget{}
		}
		if disk.Disk != nil && disk.Disk.Bus == "" {
			disk.Disk.Bus = DiskBusVirtio
		}
		if disk.CDRom != nil {
			if disk.CDRom.Bus == "" {
				disk.CDRom.Bus = DiskBusSATA
			}
			if disk.CDRom.ReadOnly == nil {
				t := true
				disk.CDRom.ReadOnly = &t
			}
		}
	}
	setDefaultMemory(d)
	if len(d.Devices.Interfaces) == 0 && len(spec.Networks) == 0 &&
		(d.Devices.AutoattachPodInterface == nil || *d.Devices.AutoattachPodInterface) {
		d.Devices.Interfaces = []Interface{{Name: DefaultNetworkName, Bridge: &InterfaceBridge{}}}
		spec.Networks = []Network{{Name: DefaultNetworkName, Pod: &PodNetwork{}}}
	}
}

func setDefaultMemory(d *DomainSpec) {
	req, hasReq := d.Resources.Requests["memory"]
	lim, hasLim := d.Resources.Limits["memory"]
	var guest *resource.Quantity
	if d.Memory != nil {
		guest = d.Memory.Guest
	}
	if !hasReq {
		switch {
		case hasLim:
			req, hasReq = lim.DeepCopy(), true
		case guest != nil:
			req, hasReq = guest.DeepCopy(), true
		}
		if hasReq {
			if d.Resources.Requests == nil {
				d.Resources.Requests = k8sv1.ResourceList{}
			}
			d.Resources.Requests["memory"] = req
		}
	}
	if guest == nil && hasReq {
		if d.Memory == nil {
			d.Memory = &Memory{}
		}
		g := req.DeepCopy()
		d.Memory.Guest = &g
	}
}

// VCPUs is the number of vCPUs, as KubeVirt's GetCPUTopology counts them: cores × sockets × threads, each
// defaulting to 1; with none of the three set, resources.limits.cpu (else requests.cpu) rounded up to whole
// CPUs (they are sockets then), else 1. Counts above 1024 are capped there (the launcher refuses them with
// a field error; the cap only keeps arithmetic on the count safe).
func (s *VirtualMachineInstanceSpec) VCPUs() uint32 {
	const maxCount = 1024
	c := s.Domain.CPU
	if c == nil || (c.Cores == 0 && c.Sockets == 0 && c.Threads == 0) {
		r := s.Domain.Resources
		for _, q := range []resource.Quantity{r.Limits["cpu"], r.Requests["cpu"]} {
			if q.IsZero() || q.Sign() < 0 {
				continue
			}
			if q.CmpInt64(maxCount) > 0 {
				return maxCount
			}
			return uint32(q.Value()) // Value rounds up
		}
		return 1
	}
	n := uint64(1)
	for _, v := range []uint32{c.Cores, c.Sockets, c.Threads} {
		if v > 0 {
			n = min(n*uint64(v), maxCount)
		}
	}
	return uint32(n)
}

// GuestMemory is the memory the guest sees: memory.guest, else the memory
// request, else the memory limit. ok is false when none is set.
func (s *VirtualMachineInstanceSpec) GuestMemory() (q resource.Quantity, ok bool) {
	d := &s.Domain
	if d.Memory != nil && d.Memory.Guest != nil {
		return d.Memory.Guest.DeepCopy(), true
	}
	if r, ok := d.Resources.Requests["memory"]; ok {
		return r.DeepCopy(), true
	}
	if l, ok := d.Resources.Limits["memory"]; ok {
		return l.DeepCopy(), true
	}
	return resource.Quantity{}, false
}

// GracePeriodSeconds is terminationGracePeriodSeconds with KubeVirt's default of 30.
func (s *VirtualMachineInstanceSpec) GracePeriodSeconds() int64 {
	if s.TerminationGracePeriodSeconds == nil {
		return DefaultGracePeriodSeconds
	}
	return *s.TerminationGracePeriodSeconds
}
