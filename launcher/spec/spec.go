// Package spec translates a VirtualMachineInstance into the launcher's machine description: memory, CPU
// topology and feature policy, firmware identity, kernel boot, disks (in spec order, with their volume
// sources, serials and read-only flags) and network interfaces. It is pure: nothing is read or created here;
// PrepareDisks (disks.go) then turns the disks into block backends.
//
// Everything kvirt cannot honour is an error naming the field and why, never silently dropped. Fields that
// do not change what the guest sees and that kvirt cannot apply (for example autoattachGraphicsDevice) are
// reported as warnings, which the launcher logs and `virt-launcher run` prints.
//
// Decisions not taken from KubeVirt:
//   - With no firmware.uuid (a standalone VMI; VMs get one from the VM controller), the guest's SMBIOS
//     UUID is the VMI's metadata.uid, stable for the VMI's lifetime.
//   - A guest with less memory than kvirt's VMM needs (MinMemoryBytes, 16 MiB) gets that much, with a warning:
//     KubeVirt accepts and runs any memory from 1M (its own tests start guest-less VMs with 1Mi and 4096Ki).
//   - Only the virtio bus exists in kvirt's VMM: sata, scsi and usb disks, and cdroms (sata by default), are
//     refused with a hint to use `disk: {bus: virtio}`.
package spec

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/launcher/network"
	"github.com/kvirt/kvirt/launcher/volumes"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Limits of kvirt's VMM.
const (
	MaxVCPUs        = 64
	MinMemoryBytes  = 16 << 20
	MaxSerialLength = 20 // VIRTIO_BLK_ID_BYTES
)

// Machine is the launcher's description of the guest to run.
type Machine struct {
	Name, Namespace, UID string
	Hostname             string // DHCP host name: spec.hostname, else hostnameOf(the VMI name)

	MemoryBytes uint64
	Sockets     int
	Cores       int
	Threads     int
	// CPUDisable lists CPU features the guest must not see (policy disable or forbid), by their KubeVirt
	// (libvirt) names, e.g. "pcid".
	CPUDisable []string
	HugePages  bool // memory.hugepages: advise transparent huge pages

	FirmwareUUID   string
	FirmwareSerial string
	Kernel         *KernelBoot // nil: boot the OS on the boot disk (launcher/bootdisk)

	// BootDisk indexes Disks: the disk with the lowest bootOrder, else the first (KubeVirt's order).
	BootDisk int
	// BootKernel is the kvirt.io/boot-kernel annotation: "" (automatic), BootImageKernel,
	// BootPlatformKernel or BootBuiltIn.
	BootKernel string

	Disks []Disk
	// SSHKeySecrets are spec.accessCredentials' sshPublicKey Secrets (noCloud propagation): their keys go
	// into the cloudInitNoCloud disk's meta-data.
	SSHKeySecrets []SecretRef
	Interfaces    []Interface
	RNG           bool // devices.rng: a virtio-rng device

	SerialConsole    bool // devices.autoattachSerialConsole (default true)
	StartPaused      bool // startStrategy: Paused
	TerminationGrace time.Duration
}

// BootKernelAnnotation forces the launcher's choice of kernel for a VMI without kernelBoot (tests on either
// kind of host; see docs/boot.md).
const BootKernelAnnotation = "kvirt.io/boot-kernel"

// Values of BootKernelAnnotation.
const (
	BootImageKernel    = "image"    // the OS image's own kernel and initrd
	BootPlatformKernel = "platform" // kvirt's platform kernel with the image's root filesystem
	BootBuiltIn        = "builtin"  // kvirt's built-in guest; the disks are data disks
)

// VCPUs is sockets × cores × threads.
func (m *Machine) VCPUs() int { return m.Sockets * m.Cores * m.Threads }

// KernelBoot is firmware.kernelBoot.
type KernelBoot struct {
	Image      string // kernelBoot.container.image
	KernelPath string // path inside the image
	InitrdPath string
	Cmdline    string // kernelBoot.kernelArgs
	PullSecret string // kernelBoot.container.imagePullSecret
}

