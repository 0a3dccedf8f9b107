package v1

import (
	"fmt"

	k8sv1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// VirtualMachineInstance is one running (or about to run, or finished) guest.
// The VM controller creates it from a VirtualMachine's template; the VMI
// controller runs it in a virt-launcher pod and is the only writer of its status.
//
// +genclient
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
// +kubebuilder:storageversion
// +kubebuilder:resource:path=virtualmachineinstances,singular=virtualmachineinstance,shortName=vmi;vmis,categories=all
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Age",type="date",JSONPath=".metadata.creationTimestamp"
// +kubebuilder:printcolumn:name="Phase",type="string",JSONPath=".status.phase"
// +kubebuilder:printcolumn:name="IP",type="string",JSONPath=".status.interfaces[0].ipAddress"
// +kubebuilder:printcolumn:name="NodeName",type="string",JSONPath=".status.nodeName"
// +kubebuilder:printcolumn:name="Ready",type="string",JSONPath=".status.conditions[?(@.type=='Ready')].status"
// +kubebuilder:printcolumn:name="Live-Migratable",type="string",JSONPath=".status.conditions[?(@.type=='LiveMigratable')].status",priority=1
// +kubebuilder:printcolumn:name="Paused",type="string",JSONPath=".status.conditions[?(@.type=='Paused')].status",priority=1
type VirtualMachineInstance struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	// Spec is the desired guest. KubeVirt rejects a VMI without memory; so does the CRD
	// (a memory limit alone counts: KubeVirt's mutator copies it into the request).
	// A memory request below 1M is refused with KubeVirt's message (its webhook; positive values only, a
	// negative one is reported by the Validate functions). Strings the schema's quantity pattern refuses
	// never reach quantity(): parsing "1e-999999999" takes minutes, and CEL rules run beside the schema.
	// +kubebuilder:validation:XValidation:rule="!has(self.domain.resources) || !has(self.domain.resources.requests) || !('memory' in self.domain.resources.requests) || size(string(self.domain.resources.requests['memory'])) > 64 || string(self.domain.resources.requests['memory']).matches('[eE][+-]?[0-9]{4,}') || !isQuantity(string(self.domain.resources.requests['memory'])) || !quantity(string(self.domain.resources.requests['memory'])).isGreaterThan(quantity('0')) || !quantity(string(self.domain.resources.requests['memory'])).isLessThan(quantity('1M'))",messageExpression="'spec.domain.resources.requests.memory \\'' + string(self.domain.resources.requests['memory']) + '\\': must be greater than or equal to 1M.'",fieldPath=".domain.resources.requests"
	// +kubebuilder:validation:XValidation:rule="(has(self.domain.resources) && ((has(self.domain.resources.requests) && 'memory' in self.domain.resources.requests) || (has(self.domain.resources.limits) && 'memory' in self.domain.resources.limits))) || (has(self.domain.memory) && (has(self.domain.memory.guest) || has(self.domain.memory.hugepages)))",message="no memory requested, at least one of 'spec.domain.memory.guest', 'spec.domain.memory.hugepages.pageSize' or 'spec.domain.resources.requests.memory' must be set"
	Spec VirtualMachineInstanceSpec `json:"spec"`
	// Status is written by the VMI controller only.
	Status VirtualMachineInstanceStatus `json:"status,omitempty"`
}

// VirtualMachineInstanceList is a list of VirtualMachineInstances.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
type VirtualMachineInstanceList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VirtualMachineInstance `json:"items"`
}

// IsFinal reports whether the VMI reached Succeeded or Failed; a final VMI never runs again.
func (v *VirtualMachineInstance) IsFinal() bool {
	return v.Status.Phase == Failed || v.Status.Phase == Succeeded
}

// IsRunning reports whether the VMI is in phase Running.
func (v *VirtualMachineInstance) IsRunning() bool { return v.Status.Phase == Running }

// IsUnprocessed reports whether no controller has acted on the VMI yet (phase "" or Pending).
func (v *VirtualMachineInstance) IsUnprocessed() bool {
	return v.Status.Phase == VmPhaseUnset || v.Status.Phase == Pending
}

// IsMarkedForDeletion reports whether the VMI has a deletionTimestamp.
func (v *VirtualMachineInstance) IsMarkedForDeletion() bool { return v.DeletionTimestamp != nil }

