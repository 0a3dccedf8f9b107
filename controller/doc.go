// Package controller is kvirt's virt-controller: the VirtualMachine controller (run strategies, VMI
// creation and deletion, VM status, crash-loop backoff, ABI defaults, adoption) and the
// VirtualMachineInstance controller (launcher pods and their token secrets, VMI phases and conditions,
// status from the launcher's control API), plus the plumbing that runs them: informers, rate-limited
// workqueues, expectations, events, leader election, health and Prometheus metrics.
//
// Decisions that are not KubeVirt's own (KubeVirt's behaviour is recorded in docs/BEHAVIOUR.md):
//
//   - The VMI is handed to its launcher as a file: the controller writes the VMI (metadata name,
//     namespace, uid, labels, annotations and spec) as JSON into the pod annotation kvirt.io/vmi and
//     mounts it with a downward-API volume at /var/run/kvirt/vmi.json. An annotation keeps the VMI and
//     the pod in one object (no extra API object to create, watch and garbage-collect) and is visible to
//     `kubectl get pod -o yaml` for debugging; its 256 KiB limit is far above any sensible VMI.
//   - Each VMI gets a Secret "<vmi>-launcher-token" (controller ownerRef to the VMI, label
//     kubevirt.io=launcher-token) whose key "token" is mounted at /var/run/kvirt/secret/token. kvirt
//     deletes only such a Secret it made for an earlier VMI of the same name; one it did not create keeps
//     the VMI waiting with a FailedCreate warning until its owner renames or deletes it. The
//     launcher requires it as a bearer token on its control API at port DefaultControlPort (8186). The
//     controller reaches it through the apiserver's pods/portforward subresource (kubelet → 127.0.0.1:8186
//     in the pod; virt-controller --launcher-connect=portforward, the default), and the launcher then
//     listens on 127.0.0.1 only, out of reach of other pods and of the guest: with the bridge binding the
//     pod IP is the guest's, so podIP:8186 reaches the guest, not the launcher. --launcher-connect=pod-ip
//     dials the pod IP directly (masquerade only) and the launcher listens on every pod address.
//   - Beyond KubeVirt: every template interface without a macAddress gets a stable, locally
//     administered MAC derived from the VM UID and the interface name, written into the VM template
//     once, so a VM keeps its MAC across restarts and pods (KubeVirt needs the KubeMacPool add-on).
//   - The launcher pod's memory is KubeVirt's (the VMI's memory request, else its limit, else the guest
//     memory) plus LauncherMemoryOverhead (32Mi, from the launcher's measured RSS beside a running
//     guest, see pod.go) + guest/512 for page tables; a memory limit gets the same overhead. A guest
//     below MinGuestMemory (16 MiB, the least kvirt's VMM boots; KubeVirt runs anything from 1M) is
//     raised to it by the launcher, and the pod pays for the raised guest.
//   - Names: label values (vmi.kubevirt.io/id, vm.kubevirt.io/name) hold v1.NameLabelValue of the VMI
//     or VM name, KubeVirt's hashed VMI ID beyond 63 characters (KubeVirt puts the host name in
//     vm.kubevirt.io/name); the token Secret's name is shortened with a hash beyond 253 characters.
//   - Firmware identity: kvirt has no admission webhook, so the VM controller's first sync of a VM (one
//     without its finalizer) stands in for KubeVirt's VM mutator on create: an empty firmware UUID and
//     serial get random UUIDs, written with the finalizer (abi.go). The machine type default (q35) is
//     the CRDs', persisted by the apiserver.
//   - Launcher pod termination grace = VMI terminationGracePeriodSeconds (default 30) + 15 s. A VMI being
//     deleted has its pods deleted with no longer a grace period than its grace period now + 15 s, so a
//     lowered one (virtctl stop --force) also cuts a pod deletion under way.
//   - The controller does virt-handler's part of a shutdown through the launcher's control API
//     (LauncherCommander): it asks a deleted VMI's launcher to shut down with the VMI's grace period before
//     deleting the pod, passes on a grace period lowered later (the launcher's only shrinks), and asks for
//     a hard stop at grace 0. What it asked of a launcher is remembered with its watcher, so a request and
//     its event (ShuttingDown, Deleted) are made once. Without a control API (or if it fails) the pod's
//     SIGTERM alone starts the shutdown.
//   - RestartRequired: KubeVirt compares the VM spec with the one it saved in a ControllerRevision when it
//     started the VMI; kvirt writes a hash of the template spec on the VMI (kvirt.io/template-hash) beside
//     KubeVirt's kubevirt.io/vm-generation, and compares that.
//   - The launcher container runs the image's entrypoint with LauncherArgs: `run -f /var/run/kvirt/vmi.json
//     --token-file ... --control-addr 127.0.0.1:8186 --termination-log /dev/termination-log` (`:8186` with
//     pod-ip). Contract with the
//     launcher: it exits 0 only after the guest powered off (a pod that Succeeded while the VMI was
//     Scheduled/Running makes the VMI Succeeded); any other end is Failed, with the container's
//     termination reason as the VMI's status.reason and its message in the "Stopped" warning event.
//   - The launcher's reports (LauncherState) are authoritative for Running, Paused, Succeeded and Failed;
//     the pod alone gives Pending → Scheduling → Scheduled, and a vanished pod fails the VMI (PodGone).
//     The controller sets the pod's readiness gate kubevirt.io/virtual-machine-unpaused (False while
//     paused), as KubeVirt's virt-handler does.
//   - A start failure (a VMI that became final without running) is written to the VM status before that
//     VMI is deleted, and a RerunOnFailure restart's Start request before its failed VMI is deleted, so
//     a lost write or a stale cache can never skip the backoff or leave the VM stopped.
//   - Both controllers decide before they act. Each sync reads the cache, its expectations and the
//     clock once; pure functions decide from that (vmdecide.go: run strategy, trimming, backoff, VM
//     status; vmidecide.go: launcher pods, watches, VMI status and events); sync then executes the
//     actions in a fixed order. The tables in vmdecide_test.go and vmidecide_test.go are keyed to the
//     rows of docs/BEHAVIOUR.md §1–§3.
//   - The controller never Updates a VM or VMI with our Go types: the CRDs keep fields those types do not
//     model, and an Update would delete them. Metadata and spec writes (finalizers, the node label, the
//     firmware UUID and serial and MACs, the run strategy for a paused start) are JSON patches of just
//     those fields after a resourceVersion test (patch.go); status goes through the status subresource.
//     A VMI is created from the VM's template as stored (an uncached raw read of the VM), so its spec is
//     the template's, unknown fields included, as in KubeVirt; the launcher's copy (pod annotation) is
//     typed and holds only what kvirt models.
//   - WaitingForVolumeBinding: the VM controller watches all PVCs (list/watch in deploy/rbac) and, unlike
//     KubeVirt, re-syncs a VM on PVC updates too, so the status leaves WaitingForVolumeBinding as soon as
//     the claim binds. kvirt has no DataVolumes: Provisioning and DataVolumeError never appear.
//   - Persistent disks (podvolumes.go) follow KubeVirt's pod layout; the claim's mode, size and access
//     modes reach the launcher in status.volumeStatus of its copy of the VMI (KubeVirt's virt-handler
//     passes the same). A VMI whose claim does not exist gets no pod and shows FailedPvcNotFound until the
//     claim appears (VMIs are re-synced on claim events); an unbound claim does not hold the pod back.
//   - Node loss (node.go, nodeLost in vmidecide.go): KubeVirt's node controller works from virt-handler's
//     heartbeat; kvirt has none and reads the Ready condition of the launcher pod's Node instead (a Node
//     informer, transformed to keep only the name and the Ready condition). A Node NotReady for
//     --node-not-ready-timeout (default 30 s), or deleted, makes its VMIs phase Unknown while their pods
//     exist, so their VMs show Unknown; KubeVirt declares that phase but leaves such a VMI Running. The
//     kubelet's heartbeat Lease is not read: the node lifecycle controller turns a stale Lease into
//     Ready=Unknown, and watching every node's Lease (each renewed every 10 s) would notice a loss only
//     some 10 s sooner (the Lease lasts 40 s, the lifecycle controller's grace period is 50 s). Unknown is not final, so nothing starts a second VMI, and a VMI's
//     finalizer stays while its pod exists; recovery needs the pod gone (node deleted, or Kubernetes'
//     out-of-service taint, on which pod GC force-deletes the pod), which fails the VMI with KubeVirt's
//     NodeUnresponsive. kvirt does not label nodes unschedulable as KubeVirt does (kubevirt.io/schedulable):
//     the scheduler already avoids NotReady and tainted nodes.
//   - KubeVirt leaves mirrored VMI conditions on the VM when the VMI is gone (its syncConditions returns
//     early without a VMI); kvirt drops them with the VMI and keeps only Ready (VMINotExists), Failure
//     and RestartRequired, so a stopped VM does not show a stale Paused or PodScheduled.
package controller