// VolumeKind is the source of a disk.
type VolumeKind string

const (
	ContainerDisk    VolumeKind = "containerDisk"
	CloudInitNoCloud VolumeKind = "cloudInitNoCloud"
	EmptyDisk        VolumeKind = "emptyDisk"
	PVC              VolumeKind = "persistentVolumeClaim"
	HostDisk         VolumeKind = "hostDisk"
)

// Disk is one guest disk, in spec.domain.devices.disks order (the guest sees them as vda, vdb, ...).
type Disk struct {
	Name     string // disk and volume name
	Serial   string
	ReadOnly bool
	Kind     VolumeKind
	// VolumeField is the spec path of the volume, e.g. "spec.volumes[1]", for errors.
	VolumeField string

	Image, ImagePath string             // containerDisk
	ImagePullSecret  string             // containerDisk
	NoCloud          *volumes.NoCloud   // cloudInitNoCloud
	Capacity         *resource.Quantity // emptyDisk, hostDisk
	ClaimName        string             // persistentVolumeClaim
	Claim            *volumes.ClaimInfo // persistentVolumeClaim: from status.volumeStatus (nil: unknown)
	HostPath         string             // hostDisk
	HostDiskType     volumes.HostDiskType
	Cache            volumes.Cache // persistentVolumeClaim, hostDisk: the disk's cache mode
}

// SecretRef is a Secret named by the spec, with the field naming it (for errors).
type SecretRef struct {
	Field string
	Name  string
}

// Interface is one guest NIC on the pod network.
type Interface struct {
	Name    string
	Binding network.Binding
	MAC     net.HardwareAddr // nil: the pod interface's MAC
	Ports   []network.Port
}

// Translate checks vmi and returns the machine to run, plus warnings. The error lists every problem found,
// each with its field path.
func Translate(in *v1.VirtualMachineInstance) (*Machine, []string, error) {
	vmi := in.DeepCopy()
	v1.SetDefaults_VirtualMachineInstanceSpec(&vmi.Spec, nil)
	errs := v1.ValidateVirtualMachineInstance(vmi)
	t := &translator{vmi: vmi, root: field.NewPath("spec")}
	m := t.translate()
	errs = append(errs, t.errs...)
	if len(errs) > 0 {
		return nil, t.warnings, errs.ToAggregate()
	}
	return m, t.warnings, nil
}

type translator struct {
	vmi      *v1.VirtualMachineInstance
	root     *field.Path
	errs     field.ErrorList
	warnings []string
}

func (t *translator) fail(p *field.Path, value any, why string) {
	t.errs = append(t.errs, field.Invalid(p, value, why))
}

func (t *translator) unsupported(p *field.Path, why string) {
	t.errs = append(t.errs, &field.Error{Type: field.ErrorTypeForbidden, Field: p.String(), Detail: why})
}

func (t *translator) required(p *field.Path, why string) {
	t.errs = append(t.errs, field.Required(p, why))
}

func (t *translator) warn(p *field.Path, why string) {
	t.warnings = append(t.warnings, p.String()+": "+why)
}

