package v1

import (
	"testing"

	k8sv1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
)

func TestSetDefaultsVMI(t *testing.T) {
	spec := &VirtualMachineInstanceSpec{}
	spec.Domain.Resources.Requests = k8sv1.ResourceList{"memory": resource.MustParse("128Mi")}
	spec.Domain.Devices.Disks = []Disk{{Name: "a"}, {Name: "b", CDRom: &CDRomTarget{}}, {Name: "c", Disk: &DiskTarget{Bus: DiskBusSATA}}}
	SetDefaults_VirtualMachineInstanceSpec(spec, func() types.UID { return "rand" })
	if *spec.TerminationGracePeriodSeconds != 30 || spec.Domain.Machine.Type != "q35" || spec.Domain.Firmware.UUID != "rand" {
		t.Errorf("grace/machine/uuid: %v %+v %q", *spec.TerminationGracePeriodSeconds, spec.Domain.Machine, spec.Domain.Firmware.UUID)
	}
	disks := spec.Domain.Devices.Disks
	if disks[0].Disk == nil || disks[0].Disk.Bus != DiskBusVirtio {
		t.Errorf("disk a: %+v", disks[0])
	}
	if disks[1].CDRom.Bus != DiskBusSATA || !*disks[1].CDRom.ReadOnly || disks[1].Disk != nil {
		t.Errorf("cdrom b: %+v", disks[1])
	}
	if disks[2].Disk.Bus != DiskBusSATA {
		t.Errorf("disk c bus changed: %+v", disks[2])
	}
	if g := spec.Domain.Memory.Guest; g == nil || g.Cmp(resource.MustParse("128Mi")) != 0 {
		t.Errorf("guest memory %v", g)
	}
	if len(spec.Domain.Devices.Interfaces) != 1 || spec.Domain.Devices.Interfaces[0].Bridge == nil ||
		len(spec.Networks) != 1 || spec.Networks[0].Pod == nil || spec.Networks[0].Name != "default" {
		t.Errorf("default interface: %+v %+v", spec.Domain.Devices.Interfaces, spec.Networks)
	}
	if errs := ValidateVMISpec(nil, spec); len(errs) != 0 {
		// Volumes are missing for the disks; only those errors are expected.
		for _, e := range errs {
			if e.Field != "domain.devices.disks[0].name" && e.Field != "domain.devices.disks[1].name" && e.Field != "domain.devices.disks[2].name" {
				t.Errorf("unexpected error after defaulting: %v", e)
			}
		}
	}

	// Limit only: request and guest follow the limit. Guest only: request follows guest.
	spec = &VirtualMachineInstanceSpec{}
	spec.Domain.Resources.Limits = k8sv1.ResourceList{"memory": resource.MustParse("1Gi")}
	SetDefaults_VirtualMachineInstanceSpec(spec, nil)
	if r := spec.Domain.Resources.Requests["memory"]; r.Cmp(resource.MustParse("1Gi")) != 0 || spec.Domain.Memory.Guest.Cmp(resource.MustParse("1Gi")) != 0 {
		t.Errorf("limit-only defaults: %v %v", r.String(), spec.Domain.Memory.Guest)
	}
	if spec.Domain.Firmware.UUID != "" {
		t.Error("nil UUID source still set a UUID")
	}
	spec = &VirtualMachineInstanceSpec{}
	g := resource.MustParse("256Mi")
	spec.Domain.Memory = &Memory{Guest: &g}
	spec.Domain.Devices.AutoattachPodInterface = ptr(false)
	SetDefaults_VirtualMachineInstanceSpec(spec, nil)
	if r := spec.Domain.Resources.Requests["memory"]; r.Cmp(g) != 0 {
		t.Errorf("guest-only request: %v", r.String())
	}
	if len(spec.Domain.Devices.Interfaces) != 0 {
		t.Error("autoattachPodInterface=false still attached an interface")
	}
}

func TestVCPUsAndGrace(t *testing.T) {
	s := &VirtualMachineInstanceSpec{}
	if s.VCPUs() != 1 || s.GracePeriodSeconds() != 30 {
		t.Errorf("empty: %d %d", s.VCPUs(), s.GracePeriodSeconds())
	}
	s.Domain.CPU = &CPU{Cores: 2, Sockets: 2, Threads: 0}
	if s.VCPUs() != 4 {
		t.Errorf("2x2x(0→1) = %d", s.VCPUs())
	}
	// Without a topology the CPU limit, else the request, rounded up, is the count (KubeVirt's sockets).
	s.Domain.CPU = &CPU{}
	s.Domain.Resources.Limits = k8sv1.ResourceList{"cpu": resource.MustParse("1500m")}
	s.Domain.Resources.Requests = k8sv1.ResourceList{"cpu": resource.MustParse("4")}
	if s.VCPUs() != 2 {
		t.Errorf("limits.cpu 1500m = %d vCPUs, want 2", s.VCPUs())
	}
	delete(s.Domain.Resources.Limits, "cpu")
	if s.VCPUs() != 4 {
		t.Errorf("requests.cpu 4 = %d vCPUs, want 4", s.VCPUs())
	}
	s.Domain.Resources.Requests["cpu"] = resource.MustParse("1e20")
	if s.VCPUs() != 1024 {
		t.Errorf("requests.cpu 1e20 = %d vCPUs, want the 1024 cap", s.VCPUs())
	}
	s.Domain.Resources = ResourceRequirements{}
	s.Domain.CPU = &CPU{Sockets: 1 << 20, Cores: 1 << 20}
	if s.VCPUs() != 1024 {
		t.Errorf("huge topology = %d vCPUs, want the 1024 cap", s.VCPUs())
	}
	s.Domain.CPU = nil
	if _, ok := s.GuestMemory(); ok {
		t.Error("GuestMemory without memory reported ok")
	}
}