// ShouldStartPaused reports whether the guest must start with its vCPUs paused.
func (v *VirtualMachineInstance) ShouldStartPaused() bool {
	return v.Spec.StartStrategy != nil && *v.Spec.StartStrategy == StartStrategyPaused
}

// Condition returns the condition of type t, or nil.
func (s *VirtualMachineInstanceStatus) Condition(t VirtualMachineInstanceConditionType) *VirtualMachineInstanceCondition {
	for i := range s.Conditions {
		if s.Conditions[i].Type == t {
			return &s.Conditions[i]
		}
	}
	return nil
}

// HasCondition reports whether condition t is present with the given status.
func (s *VirtualMachineInstanceStatus) HasCondition(t VirtualMachineInstanceConditionType, status k8sv1.ConditionStatus) bool {
	c := s.Condition(t)
	return c != nil && c.Status == status
}

// VirtualMachineInstancePhase is the lifecycle phase of a VMI.
type VirtualMachineInstancePhase string

// VMI phases, as KubeVirt defines them.
const (
	// VmPhaseUnset is the phase of a VMI no controller has seen yet.
	VmPhaseUnset VirtualMachineInstancePhase = ""
	// Pending: accepted, no launcher pod yet.
	Pending VirtualMachineInstancePhase = "Pending"
	// Scheduling: the launcher pod exists and is being scheduled/started.
	Scheduling VirtualMachineInstancePhase = "Scheduling"
	// Scheduled: the launcher pod is ready on a node; the guest is not yet running.
	Scheduled VirtualMachineInstancePhase = "Scheduled"
	// Running: the guest runs (or is paused).
	Running VirtualMachineInstancePhase = "Running"
	// Succeeded: the guest shut down cleanly.
	Succeeded VirtualMachineInstancePhase = "Succeeded"
	// Failed: the guest crashed, the VMM failed, or the pod went away.
	Failed VirtualMachineInstancePhase = "Failed"
	// WaitingForSync: a migration receiver waits for its source.
	WaitingForSync VirtualMachineInstancePhase = "WaitingForSync"
	// Unknown: the state could not be obtained because the VMI's node stopped reporting (NotReady past
	// virt-controller's --node-not-ready-timeout, or deleted) while its launcher pod still exists. KubeVirt
	// declares it and sets it nowhere; kvirt sets it so the VM shows Unknown (see controller/doc.go).
	Unknown VirtualMachineInstancePhase = "Unknown"
)

// StartStrategy says how the guest starts.
type StartStrategy string

// StartStrategyPaused starts the guest with its vCPUs paused.
const StartStrategyPaused StartStrategy = "Paused"

// VirtualMachineInstanceStatus is the observed state of a VMI.
type VirtualMachineInstanceStatus struct {
	// NodeName is the node the launcher pod runs on (set from Scheduled on).
	NodeName string `json:"nodeName,omitempty"`
	// Reason is a short machine-readable reason for the current phase.
	Reason string `json:"reason,omitempty"`
	// Conditions: Ready, Paused, PodScheduled, Synchronized, LiveMigratable, ...
	// +listType=atomic
	Conditions []VirtualMachineInstanceCondition `json:"conditions,omitempty"`
	// Phase is the lifecycle phase.
	Phase VirtualMachineInstancePhase `json:"phase,omitempty"`
	// PhaseTransitionTimestamps records when each phase was entered.
	// +listType=atomic
	PhaseTransitionTimestamps []VirtualMachineInstancePhaseTransitionTimestamp `json:"phaseTransitionTimestamps,omitempty"`
	// Interfaces are the guest's network interfaces as observed.
	// +listType=atomic
	Interfaces []VirtualMachineInstanceNetworkInterface `json:"interfaces,omitempty"`
	// QOSClass of the launcher pod.
	QOSClass *k8sv1.PodQOSClass `json:"qosClass,omitempty"`
	// LauncherContainerImageVersion is the launcher image running this VMI.
	LauncherContainerImageVersion string `json:"launcherContainerImageVersion,omitempty"`
	// ActivePods maps launcher pod UIDs to the node they run on.
	ActivePods map[types.UID]string `json:"activePods,omitempty"`
	// Machine is the machine type the guest actually runs with.
	Machine *Machine `json:"machine,omitempty"`
	// VolumeStatus describes the VMI's volumes; for a persistentVolumeClaim volume it carries the claim's
	// mode, access modes, requested size and capacity, which the launcher sizes disk.img from.
	// +listType=atomic
	VolumeStatus []VolumeStatus `json:"volumeStatus,omitempty"`
}