func (t *translator) translate() *Machine {
	spec := &t.vmi.Spec
	d := &spec.Domain
	dp := t.root.Child("domain")
	m := &Machine{
		Name: t.vmi.Name, Namespace: t.vmi.Namespace, UID: string(t.vmi.UID),
		Hostname: hostnameOf(t.vmi.Name), SerialConsole: true, RNG: d.Devices.Rng != nil,
	}
	if spec.Hostname != "" {
		m.Hostname = spec.Hostname
	}
	if spec.TerminationGracePeriodSeconds != nil {
		m.TerminationGrace = time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second
	}
	if spec.StartStrategy != nil {
		switch *spec.StartStrategy {
		case "Paused":
			m.StartPaused = true
		default:
			t.fail(t.root.Child("startStrategy"), *spec.StartStrategy, "only Paused is supported")
		}
	}
	if a := d.Devices.AutoattachSerialConsole; a != nil && !*a {
		m.SerialConsole = false
	}
	if a := d.Devices.AutoattachGraphicsDevice; a != nil && *a {
		t.warn(dp.Child("devices", "autoattachGraphicsDevice"), "kvirt's VMM has no graphics device; use the serial console")
	}
	t.memory(m)
	t.cpu(m)
	t.firmware(m)
	if v, ok := t.vmi.Annotations[BootKernelAnnotation]; ok {
		switch v {
		case BootImageKernel, BootPlatformKernel, BootBuiltIn:
			m.BootKernel = v
		default:
			t.fail(field.NewPath("metadata", "annotations").Key(BootKernelAnnotation), v,
				fmt.Sprintf("want %q, %q or %q", BootImageKernel, BootPlatformKernel, BootBuiltIn))
		}
		if m.Kernel != nil {
			t.warn(field.NewPath("metadata", "annotations").Key(BootKernelAnnotation), "ignored: spec.domain.firmware.kernelBoot gives the kernel")
		}
	}
	if d.Machine != nil && d.Machine.Type != "" && d.Machine.Type != v1.DefaultMachineType {
		t.warn(dp.Child("machine", "type"), fmt.Sprintf("%q is recorded but kvirt has one machine model (virtio-mmio, ACPI)", d.Machine.Type))
	}
	t.disks(m)
	t.interfaces(m)
	t.accessCredentials(m)
	return m
}

// accessCredentials accepts sshPublicKey credentials propagated through NoCloud (KubeVirt puts them in the
// NoCloud meta-data's public-keys); the guest-agent methods and config drives do not exist in kvirt.
func (t *translator) accessCredentials(m *Machine) {
	spec := &t.vmi.Spec
	hasNoCloud := slices.ContainsFunc(m.Disks, func(d Disk) bool { return d.Kind == CloudInitNoCloud })
	for i, ac := range spec.AccessCredentials {
		p := t.root.Child("accessCredentials").Index(i)
		switch {
		case ac.SSHPublicKey != nil && ac.UserPassword != nil:
			t.fail(p, "sshPublicKey, userPassword", "set only one of sshPublicKey and userPassword")
			continue
		case ac.UserPassword != nil:
			t.unsupported(p.Child("userPassword"), "not supported: it is propagated by the QEMU guest agent, which kvirt has not; use sshPublicKey with propagationMethod noCloud, or cloud-init user-data")
			continue
		case ac.SSHPublicKey == nil:
			t.required(p.Child("sshPublicKey"), "the public keys to put into the guest")
			continue
		}
		k := ac.SSHPublicKey
		kp := p.Child("sshPublicKey")
		if k.Source.Secret == nil || k.Source.Secret.SecretName == "" {
			t.required(kp.Child("source", "secret", "secretName"), "the Secret holding the public keys")
			continue
		}
		pm := kp.Child("propagationMethod")
		switch {
		case k.PropagationMethod.QemuGuestAgent != nil:
			t.unsupported(pm.Child("qemuGuestAgent"), "not supported: kvirt has no QEMU guest agent channel; use noCloud: {}")
		case k.PropagationMethod.ConfigDrive != nil:
			t.unsupported(pm.Child("configDrive"), "not supported: kvirt has no cloudInitConfigDrive volumes; use noCloud: {} with a cloudInitNoCloud volume")
		case k.PropagationMethod.NoCloud == nil:
			t.required(pm.Child("noCloud"), "kvirt propagates keys through the NoCloud meta-data only: set noCloud: {}")
		case !hasNoCloud:
			t.required(t.root.Child("volumes"), "a cloudInitNoCloud volume: its meta-data carries the keys of "+pm.Child("noCloud").String())
		default:
			m.SSHKeySecrets = append(m.SSHKeySecrets, SecretRef{Field: kp.Child("source", "secret", "secretName").String(), Name: k.Source.Secret.SecretName})
		}
	}
}

