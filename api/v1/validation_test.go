package v1

import (
	"strings"
	"testing"

	k8sv1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// validVMI returns a minimal valid VMI spec: memory, one containerDisk, the pod network.
func validVMI() *VirtualMachineInstance {
	vmi := &VirtualMachineInstance{}
	vmi.Name = "v"
	s := &vmi.Spec
	s.Domain.Resources.Requests = k8sv1.ResourceList{"memory": resource.MustParse("64Mi")}
	s.Domain.Devices.Disks = []Disk{{Name: "root", Disk: &DiskTarget{Bus: DiskBusVirtio}}}
	s.Domain.Devices.Interfaces = []Interface{{Name: "default", Masquerade: &InterfaceMasquerade{}}}
	s.Networks = []Network{{Name: "default", Pod: &PodNetwork{}}}
	s.Volumes = []Volume{{Name: "root", ContainerDisk: &ContainerDiskSource{Image: "img"}}}
	return vmi
}

// expectOne asserts that errs holds exactly one error with the given field and detail.
func expectOne(t *testing.T, name string, errs field.ErrorList, wantField, wantDetail string) {
	t.Helper()
	if len(errs) != 1 {
		t.Errorf("%s: got %d errors, want 1: %v", name, len(errs), errs)
		return
	}
	if errs[0].Field != wantField || errs[0].Detail != wantDetail {
		t.Errorf("%s:\n got  %s: %s\n want %s: %s", name, errs[0].Field, errs[0].Detail, wantField, wantDetail)
	}
}

func TestValidateRunStrategy(t *testing.T) {
	tmpl := &VirtualMachineInstanceTemplateSpec{Spec: validVMI().Spec}
	for _, tc := range []struct {
		name          string
		running       *bool
		rs            *VirtualMachineRunStrategy
		field, detail string
	}{
		{"both", ptr(true), ptr(RunStrategyAlways), "spec.running", "Running and RunStrategy are mutually exclusive. Note that Running is deprecated, please use RunStrategy instead"},
		{"neither", nil, nil, "spec.running", "RunStrategy must be specified"},
		{"invalid", nil, ptr(VirtualMachineRunStrategy("Sometimes")), "spec.runStrategy", "Invalid RunStrategy (Sometimes)"},
		{"receiver", nil, ptr(RunStrategyWaitAsReceiver), "spec.runStrategy", "Invalid RunStrategy (WaitAsReceiver), DecentralizedLiveMigration feature gate is not enabled in kubevirt resource"},
	} {
		vm := &VirtualMachine{Spec: VirtualMachineSpec{Running: tc.running, RunStrategy: tc.rs, Template: tmpl}}
		expectOne(t, tc.name, ValidateVirtualMachine(vm), tc.field, tc.detail)
	}
	for _, rs := range ValidRunStrategies {
		vm := &VirtualMachine{Spec: VirtualMachineSpec{RunStrategy: ptr(rs), Template: tmpl}}
		if errs := ValidateVirtualMachine(vm); len(errs) != 0 {
			t.Errorf("%s rejected: %v", rs, errs)
		}
	}
	vm := &VirtualMachine{Spec: VirtualMachineSpec{Running: ptr(false)}}
	expectOne(t, "no template", ValidateVirtualMachine(vm), "spec.template", "missing virtual machine template.")
}

func TestValidateVMI(t *testing.T) {
	if errs := ValidateVirtualMachineInstance(validVMI()); len(errs) != 0 {
		t.Fatalf("valid VMI rejected: %v", errs)
	}
	for _, tc := range []struct {
		name          string
		mutate        func(s *VirtualMachineInstanceSpec)
		field, detail string
	}{
		{"no memory", func(s *VirtualMachineInstanceSpec) { s.Domain.Resources.Requests = nil },
			"spec", "no memory requested, at least one of 'spec.domain.memory.guest', 'spec.domain.memory.hugepages.pageSize' or 'spec.domain.resources.requests.memory' must be set"},
		{"tiny memory", func(s *VirtualMachineInstanceSpec) { s.Domain.Resources.Requests["memory"] = resource.MustParse("1k") },
			"spec.domain.resources.requests.memory", "spec.domain.resources.requests.memory '1k': must be greater than or equal to 1M."},
		{"request above limit", func(s *VirtualMachineInstanceSpec) {
			s.Domain.Resources.Limits = k8sv1.ResourceList{"memory": resource.MustParse("32Mi")}
			g := resource.MustParse("16Mi")
			s.Domain.Memory = &Memory{Guest: &g}
		}, "spec.domain.resources.requests.memory", "spec.domain.resources.requests.memory '64Mi' is greater than spec.domain.resources.limits.memory '32Mi'"},
		{"guest above limit", func(s *VirtualMachineInstanceSpec) {
			s.Domain.Resources.Requests = nil
			s.Domain.Resources.Limits = k8sv1.ResourceList{"memory": resource.MustParse("32Mi")}
			g := resource.MustParse("64Mi")
			s.Domain.Memory = &Memory{Guest: &g}
		}, "spec.domain.memory.guest", "spec.domain.memory.guest '64Mi' must be equal to or less than the memory limit spec.domain.resources.limits.memory '32Mi'"},
		{"start strategy", func(s *VirtualMachineInstanceSpec) { s.StartStrategy = ptr(StartStrategy("Later")) },
			"spec.startStrategy", "spec.startStrategy is set with an unrecognized option: Later"},
		{"negative grace", func(s *VirtualMachineInstanceSpec) { s.TerminationGracePeriodSeconds = ptr(int64(-1)) },
			"spec.terminationGracePeriodSeconds", "spec.terminationGracePeriodSeconds '-1': must be greater than or equal to 0."},
		{"hostname", func(s *VirtualMachineInstanceSpec) { s.Hostname = "Not_A_Label" },
			"spec.hostname", "spec.hostname does not conform to the kubernetes DNS_LABEL rules : a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"},
		{"machine", func(s *VirtualMachineInstanceSpec) { s.Domain.Machine = &Machine{Type: "pc-i440fx"} },
			"spec.domain.machine.type", "spec.domain.machine.type is not supported: pc-i440fx (allowed values: [q35*])"},
		{"cpu feature", func(s *VirtualMachineInstanceSpec) {
			s.Domain.CPU = &CPU{Features: []CPUFeature{{Name: "vmx", Policy: "maybe"}}}
		},
			"spec.domain.cpu.features[0].policy", "CPU feature vmx uses policy maybe that is not supported."},
		{"disk without volume", func(s *VirtualMachineInstanceSpec) {
			s.Domain.Devices.Disks = append(s.Domain.Devices.Disks, Disk{Name: "other"})
		},
			"spec.domain.devices.disks[1].name", "spec.domain.devices.disks[1].Name 'other' not found."},
		{"duplicate disk", func(s *VirtualMachineInstanceSpec) {
			s.Domain.Devices.Disks = append(s.Domain.Devices.Disks, s.Domain.Devices.Disks[0])
		},
			"spec.domain.devices.disks[1].name", "spec.domain.devices.disks[1] and spec.domain.devices.disks[0] must not have the same Name."},
		{"two targets", func(s *VirtualMachineInstanceSpec) { s.Domain.Devices.Disks[0].CDRom = &CDRomTarget{} },
			"spec.domain.devices.disks[0]", "spec.domain.devices.disks[0] can only have a single target type defined"},
		{"boot order 0", func(s *VirtualMachineInstanceSpec) { s.Domain.Devices.Disks[0].BootOrder = ptr(uint(0)) },
			"spec.domain.devices.disks[0].bootOrder", "spec.domain.devices.disks[0] must have a boot order > 0, if supplied"},
		{"boot order clash", func(s *VirtualMachineInstanceSpec) {
			s.Domain.Devices.Disks[0].BootOrder = ptr(uint(1))
			s.Domain.Devices.Interfaces[0].BootOrder = ptr(uint(1))
		}, "spec.domain.devices.interfaces[0].bootOrder", "Boot order for spec.domain.devices.interfaces[0].bootOrder already set for a different device."},
		{"bus", func(s *VirtualMachineInstanceSpec) { s.Domain.Devices.Disks[0].Disk.Bus = "floppy" },
			"spec.domain.devices.disks[0].disk.bus", "spec.domain.devices.disks[0] is set with an unrecognized bus floppy, must be one of: [virtio scsi sata usb]"},
		{"ide", func(s *VirtualMachineInstanceSpec) { s.Domain.Devices.Disks[0].Disk.Bus = "ide" },
			"spec.domain.devices.disks[0].disk.bus", "IDE bus is not supported"},
		{"virtio cdrom", func(s *VirtualMachineInstanceSpec) {
			s.Domain.Devices.Disks[0].Disk = nil
			s.Domain.Devices.Disks[0].CDRom = &CDRomTarget{Bus: DiskBusVirtio}
		}, "spec.domain.devices.disks[0].cdrom.bus", "Bus type virtio is invalid for CD-ROM device"},
		{"sata readonly", func(s *VirtualMachineInstanceSpec) {
			s.Domain.Devices.Disks[0].Disk = &DiskTarget{Bus: DiskBusSATA, ReadOnly: true}
		},
			"spec.domain.devices.disks[0].disk.bus", "sata hard-disks do not support read-only."},
		{"cache mode", func(s *VirtualMachineInstanceSpec) { s.Domain.Devices.Disks[0].Cache = "unsafe" },
			"spec.domain.devices.disks[0].cache", "spec.domain.devices.disks[0].cache has invalid value unsafe"},
		{"io mode", func(s *VirtualMachineInstanceSpec) { s.Domain.Devices.Disks[0].IO = "io_uring" },
			"spec.domain.devices.disks[0].io", "Disk IO mode for spec is not supported. Supported modes are: native, threads."},
		{"serial chars", func(s *VirtualMachineInstanceSpec) { s.Domain.Devices.Disks[0].Serial = "a b" },
			"spec.domain.devices.disks[0].serial", "spec.domain.devices.disks[0] must be made up of the following characters [A-Za-z0-9_.+-], if specified"},
		{"serial length", func(s *VirtualMachineInstanceSpec) { s.Domain.Devices.Disks[0].Serial = strings.Repeat("a", 257) },
			"spec.domain.devices.disks[0].serial", "spec.domain.devices.disks[0] must be less than or equal to 256 in length, if specified"},
		{"two sources", func(s *VirtualMachineInstanceSpec) {
			s.Volumes[0].EmptyDisk = &EmptyDiskSource{Capacity: resource.MustParse("1Gi")}
		},
			"spec.volumes[0]", "spec.volumes[0] must have exactly one source type set"},
		{"no source", func(s *VirtualMachineInstanceSpec) { s.Volumes[0].ContainerDisk = nil },
			"spec.volumes[0]", "spec.volumes[0] must have exactly one source type set"},
		{"containerDisk image", func(s *VirtualMachineInstanceSpec) { s.Volumes[0].ContainerDisk.Image = "" },
			"spec.volumes[0].containerDisk.image", "spec.volumes[0].containerDisk.image is a required field"},
		{"pvc claim", func(s *VirtualMachineInstanceSpec) {
			s.Volumes[0] = Volume{Name: "root", PersistentVolumeClaim: &PersistentVolumeClaimVolumeSource{}}
		}, "spec.volumes[0].persistentVolumeClaim.claimName", "spec.volumes[0].persistentVolumeClaim.claimName is a required field"},
		{"empty disk size", func(s *VirtualMachineInstanceSpec) {
			s.Volumes[0] = Volume{Name: "root", EmptyDisk: &EmptyDiskSource{}}
		},
			"spec.volumes[0].emptyDisk.capacity", "spec.volumes[0].emptyDisk.capacity must be greater than 0"},
		{"hostDisk path", func(s *VirtualMachineInstanceSpec) {
			s.Volumes[0] = Volume{Name: "root", HostDisk: &HostDisk{Type: HostDiskExists}}
		},
			"spec.volumes[0].hostDisk.path", "spec.volumes[0].hostDisk.path is required for hostDisk volume"},
		{"hostDisk type", func(s *VirtualMachineInstanceSpec) {
			s.Volumes[0] = Volume{Name: "root", HostDisk: &HostDisk{Path: "/x", Type: "File"}}
		},
			"spec.volumes[0].hostDisk.type", "spec.volumes[0].hostDisk.type has invalid value 'File', allowed are 'Disk' or 'DiskOrCreate'"},
		{"hostDisk capacity", func(s *VirtualMachineInstanceSpec) {
			s.Volumes[0] = Volume{Name: "root", HostDisk: &HostDisk{Path: "/x", Type: HostDiskExists, Capacity: resource.MustParse("1Gi")}}
		}, "spec.volumes[0].hostDisk.capacity", "spec.volumes[0].hostDisk.capacity is allowed to pass only with spec.volumes[0].hostDisk.type equal to 'DiskOrCreate'"},
		{"cloud-init two sources", func(s *VirtualMachineInstanceSpec) {
			s.Volumes[0] = Volume{Name: "root", CloudInitNoCloud: &CloudInitNoCloudSource{UserData: "a", UserDataBase64: "YQ=="}}
		}, "spec.volumes[0].cloudInitNoCloud", "spec.volumes[0].cloudInitNoCloud must have only one userdatasource set."},
		{"cloud-init too big", func(s *VirtualMachineInstanceSpec) {
			s.Volumes[0] = Volume{Name: "root", CloudInitNoCloud: &CloudInitNoCloudSource{UserData: strings.Repeat("x", 2049)}}
		}, "spec.volumes[0].cloudInitNoCloud", "spec.volumes[0].cloudInitNoCloud userdata exceeds 2048 byte limit. Should use UserDataSecretRef for larger data."},
		{"cloud-init bad base64", func(s *VirtualMachineInstanceSpec) {
			s.Volumes[0] = Volume{Name: "root", CloudInitNoCloud: &CloudInitNoCloudSource{UserDataBase64: "!!"}}
		}, "spec.volumes[0].cloudInitNoCloud.userDataBase64", "spec.volumes[0].cloudInitNoCloud.userDataBase64.cloudInitNoCloud.userDataBase64 is not a valid base64 value."},
		{"interface without network", func(s *VirtualMachineInstanceSpec) {
			s.Domain.Devices.Interfaces = append(s.Domain.Devices.Interfaces, Interface{Name: "second", Bridge: &InterfaceBridge{}})
		}, "spec.domain.devices.interfaces[1].name", "spec.domain.devices.interfaces[1].name 'second' not found."},
		{"network without interface", func(s *VirtualMachineInstanceSpec) { s.Domain.Devices.Interfaces = nil },
			"spec.networks[0].name", "spec.networks[0].name 'default' not found."},
		{"no binding", func(s *VirtualMachineInstanceSpec) { s.Domain.Devices.Interfaces[0].Masquerade = nil },
			"spec.domain.devices.interfaces[0]", "logical default interface must have exactly one binding method or binding plugin"},
		{"two bindings", func(s *VirtualMachineInstanceSpec) { s.Domain.Devices.Interfaces[0].Bridge = &InterfaceBridge{} },
			"spec.domain.devices.interfaces[0]", "logical default interface must have exactly one binding method or binding plugin"},
		{"bad MAC", func(s *VirtualMachineInstanceSpec) { s.Domain.Devices.Interfaces[0].MacAddress = "zz" },
			"spec.domain.devices.interfaces[0].macAddress", "interface spec.domain.devices.interfaces[0].name has malformed MAC address (zz)."},
		{"reserved MAC", func(s *VirtualMachineInstanceSpec) { s.Domain.Devices.Interfaces[0].MacAddress = "02:00:00:00:00:00" },
			"spec.domain.devices.interfaces[0].macAddress", "The requested MAC address is reserved for the in-pod bridge. Please choose another one."},
		{"model", func(s *VirtualMachineInstanceSpec) { s.Domain.Devices.Interfaces[0].Model = "e1000" },
			"spec.domain.devices.interfaces[0].model", "interface spec.domain.devices.interfaces[0].name uses model e1000 that is not supported."},
		{"network type", func(s *VirtualMachineInstanceSpec) {
			s.Networks[0].Pod = nil
			s.Domain.Devices.Interfaces[0] = Interface{Name: "default", Bridge: &InterfaceBridge{}}
		},
			"spec.networks[0]", "should have a network type"},
		{"port zero", func(s *VirtualMachineInstanceSpec) { s.Domain.Devices.Interfaces[0].Ports = []Port{{Name: "http"}} },
			"spec.domain.devices.interfaces[0].ports[0].port", "Port field is mandatory."},
		{"port range", func(s *VirtualMachineInstanceSpec) { s.Domain.Devices.Interfaces[0].Ports = []Port{{Port: 70000}} },
			"spec.domain.devices.interfaces[0].ports[0].port", "Port field must be in range 0 < x < 65536."},
		{"port protocol", func(s *VirtualMachineInstanceSpec) {
			s.Domain.Devices.Interfaces[0].Ports = []Port{{Port: 80, Protocol: "SCTP"}}
		},
			"spec.domain.devices.interfaces[0].ports[0].protocol", "Unknown protocol, only TCP or UDP allowed"},
		{"port name dup", func(s *VirtualMachineInstanceSpec) {
			s.Domain.Devices.Interfaces[0].Ports = []Port{{Name: "http", Port: 80}, {Name: "http", Port: 81}}
		}, "spec.domain.devices.interfaces[0].ports[1].name", "Duplicate name of the port: http"},
		{"interface name", func(s *VirtualMachineInstanceSpec) {
			s.Domain.Devices.Interfaces[0].Name = "a b"
			s.Networks[0].Name = "a b"
		}, "spec.domain.devices.interfaces[0].name", "Network interface name can only contain alphabetical characters, numbers, dashes (-) or underscores (_)"},
	} {
		vmi := validVMI()
		tc.mutate(&vmi.Spec)
		expectOne(t, tc.name, ValidateVirtualMachineInstance(vmi), tc.field, tc.detail)
	}
}

func TestVolumeWithoutDisk(t *testing.T) {
	vmi := validVMI()
	vmi.Spec.Volumes = append(vmi.Spec.Volumes, Volume{Name: "extra", EmptyDisk: &EmptyDiskSource{Capacity: resource.MustParse("1Gi")}})
	// Raw spec: KubeVirt's message. After defaulting (what the Validate* functions judge): a disk is added.
	expectOne(t, "raw", ValidateVMISpec(field.NewPath("spec"), &vmi.Spec), "spec.domain.volumes[1].name", "spec.domain.volumes[1].name 'extra' not found.")
	if errs := ValidateVirtualMachineInstance(vmi); len(errs) != 0 {
		t.Errorf("defaulted VMI rejected: %v", errs)
	}
	if len(vmi.Spec.Domain.Devices.Disks) != 1 {
		t.Error("ValidateVirtualMachineInstance modified its argument")
	}
}

func TestValidateVMTemplateSkipsMemory(t *testing.T) {
	s := validVMI().Spec
	s.Domain.Resources.Requests = nil
	vm := &VirtualMachine{Spec: VirtualMachineSpec{RunStrategy: ptr(RunStrategyHalted), Template: &VirtualMachineInstanceTemplateSpec{Spec: s}}}
	if errs := ValidateVirtualMachine(vm); len(errs) != 0 {
		t.Errorf("template without memory rejected (KubeVirt checks memory only on VMIs): %v", errs)
	}
	vm.Spec.Template.Spec.Domain.Devices.Disks = append(vm.Spec.Template.Spec.Domain.Devices.Disks, Disk{Name: "x"})
	expectOne(t, "template path", ValidateVirtualMachine(vm), "spec.template.spec.domain.devices.disks[1].name", "spec.template.spec.domain.devices.disks[1].Name 'x' not found.")
}