// VolumeStatus is the status of one volume of the VMI (KubeVirt's, the fields kvirt uses).
type VolumeStatus struct {
	// Name of the volume.
	Name string `json:"name"`
	// Target is the guest device name (vda, ...), once known.
	Target string `json:"target,omitempty"`
	// PersistentVolumeClaimInfo is set for volumes backed by a PersistentVolumeClaim.
	PersistentVolumeClaimInfo *PersistentVolumeClaimInfo `json:"persistentVolumeClaimInfo,omitempty"`
}

// PersistentVolumeClaimInfo is what the launcher needs to know about a volume's claim.
type PersistentVolumeClaimInfo struct {
	// ClaimName is the claim's name.
	ClaimName string `json:"claimName,omitempty"`
	// AccessModes of the claim.
	// +listType=atomic
	AccessModes []k8sv1.PersistentVolumeAccessMode `json:"accessModes,omitempty"`
	// VolumeMode of the claim (Filesystem or Block).
	VolumeMode *k8sv1.PersistentVolumeMode `json:"volumeMode,omitempty"`
	// Capacity of the bound volume.
	Capacity k8sv1.ResourceList `json:"capacity,omitempty"`
	// Requests of the claim.
	Requests k8sv1.ResourceList `json:"requests,omitempty"`
}

// VirtualMachineInstancePhaseTransitionTimestamp records when a phase was entered.
type VirtualMachineInstancePhaseTransitionTimestamp struct {
	// Phase entered.
	Phase VirtualMachineInstancePhase `json:"phase,omitempty"`
	// PhaseTransitionTimestamp is when it was entered.
	// +nullable
	PhaseTransitionTimestamp metav1.Time `json:"phaseTransitionTimestamp,omitempty"`
}

// VirtualMachineInstanceNetworkInterface is one observed guest NIC.
type VirtualMachineInstanceNetworkInterface struct {
	// IP is the primary IP address.
	IP string `json:"ipAddress,omitempty"`
	// MAC is the interface's MAC address.
	MAC string `json:"mac,omitempty"`
	// Name of the interface in spec.domain.devices.interfaces.
	Name string `json:"name,omitempty"`
	// IPs are all addresses of the interface, the primary first.
	// +listType=atomic
	IPs []string `json:"ipAddresses,omitempty"`
	// InterfaceName is the name inside the guest, when known.
	InterfaceName string `json:"interfaceName,omitempty"`
	// InfoSource says where the data came from (domain, guest-agent, multus-status).
	InfoSource string `json:"infoSource,omitempty"`
}

// VirtualMachineInstanceConditionType names a VMI condition.
type VirtualMachineInstanceConditionType string

// VMI condition types.
const (
	VirtualMachineInstanceProvisioning   VirtualMachineInstanceConditionType = "Provisioning"
	VirtualMachineInstanceReady          VirtualMachineInstanceConditionType = "Ready"
	VirtualMachineInstanceSynchronized   VirtualMachineInstanceConditionType = "Synchronized"
	VirtualMachineInstancePaused         VirtualMachineInstanceConditionType = "Paused"
	VirtualMachineInstanceAgentConnected VirtualMachineInstanceConditionType = "AgentConnected"
	VirtualMachineInstanceIsMigratable   VirtualMachineInstanceConditionType = "LiveMigratable"
	// VirtualMachineInstancePodScheduled mirrors the launcher pod's PodScheduled condition.
	VirtualMachineInstancePodScheduled VirtualMachineInstanceConditionType = "PodScheduled"
	// VirtualMachineInstanceBootedFromDisk (kvirt): True when the OS on the boot disk was booted (its own
	// kernel, or kvirt's platform kernel on its root filesystem); False when kvirt's built-in guest or
	// kernelBoot's kernel ran. The reason says which kernel (docs/boot.md).
	VirtualMachineInstanceBootedFromDisk VirtualMachineInstanceConditionType = "BootedFromDisk"
)