func (t *translator) memory(m *Machine) {
	d := &t.vmi.Spec.Domain
	var q *resource.Quantity
	var p *field.Path
	switch {
	case d.Memory != nil && d.Memory.Guest != nil:
		q, p = d.Memory.Guest, t.root.Child("domain", "memory", "guest")
	default:
		if r, ok := d.Resources.Requests["memory"]; ok {
			q, p = &r, t.root.Child("domain", "resources", "requests", "memory")
		} else if l, ok := d.Resources.Limits["memory"]; ok {
			q, p = &l, t.root.Child("domain", "resources", "limits", "memory")
		}
	}
	if q == nil {
		// api validation reports KubeVirt's "no memory requested" message.
		return
	}
	n := q.Value()
	if n < MinMemoryBytes {
		// KubeVirt runs any memory of at least 1M (api validation refuses less); kvirt's VMM needs 16 MiB,
		// and the controller sized the pod for that (controller.MinGuestMemory).
		t.warn(p, fmt.Sprintf("%s is below the %d MiB kvirt's VMM needs: the guest gets %d MiB", q.String(), MinMemoryBytes>>20, MinMemoryBytes>>20))
		n = MinMemoryBytes
	}
	m.MemoryBytes = uint64(n+(1<<20)-1) &^ ((1 << 20) - 1) // whole MiB
	if d.Memory != nil && d.Memory.Hugepages != nil {
		m.HugePages = true
		t.warn(t.root.Child("domain", "memory", "hugepages"), "approximated with transparent huge pages (no hugetlbfs reservation)")
	}
}

func (t *translator) firmware(m *Machine) {
	f := t.vmi.Spec.Domain.Firmware
	fp := t.root.Child("domain", "firmware")
	m.FirmwareUUID = string(t.vmi.UID)
	if f == nil {
		return
	}
	if f.UUID != "" {
		m.FirmwareUUID = string(f.UUID)
	}
	m.FirmwareSerial = f.Serial
	if kb := f.KernelBoot; kb != nil {
		kp := fp.Child("kernelBoot")
		m.Kernel = &KernelBoot{Cmdline: kb.KernelArgs}
		if kb.Container == nil {
			t.fail(kp.Child("container"), nil, "required: the image holding the kernel (and initrd)")
			return
		}
		c := kb.Container
		m.Kernel.Image, m.Kernel.KernelPath, m.Kernel.InitrdPath = c.Image, c.KernelPath, c.InitrdPath
		if c.Image == "" {
			t.fail(kp.Child("container", "image"), c.Image, "required")
		}
		if c.KernelPath == "" {
			t.fail(kp.Child("container", "kernelPath"), c.KernelPath, "required: the kernel's path inside the image")
		}
		// imagePullSecret: the kubelet pulls the image with it in a cluster (the kernel-boot init container,
		// launcher/containerdisk); a launcher that must pull the image itself refuses it.
		m.Kernel.PullSecret = c.ImagePullSecret
	}
	if m.FirmwareUUID != "" && !uuidLike(m.FirmwareUUID) {
		t.fail(fp.Child("uuid"), m.FirmwareUUID, "not a UUID (8-4-4-4-12 hexadecimal)")
	}
}

// hostnameOf is the guest's host name for a VMI without spec.hostname, as KubeVirt's SanitizeHostname
// makes it: the name up to its first dot, cut to the 63 characters of a DNS label (and, beyond KubeVirt,
// without the dash such a cut can leave at the end, which no resolver accepts).
func hostnameOf(vmiName string) string {
	h, _, _ := strings.Cut(vmiName, ".")
	if len(h) > 63 {
		h = strings.TrimRight(h[:63], "-")
	}
	return h
}

func uuidLike(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, r := range s {
		switch i {
		case 8, 13, 18, 23:
			if r != '-' {
				return false
			}
		default:
			if !strings.ContainsRune("0123456789abcdefABCDEF", r) {
				return false
			}
		}
	}
	return true
}
