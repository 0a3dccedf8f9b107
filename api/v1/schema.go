package v1

import (
	k8sv1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
)

// The spec types below carry +kubebuilder:pruning:PreserveUnknownFields: the
// CRD validates the fields kvirt models and keeps the ones it does not (see the
// package doc and UnknownFields).

// VirtualMachineInstanceSpec is the desired guest.
//
// +kubebuilder:pruning:PreserveUnknownFields
type VirtualMachineInstanceSpec struct {
	// PriorityClassName of the launcher pod.
	PriorityClassName string `json:"priorityClassName,omitempty"`
	// Domain is the virtual hardware.
	Domain DomainSpec `json:"domain"`
	// NodeSelector for the launcher pod.
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`
	// Affinity for the launcher pod.
	Affinity *k8sv1.Affinity `json:"affinity,omitempty"`
	// SchedulerName of the launcher pod.
	SchedulerName string `json:"schedulerName,omitempty"`
	// Tolerations of the launcher pod.
	// +listType=atomic
	Tolerations []k8sv1.Toleration `json:"tolerations,omitempty"`
	// StartStrategy Paused starts the guest paused.
	StartStrategy *StartStrategy `json:"startStrategy,omitempty"`
	// TerminationGracePeriodSeconds is how long an ACPI shutdown may take before
	// the guest is stopped hard. Defaults to 30; 0 stops immediately.
	TerminationGracePeriodSeconds *int64 `json:"terminationGracePeriodSeconds,omitempty"`
	// Volumes the disks refer to.
	// +listType=atomic
	Volumes []Volume `json:"volumes,omitempty"`
	// Hostname of the guest (defaults to the VMI name).
	Hostname string `json:"hostname,omitempty"`
	// Subdomain of the guest.
	Subdomain string `json:"subdomain,omitempty"`
	// Networks the interfaces refer to.
	// +listType=atomic
	Networks []Network `json:"networks,omitempty"`
	// AccessCredentials put credentials into the guest. kvirt supports sshPublicKey with the noCloud
	// propagation method: the keys of the Secret become the NoCloud meta-data's public-keys.
	// +listType=atomic
	AccessCredentials []AccessCredential `json:"accessCredentials,omitempty"`
}

// AccessCredential is one credential to put into the guest: exactly one of sshPublicKey and userPassword.
//
// +kubebuilder:pruning:PreserveUnknownFields
type AccessCredential struct {
	SSHPublicKey *SSHPublicKeyAccessCredential `json:"sshPublicKey,omitempty"`
	UserPassword *UserPasswordAccessCredential `json:"userPassword,omitempty"`
}

// SSHPublicKeyAccessCredential names where the public keys come from and how they reach the guest.
//
// +kubebuilder:pruning:PreserveUnknownFields
type SSHPublicKeyAccessCredential struct {
	Source            SSHPublicKeyAccessCredentialSource            `json:"source"`
	PropagationMethod SSHPublicKeyAccessCredentialPropagationMethod `json:"propagationMethod"`
}

// SSHPublicKeyAccessCredentialSource is the Secret holding the keys (every value is one or more keys).
//
// +kubebuilder:pruning:PreserveUnknownFields
type SSHPublicKeyAccessCredentialSource struct {
	Secret *AccessCredentialSecretSource `json:"secret,omitempty"`
}

// AccessCredentialSecretSource names a Secret in the VMI's namespace.
//
// +kubebuilder:pruning:PreserveUnknownFields
type AccessCredentialSecretSource struct {
	SecretName string `json:"secretName"`
}

// SSHPublicKeyAccessCredentialPropagationMethod is how keys reach the guest: exactly one method.
//
// +kubebuilder:pruning:PreserveUnknownFields
type SSHPublicKeyAccessCredentialPropagationMethod struct {
	ConfigDrive    *ConfigDriveSSHPublicKeyAccessCredentialPropagation    `json:"configDrive,omitempty"`
	NoCloud        *NoCloudSSHPublicKeyAccessCredentialPropagation        `json:"noCloud,omitempty"`
	QemuGuestAgent *QemuGuestAgentSSHPublicKeyAccessCredentialPropagation `json:"qemuGuestAgent,omitempty"`
}

// ConfigDriveSSHPublicKeyAccessCredentialPropagation puts the keys into a config drive's meta-data.
type ConfigDriveSSHPublicKeyAccessCredentialPropagation struct{}

// NoCloudSSHPublicKeyAccessCredentialPropagation puts the keys into the NoCloud meta-data's public-keys.
type NoCloudSSHPublicKeyAccessCredentialPropagation struct{}

// QemuGuestAgentSSHPublicKeyAccessCredentialPropagation writes the keys through a guest agent.
//
// +kubebuilder:pruning:PreserveUnknownFields
type QemuGuestAgentSSHPublicKeyAccessCredentialPropagation struct {
	// +listType=atomic
	Users []string `json:"users"`
}

// UserPasswordAccessCredential sets user passwords through a guest agent.
//
// +kubebuilder:pruning:PreserveUnknownFields
type UserPasswordAccessCredential struct {
	Source            UserPasswordAccessCredentialSource            `json:"source"`
	PropagationMethod UserPasswordAccessCredentialPropagationMethod `json:"propagationMethod"`
}

// UserPasswordAccessCredentialSource is the Secret holding user → password.
//
// +kubebuilder:pruning:PreserveUnknownFields
type UserPasswordAccessCredentialSource struct {
	Secret *AccessCredentialSecretSource `json:"secret,omitempty"`
}

// UserPasswordAccessCredentialPropagationMethod is how passwords reach the guest.
//
// +kubebuilder:pruning:PreserveUnknownFields
type UserPasswordAccessCredentialPropagationMethod struct {
	QemuGuestAgent *QemuGuestAgentUserPasswordAccessCredentialPropagation `json:"qemuGuestAgent,omitempty"`
}

// QemuGuestAgentUserPasswordAccessCredentialPropagation sets passwords through a guest agent.
type QemuGuestAgentUserPasswordAccessCredentialPropagation struct{}

// DomainSpec is the virtual hardware of a guest.
//
// +kubebuilder:pruning:PreserveUnknownFields
type DomainSpec struct {
	// Resources requested for the guest (memory request = guest memory unless memory.guest is set).
	Resources ResourceRequirements `json:"resources,omitempty"`
	// CPU topology and features.
	CPU *CPU `json:"cpu,omitempty"`
	// Memory of the guest.
	Memory *Memory `json:"memory,omitempty"`
	// Machine type, q35 by default (the apiserver persists it, as KubeVirt's webhooks do).
	// +kubebuilder:default={type: "q35"}
	Machine *Machine `json:"machine,omitempty"`
	// Firmware: UUID, serial, kernel boot.
	Firmware *Firmware `json:"firmware,omitempty"`
	// Devices: disks, interfaces.
	Devices Devices `json:"devices"`
}

// ResourceRequirements are the guest's resource requests and limits.
//
// +kubebuilder:pruning:PreserveUnknownFields
type ResourceRequirements struct {
	Requests k8sv1.ResourceList `json:"requests,omitempty"`
	Limits   k8sv1.ResourceList `json:"limits,omitempty"`
	// OvercommitGuestOverhead: do not add the launcher overhead to the pod's memory request.
	OvercommitGuestOverhead bool `json:"overcommitGuestOverhead,omitempty"`
}

// CPU is the guest CPU topology and feature set. vCPUs = cores × sockets × threads.
//
// +kubebuilder:pruning:PreserveUnknownFields
type CPU struct {
	Cores   uint32 `json:"cores,omitempty"`
	Sockets uint32 `json:"sockets,omitempty"`
	Threads uint32 `json:"threads,omitempty"`
	// Model is host-model, host-passthrough or a named model.
	Model string `json:"model,omitempty"`
	// Features to require or disable.
	// +listType=atomic
	Features []CPUFeature `json:"features,omitempty"`
	// DedicatedCPUPlacement requests pinned host CPUs.
	DedicatedCPUPlacement bool `json:"dedicatedCpuPlacement,omitempty"`
}

// CPUFeature is one CPU feature flag and its policy.
//
// +kubebuilder:pruning:PreserveUnknownFields
type CPUFeature struct {
	// Name is the feature, e.g. "vmx", "pcid".
	Name string `json:"name"`
	// Policy: force, require (default), optional, disable or forbid.
	Policy string `json:"policy,omitempty"`
}

// Valid CPU feature policies.
var ValidCPUFeaturePolicies = []string{"", "force", "require", "optional", "disable", "forbid"}

// Memory is the guest memory.
//
// +kubebuilder:pruning:PreserveUnknownFields
type Memory struct {
	// Hugepages backs guest memory with huge pages.
	Hugepages *Hugepages `json:"hugepages,omitempty"`
	// Guest is the memory the guest sees (defaults to the memory request).
	Guest *resource.Quantity `json:"guest,omitempty"`
}

// Hugepages selects the huge page size.
//
// +kubebuilder:pruning:PreserveUnknownFields
type Hugepages struct {
	PageSize string `json:"pageSize,omitempty"`
}

// Machine is the emulated machine type.
//
// +kubebuilder:pruning:PreserveUnknownFields
type Machine struct {
	Type string `json:"type"`
}

// Firmware identifies the guest and selects how it boots.
//
// +kubebuilder:pruning:PreserveUnknownFields
type Firmware struct {
	// UUID is the SMBIOS system UUID.
	UUID types.UID `json:"uuid,omitempty"`
	// Serial is the SMBIOS system serial number.
	Serial string `json:"serial,omitempty"`
	// KernelBoot boots a kernel and initrd taken from a container image.
	KernelBoot *KernelBoot `json:"kernelBoot,omitempty"`
}

// KernelBoot is direct kernel boot.
//
// +kubebuilder:pruning:PreserveUnknownFields
type KernelBoot struct {
	// KernelArgs is the kernel command line.
	KernelArgs string `json:"kernelArgs,omitempty"`
	// Container holds the kernel and initrd.
	Container *KernelBootContainer `json:"container,omitempty"`
}

// KernelBootContainer is the image holding the kernel and initrd.
//
// +kubebuilder:pruning:PreserveUnknownFields
type KernelBootContainer struct {
	Image           string           `json:"image"`
	ImagePullSecret string           `json:"imagePullSecret,omitempty"`
	ImagePullPolicy k8sv1.PullPolicy `json:"imagePullPolicy,omitempty"`
	KernelPath      string           `json:"kernelPath,omitempty"`
	InitrdPath      string           `json:"initrdPath,omitempty"`
}

// Devices are the guest's devices.
//
// +kubebuilder:pruning:PreserveUnknownFields
type Devices struct {
	// Disks attach volumes.
	// +listType=atomic
	Disks []Disk `json:"disks,omitempty"`
	// Interfaces attach networks.
	// +listType=atomic
	Interfaces []Interface `json:"interfaces,omitempty"`
	// AutoattachPodInterface adds a masquerade interface on the pod network when none is given (default true).
	AutoattachPodInterface *bool `json:"autoattachPodInterface,omitempty"`
	// AutoattachSerialConsole adds the serial console (default true).
	AutoattachSerialConsole *bool `json:"autoattachSerialConsole,omitempty"`
	// AutoattachGraphicsDevice adds a graphics device (kvirt has none; accepted and ignored).
	AutoattachGraphicsDevice *bool `json:"autoattachGraphicsDevice,omitempty"`
	// Rng adds a virtio entropy device.
	Rng *Rng `json:"rng,omitempty"`
}

// Rng is a virtio-rng device.
//
// +kubebuilder:pruning:PreserveUnknownFields
type Rng struct{}

// DiskBus is the bus a disk is attached to.
type DiskBus string

// Disk buses KubeVirt accepts.
const (
	DiskBusVirtio DiskBus = "virtio"
	DiskBusSATA   DiskBus = "sata"
	DiskBusSCSI   DiskBus = "scsi"
	DiskBusUSB    DiskBus = "usb"
)

// Disk attaches a volume of the same name.
//
// +kubebuilder:pruning:PreserveUnknownFields
type Disk struct {
	// Name of the volume.
	Name string `json:"name"`
	// Disk attaches it as a disk.
	Disk *DiskTarget `json:"disk,omitempty"`
	// CDRom attaches it as a read-only CD-ROM.
	CDRom *CDRomTarget `json:"cdrom,omitempty"`
	// BootOrder, 1 first; must be > 0 and unique.
	BootOrder *uint `json:"bootOrder,omitempty"`
	// Serial is the disk's serial number.
	Serial string `json:"serial,omitempty"`
	// Cache is the host cache mode: none (O_DIRECT, the guest's flushes reach the storage), writethrough
	// (every write is made durable before it completes) or writeback (host page cache, flushes honoured).
	// Empty: none where the storage supports O_DIRECT, else writethrough.
	Cache DriverCache `json:"cache,omitempty"`
	// IO is the I/O mode: native or threads. kvirt's virtio-blk always serves requests from a pool of
	// worker goroutines doing positional I/O (threads); native is accepted and served the same way.
	IO DriverIO `json:"io,omitempty"`
}

// DriverCache is a disk's host cache mode.
type DriverCache string

// Disk cache modes (KubeVirt's).
const (
	CacheNone         DriverCache = "none"
	CacheWriteThrough DriverCache = "writethrough"
	CacheWriteBack    DriverCache = "writeback"
)

// DriverIO is a disk's I/O mode.
type DriverIO string

// Disk I/O modes (KubeVirt's).
const (
	IOThreads DriverIO = "threads"
	IONative  DriverIO = "native"
)

// DiskTarget is a disk's bus and mode.
//
// +kubebuilder:pruning:PreserveUnknownFields
type DiskTarget struct {
	// Bus: virtio (default), sata, scsi or usb.
	Bus DiskBus `json:"bus,omitempty"`
	// ReadOnly attaches the disk read-only.
	ReadOnly bool `json:"readonly,omitempty"`
}

// CDRomTarget is a CD-ROM's bus.
//
// +kubebuilder:pruning:PreserveUnknownFields
type CDRomTarget struct {
	Bus DiskBus `json:"bus,omitempty"`
	// ReadOnly defaults to true.
	ReadOnly *bool `json:"readonly,omitempty"`
}

// Interface connects the guest to a network of the same name.
//
// +kubebuilder:pruning:PreserveUnknownFields
type Interface struct {
	// Name of the network.
	Name string `json:"name"`
	// Model is the NIC model (virtio).
	Model string `json:"model,omitempty"`
	// Bridge binding: the guest takes the pod's IP and MAC.
	Bridge *InterfaceBridge `json:"bridge,omitempty"`
	// Masquerade binding: the guest sits behind NAT on 10.0.2.2.
	Masquerade *InterfaceMasquerade `json:"masquerade,omitempty"`
	// Ports forwarded to the guest with masquerade (all when empty).
	// +listType=atomic
	Ports []Port `json:"ports,omitempty"`
	// MacAddress of the guest NIC.
	MacAddress string `json:"macAddress,omitempty"`
	// BootOrder of the NIC.
	BootOrder *uint `json:"bootOrder,omitempty"`
}

// InterfaceBridge selects bridge binding.
//
// +kubebuilder:pruning:PreserveUnknownFields
type InterfaceBridge struct{}

// InterfaceMasquerade selects masquerade binding.
//
// +kubebuilder:pruning:PreserveUnknownFields
type InterfaceMasquerade struct{}

// Port is a port forwarded to the guest.
//
// +kubebuilder:pruning:PreserveUnknownFields
type Port struct {
	Name string `json:"name,omitempty"`
	// Protocol: TCP (default) or UDP.
	Protocol string `json:"protocol,omitempty"`
	Port     int32  `json:"port"`
}

// Network is a network the interfaces can attach to.
//
// +kubebuilder:pruning:PreserveUnknownFields
type Network struct {
	Name string `json:"name"`
	// Pod is the pod's own network.
	Pod *PodNetwork `json:"pod,omitempty"`
}

// PodNetwork is the pod network.
//
// +kubebuilder:pruning:PreserveUnknownFields
type PodNetwork struct {
	// VMNetworkCIDR is the masquerade guest network (default 10.0.2.0/24).
	VMNetworkCIDR string `json:"vmNetworkCIDR,omitempty"`
	// VMIPv6NetworkCIDR is the masquerade IPv6 guest network.
	VMIPv6NetworkCIDR string `json:"vmIPv6NetworkCIDR,omitempty"`
}

// Volume is a named source of disk data; exactly one source is set.
//
// +kubebuilder:pruning:PreserveUnknownFields
type Volume struct {
	Name                  string                             `json:"name"`
	ContainerDisk         *ContainerDiskSource               `json:"containerDisk,omitempty"`
	CloudInitNoCloud      *CloudInitNoCloudSource            `json:"cloudInitNoCloud,omitempty"`
	EmptyDisk             *EmptyDiskSource                   `json:"emptyDisk,omitempty"`
	PersistentVolumeClaim *PersistentVolumeClaimVolumeSource `json:"persistentVolumeClaim,omitempty"`
	HostDisk              *HostDisk                          `json:"hostDisk,omitempty"`
}

// ContainerDiskSource is a disk image inside a container image (copy-on-write, discarded at stop).
//
// +kubebuilder:pruning:PreserveUnknownFields
type ContainerDiskSource struct {
	Image           string `json:"image"`
	ImagePullSecret string `json:"imagePullSecret,omitempty"`
	// Path of the image file inside the container (default: the single file in /disk).
	Path            string           `json:"path,omitempty"`
	ImagePullPolicy k8sv1.PullPolicy `json:"imagePullPolicy,omitempty"`
}

// CloudInitNoCloudSource is NoCloud cloud-init data served as a disk.
//
// +kubebuilder:pruning:PreserveUnknownFields
type CloudInitNoCloudSource struct {
	UserDataSecretRef    *k8sv1.LocalObjectReference `json:"secretRef,omitempty"`
	UserDataBase64       string                      `json:"userDataBase64,omitempty"`
	UserData             string                      `json:"userData,omitempty"`
	NetworkDataSecretRef *k8sv1.LocalObjectReference `json:"networkDataSecretRef,omitempty"`
	NetworkDataBase64    string                      `json:"networkDataBase64,omitempty"`
	NetworkData          string                      `json:"networkData,omitempty"`
}

// EmptyDiskSource is a blank sparse disk that lives as long as the VMI.
//
// +kubebuilder:pruning:PreserveUnknownFields
type EmptyDiskSource struct {
	Capacity resource.Quantity `json:"capacity"`
}

// PersistentVolumeClaimVolumeSource attaches a PVC.
//
// +kubebuilder:pruning:PreserveUnknownFields
type PersistentVolumeClaimVolumeSource struct {
	ClaimName string `json:"claimName"`
	ReadOnly  bool   `json:"readOnly,omitempty"`
}

// HostDiskType is how a host disk is opened.
type HostDiskType string

// Host disk types.
const (
	HostDiskExists         HostDiskType = "Disk"
	HostDiskExistsOrCreate HostDiskType = "DiskOrCreate"
)

// HostDisk is a disk image file on the node.
//
// +kubebuilder:pruning:PreserveUnknownFields
type HostDisk struct {
	Path string `json:"path"`
	// Type: Disk (must exist) or DiskOrCreate.
	Type HostDiskType `json:"type"`
	// Capacity of a created disk.
	Capacity resource.Quantity `json:"capacity,omitempty"`
	Shared   *bool             `json:"shared,omitempty"`
}