// Reasons carried by VMI and VM conditions.
const (
	// PausedByUserReason is the Paused condition's reason after `virtctl pause`.
	PausedByUserReason = "PausedByUser"
	// PausedByUserMessage is the Paused condition's message after `virtctl pause`.
	PausedByUserMessage = "VMI was paused by user"
	// PodTerminatingReason: Ready=False because the launcher pod is terminating.
	PodTerminatingReason = "PodTerminating"
	// PodNotExistsReason: Ready=False because there is no launcher pod.
	PodNotExistsReason = "PodNotExists"
	// PodConditionMissingReason: Ready=False because the pod reports no Ready condition.
	PodConditionMissingReason = "PodConditionMissing"
	// GuestNotRunningReason: Ready=False because the guest is not running.
	GuestNotRunningReason = "GuestNotRunning"
	// UnschedulableReason is the PodScheduled=False reason that makes the VM show ErrorUnschedulable.
	UnschedulableReason = "Unschedulable"
	// FailedPvcNotFoundReason is the Synchronized=False reason that makes the VM show ErrorPvcNotFound.
	FailedPvcNotFoundReason = "FailedPvcNotFound"
	// ErrImagePullReason and ImagePullBackOffReason are Synchronized=False reasons shown as VM statuses.
	ErrImagePullReason     = "ErrImagePull"
	ImagePullBackOffReason = "ImagePullBackOff"
	// VMINotExistsReason is the VM Ready=False reason when there is no VMI (message VMINotExistsMessage).
	VMINotExistsReason  = "VMINotExists"
	VMINotExistsMessage = "VMI does not exist"
	// VMIConditionMissingReason is the VM Ready=False reason when the VMI has no Ready condition yet
	// (message VMIConditionMissingMessage).
	VMIConditionMissingReason  = "VMIConditionMissing"
	VMIConditionMissingMessage = "VMI is missing the Ready condition"
	// NotMigratableReason is the generic LiveMigratable=False reason (kvirt does not migrate).
	NotMigratableReason = "NotMigratable"
)

// VirtualMachineInstanceCondition is one condition of a VMI.
type VirtualMachineInstanceCondition struct {
	Type   VirtualMachineInstanceConditionType `json:"type"`
	Status k8sv1.ConditionStatus               `json:"status"`
	// +nullable
	LastProbeTime metav1.Time `json:"lastProbeTime,omitempty"`
	// +nullable
	LastTransitionTime metav1.Time `json:"lastTransitionTime,omitempty"`
	Reason             string      `json:"reason,omitempty"`
	Message            string      `json:"message,omitempty"`
}

// VirtualMachine keeps a VirtualMachineInstance running (or not) according to
// its run strategy, and reports the instance's state in its status.
//
// +genclient
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
// +kubebuilder:storageversion
// +kubebuilder:resource:path=virtualmachines,singular=virtualmachine,shortName=vm;vms,categories=all
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Age",type="date",JSONPath=".metadata.creationTimestamp"
// +kubebuilder:printcolumn:name="Status",type="string",JSONPath=".status.printableStatus",description="Human Readable Status"
// +kubebuilder:printcolumn:name="Ready",type="string",JSONPath=".status.conditions[?(@.type=='Ready')].status"
type VirtualMachine struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	// Spec is the desired state.
	Spec VirtualMachineSpec `json:"spec"`
	// Status is written by the VM controller; users write only stateChangeRequests (via virtctl).
	Status VirtualMachineStatus `json:"status,omitempty"`
}

// VirtualMachineList is a list of VirtualMachines.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
type VirtualMachineList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VirtualMachine `json:"items"`
}

// RunStrategy returns the effective run strategy, mapping the deprecated
// spec.running (true → Always, false → Halted) as KubeVirt does. With neither
// field set it returns Halted; with both it returns an error.
func (vm *VirtualMachine) RunStrategy() (VirtualMachineRunStrategy, error) {
	if vm.Spec.Running != nil && vm.Spec.RunStrategy != nil {
		return RunStrategyUnknown, fmt.Errorf("running and runstrategy are mutually exclusive")
	}
	if vm.Spec.Running != nil {
		if *vm.Spec.Running {
			return RunStrategyAlways, nil
		}
		return RunStrategyHalted, nil
	}
	if vm.Spec.RunStrategy != nil {
		return *vm.Spec.RunStrategy, nil
	}
	return RunStrategyHalted, nil
}

// VirtualMachineRunStrategy says when the VM's instance should run.
type VirtualMachineRunStrategy string

// Run strategies.
const (
	// RunStrategyUnknown is a placeholder, not a valid strategy.
	RunStrategyUnknown VirtualMachineRunStrategy = ""
	// RunStrategyAlways keeps a VMI running, recreating it whenever it ends.
	RunStrategyAlways VirtualMachineRunStrategy = "Always"
	// RunStrategyHalted keeps no VMI.
	RunStrategyHalted VirtualMachineRunStrategy = "Halted"
	// RunStrategyManual starts and stops only on request.
	RunStrategyManual VirtualMachineRunStrategy = "Manual"
	// RunStrategyRerunOnFailure runs once and reruns only after a failure.
	RunStrategyRerunOnFailure VirtualMachineRunStrategy = "RerunOnFailure"
	// RunStrategyOnce runs one VMI and never recreates it.
	RunStrategyOnce VirtualMachineRunStrategy = "Once"
	// RunStrategyWaitAsReceiver waits for an incoming migration; kvirt rejects it
	// as KubeVirt does without the DecentralizedLiveMigration feature gate.
	RunStrategyWaitAsReceiver VirtualMachineRunStrategy = "WaitAsReceiver"
)

// ValidRunStrategies are the strategies the API accepts.
var ValidRunStrategies = []VirtualMachineRunStrategy{RunStrategyHalted, RunStrategyManual, RunStrategyAlways, RunStrategyRerunOnFailure, RunStrategyOnce}

// VirtualMachineSpec is the desired state of a VirtualMachine.
//
// +kubebuilder:pruning:PreserveUnknownFields
// +kubebuilder:validation:XValidation:rule="!(has(self.running) && has(self.runStrategy))",message="Running and RunStrategy are mutually exclusive. Note that Running is deprecated, please use RunStrategy instead",fieldPath=".running"
// +kubebuilder:validation:XValidation:rule="has(self.running) || has(self.runStrategy)",message="RunStrategy must be specified",fieldPath=".running"
type VirtualMachineSpec struct {
	// Running is the deprecated boolean form of runStrategy (true = Always, false = Halted).
	// Mutually exclusive with runStrategy.
	Running *bool `json:"running,omitempty"`
	// RunStrategy: Always, Halted, Manual, RerunOnFailure or Once. Mutually exclusive with running.
	// +kubebuilder:validation:XValidation:rule="self in ['Always', 'Halted', 'Manual', 'RerunOnFailure', 'Once']",messageExpression="self == 'WaitAsReceiver' ? 'Invalid RunStrategy (WaitAsReceiver), DecentralizedLiveMigration feature gate is not enabled in kubevirt resource' : 'Invalid RunStrategy (' + self + ')'"
	RunStrategy *VirtualMachineRunStrategy `json:"runStrategy,omitempty"`
	// Template is the VMI to create.
	Template *VirtualMachineInstanceTemplateSpec `json:"template"`
}

// VirtualMachineInstanceTemplateSpec is the template a VM creates its VMI from.
type VirtualMachineInstanceTemplateSpec struct {
	// Metadata (labels, annotations) given to the VMI.
	// +kubebuilder:pruning:PreserveUnknownFields
	// +nullable
	ObjectMeta metav1.ObjectMeta `json:"metadata,omitempty"`
	// Spec of the VMI.
	Spec VirtualMachineInstanceSpec `json:"spec,omitempty"`
}

// StateChangeRequestAction is Start or Stop.
type StateChangeRequestAction string

// State change actions.
const (
	StartRequest StateChangeRequestAction = "Start"
	StopRequest  StateChangeRequestAction = "Stop"
)

// StartRequestDataPausedKey is the stateChangeRequests data key `virtctl start --paused` sets to "true".
const (
	StartRequestDataPausedKey  = "paused"
	StartRequestDataPausedTrue = "true"
)

// VirtualMachineStateChangeRequest asks the controller to start or stop the VM.
type VirtualMachineStateChangeRequest struct {
	// Action is Start or Stop.
	Action StateChangeRequestAction `json:"action"`
	// Data carries options: {"paused": "true"} starts the VMI paused.
	Data map[string]string `json:"data,omitempty"`
	// UID is the VMI a Stop applies to; a Stop for another UID is dropped.
	UID *types.UID `json:"uid,omitempty"`
}

// VirtualMachinePrintableStatus is the human-readable status in `kubectl get vm`.
type VirtualMachinePrintableStatus string

// Printable statuses.
const (
	VirtualMachineStatusStopped                 VirtualMachinePrintableStatus = "Stopped"
	VirtualMachineStatusProvisioning            VirtualMachinePrintableStatus = "Provisioning"
	VirtualMachineStatusStarting                VirtualMachinePrintableStatus = "Starting"
	VirtualMachineStatusRunning                 VirtualMachinePrintableStatus = "Running"
	VirtualMachineStatusPaused                  VirtualMachinePrintableStatus = "Paused"
	VirtualMachineStatusStopping                VirtualMachinePrintableStatus = "Stopping"
	VirtualMachineStatusTerminating             VirtualMachinePrintableStatus = "Terminating"
	VirtualMachineStatusCrashLoopBackOff        VirtualMachinePrintableStatus = "CrashLoopBackOff"
	VirtualMachineStatusMigrating               VirtualMachinePrintableStatus = "Migrating"
	VirtualMachineStatusUnknown                 VirtualMachinePrintableStatus = "Unknown"
	VirtualMachineStatusUnschedulable           VirtualMachinePrintableStatus = "ErrorUnschedulable"
	VirtualMachineStatusErrImagePull            VirtualMachinePrintableStatus = "ErrImagePull"
	VirtualMachineStatusImagePullBackOff        VirtualMachinePrintableStatus = "ImagePullBackOff"
	VirtualMachineStatusPvcNotFound             VirtualMachinePrintableStatus = "ErrorPvcNotFound"
	VirtualMachineStatusDataVolumeError         VirtualMachinePrintableStatus = "DataVolumeError"
	VirtualMachineStatusWaitingForVolumeBinding VirtualMachinePrintableStatus = "WaitingForVolumeBinding"
	VirtualMachineStatusWaitingForReceiver      VirtualMachinePrintableStatus = "WaitingForReceiver"
)

// VirtualMachineStatus is the observed state of a VirtualMachine.
type VirtualMachineStatus struct {
	// Created: a VMI exists.
	Created bool `json:"created,omitempty"`
	// Ready: the VMI has Ready=True.
	Ready bool `json:"ready,omitempty"`
	// PrintableStatus is the high-level status shown by `kubectl get vm`.
	// +kubebuilder:default=Stopped
	PrintableStatus VirtualMachinePrintableStatus `json:"printableStatus,omitempty"`
	// RunStrategy is the strategy in effect once a VMI has existed.
	RunStrategy VirtualMachineRunStrategy `json:"runStrategy,omitempty"`
	// Conditions: Ready (always), Failure, and those mirrored from the VMI.
	// +listType=atomic
	Conditions []VirtualMachineCondition `json:"conditions,omitempty"`
	// StateChangeRequests are pending start/stop requests; only [0] is acted on.
	// +listType=atomic
	StateChangeRequests []VirtualMachineStateChangeRequest `json:"stateChangeRequests,omitempty"`
	// StartFailure tracks consecutive failed starts for the crash-loop backoff.
	StartFailure *VirtualMachineStartFailure `json:"startFailure,omitempty"`
	// ObservedGeneration is the VM generation the VMI was started from (its kubevirt.io/vm-generation
	// annotation, moved on while the template stays the same).
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// DesiredGeneration is the VM's generation, written with ObservedGeneration: the two differ while the
	// VMI runs a template the VM no longer has.
	DesiredGeneration int64 `json:"desiredGeneration,omitempty"`
}

// VirtualMachineStartFailure records failed starts (a VMI that ended without ever running).
type VirtualMachineStartFailure struct {
	ConsecutiveFailCount int       `json:"consecutiveFailCount,omitempty"`
	LastFailedVMIUID     types.UID `json:"lastFailedVMIUID,omitempty"`
	// RetryAfterTimestamp is the earliest time the next VMI may be created.
	RetryAfterTimestamp *metav1.Time `json:"retryAfterTimestamp,omitempty"`
}

// VirtualMachineConditionType names a VM condition.
type VirtualMachineConditionType string

// VM condition types (others are mirrored from the VMI by name).
const (
	VirtualMachineFailure         VirtualMachineConditionType = "Failure"
	VirtualMachineReady           VirtualMachineConditionType = "Ready"
	VirtualMachinePaused          VirtualMachineConditionType = "Paused"
	VirtualMachineRestartRequired VirtualMachineConditionType = "RestartRequired"
)

// VirtualMachineCondition is one condition of a VM.
type VirtualMachineCondition struct {
	Type   VirtualMachineConditionType `json:"type"`
	Status k8sv1.ConditionStatus       `json:"status"`
	// +nullable
	LastProbeTime metav1.Time `json:"lastProbeTime,omitempty"`
	// +nullable
	LastTransitionTime metav1.Time `json:"lastTransitionTime,omitempty"`
	Reason             string      `json:"reason,omitempty"`
	Message            string      `json:"message,omitempty"`
}

// Condition returns the condition of type t, or nil.
func (s *VirtualMachineStatus) Condition(t VirtualMachineConditionType) *VirtualMachineCondition {
	for i := range s.Conditions {
		if s.Conditions[i].Type == t {
			return &s.Conditions[i]
		}
	}
	return nil
}

// Labels, annotations and finalizers KubeVirt uses and kvirt keeps.
const (
	// AppLabel is "kubevirt.io"; launcher pods carry AppLabel=virt-launcher.
	AppLabel = "kubevirt.io"
	// VirtLauncherValue is the AppLabel value of launcher pods.
	VirtLauncherValue = "virt-launcher"
	// CreatedByLabel on a launcher pod holds the VMI UID.
	CreatedByLabel = "kubevirt.io/created-by"
	// VirtualMachineNameLabel (KubeVirt: DeprecatedVirtualMachineNameLabel) holds NameLabelValue of the VM
	// name on VMI and pod (KubeVirt puts the pod's host name, the VMI name cut at 63 characters, there).
	VirtualMachineNameLabel = "vm.kubevirt.io/name"
	// VirtualMachineInstanceIDLabel on a launcher pod holds NameLabelValue of the VMI name (KubeVirt's VMI
	// ID); `virtctl expose` selects on it.
	VirtualMachineInstanceIDLabel = "vmi.kubevirt.io/id"
	// NodeNameLabel on a VMI holds its node once Scheduled.
	NodeNameLabel = "kubevirt.io/nodeName"
	// VirtualMachineLabel ("kubevirt.io/vm") is set by users on templates by convention.
	VirtualMachineLabel = "kubevirt.io/vm"
	// DomainAnnotation on a launcher pod holds the VMI name.
	DomainAnnotation = "kubevirt.io/domain"
	// CreateMigrationTargetAnnotation marks a WaitAsReceiver VMI.
	CreateMigrationTargetAnnotation = "kubevirt.io/create-migration-target"
	// VirtualMachineGenerationAnnotation on a VMI holds the generation of the VM it was created from.
	VirtualMachineGenerationAnnotation = "kubevirt.io/vm-generation"

	// VirtualMachineControllerFinalizer is on VMs and VMIs owned by the VM controller.
	VirtualMachineControllerFinalizer = "kubevirt.io/virtualMachineControllerFinalize"
	// VirtualMachineInstanceFinalizer is on every VMI until its pod is gone.
	VirtualMachineInstanceFinalizer = "kubevirt.io/foregroundDeleteVirtualMachine"

	// VirtualMachineUnpausedPodCondition is the launcher pod's readiness gate: False while paused.
	VirtualMachineUnpausedPodCondition k8sv1.PodConditionType = "kubevirt.io/virtual-machine-unpaused"
)

// Resources kvirt's launcher pods request from device plugins.
const (
	KVMDeviceResource k8sv1.ResourceName = "devices.kubevirt.io/kvm"
	TunDeviceResource k8sv1.ResourceName = "devices.kubevirt.io/tun"
)
