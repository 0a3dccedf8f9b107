package controller

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"

	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/launcher/network/podsysctl"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8svalidation "k8s.io/apimachinery/pkg/util/validation"
)

// Launcher pod layout shared with the launcher (cmd/virt-launcher).
const (
	// LauncherContainerName is the launcher container (KubeVirt's name).
	LauncherContainerName = "compute"
	// VMIAnnotation on a launcher pod holds the VMI as JSON; the downward API mounts it as VMIFile.
	VMIAnnotation = "kvirt.io/vmi"
	// VMIFile is where the launcher reads its VMI.
	VMIFile = "/var/run/kvirt/vmi.json"
	// TokenFile is where the launcher reads the control-API token.
	TokenFile = "/var/run/kvirt/secret/token"
	// TokenSecretKey is the key of the token in the per-VMI secret.
	TokenSecretKey = "token"
	// TokenSecretLabelValue is the AppLabel value of per-VMI token secrets.
	TokenSecretLabelValue = "launcher-token"
	// GraceMargin is added to the VMI's grace period for the pod, so the launcher can hard-stop the
	// guest when the guest's own grace ends and still exit before the kubelet kills it.
	GraceMargin int64 = 15
	// DefaultGracePeriodSeconds is KubeVirt's default VMI terminationGracePeriodSeconds.
	DefaultGracePeriodSeconds int64 = 30
)

// LauncherMemoryOverhead is the fixed part of the memory the launcher pod needs beyond guest RAM
// (launcherOverhead adds a part proportional to guest memory). Measured (session 2, build of fbdc9cc,
// `virt-launcher run -f` with --network none, RSS from /proc/PID/smaps after the guest's ready line,
// minus the resident pages of the guest RAM mapping):
//
//	test guest, 64Mi, 1 vCPU, no devices:                         15.2 MiB outside guest RAM
//	Linux (kvirt kernel+initramfs), 128Mi, 1 vCPU, no disks:      14.8 MiB (process RSS 47.6 MiB)
//	Linux, 128Mi, 2 vCPUs, emptyDisk + cloudInitNoCloud disks:    15.3 MiB (process RSS 49.1 MiB)
//
// About 11 MiB of that are the launcher binary's own file pages, the rest Go heap, stacks and device
// state; an extra vCPU and two disks added 0.5 MiB. What the kubelet enforces is the pod's memory cgroup:
// on the local cluster (just cluster-up, cgroup v1) ten launcher pods of test guests (64Mi, masquerade)
// showed memory.max_usage_in_bytes 5.5–5.9 MiB each, of it 1.6 MiB kernel memory (memory.kmem: KVM's
// objects, tap, sockets) — the binary's file pages were charged to the first reader, not each pod. 32Mi
// is ~2x the largest RSS figure: the margin covers a pod that is charged the binary's pages, kernel
// memory, larger virtqueues under load and Go GC headroom. KubeVirt's libvirt+QEMU stack budgets 240Mi
// fixed plus 8Mi per vCPU for the same job.
var LauncherMemoryOverhead = resource.MustParse("32Mi")

// launcherOverhead is the memory a launcher pod requests on top of guest memory: LauncherMemoryOverhead
// plus guest/512 for the guest's page tables (KubeVirt's term for the same: PVM's shadow page tables are
// kernel memory charged to the pod, like EPT tables on plain KVM).
func launcherOverhead(guest resource.Quantity) resource.Quantity {
	o := LauncherMemoryOverhead.DeepCopy()
	o.Add(*resource.NewQuantity(guest.Value()/512, resource.BinarySI))
	return o
}

// PodConfig is what the VMI controller needs to render launcher pods.
type PodConfig struct {
	// Image of virt-launcher (flag --launcher-image).
	Image string
	// ControlPort the launcher serves its control API on.
	ControlPort int
	// ControlLoopback: the launcher listens on 127.0.0.1 only, which is where pods/portforward enters the
	// pod (virt-controller --launcher-connect=portforward). Otherwise it listens on every pod address.
	ControlLoopback bool
	// HostDisks allows hostDisk volumes (virt-controller --host-disks, KubeVirt's HostDisk feature gate):
	// a hostPath volume lets whoever creates the VMI create and write files on the node as the launcher.
	HostDisks bool
}

// LauncherArgs are the launcher container's arguments (after the image's entrypoint, virt-launcher):
// run the VMI in VMIFile (ARCHITECTURE.md: `virt-launcher run -f vmi.yaml`), serve the control API at
// port with the token in TokenFile (on 127.0.0.1 only when loopback, else on every pod address), and
// write the outcome to the termination log the controller reads when the pod ends. The launcher reads
// the grace period from the VMI itself.
func LauncherArgs(port int, loopback bool) []string {
	return []string{
		"run",
		"-f", VMIFile,
		"--token-file", TokenFile,
		"--control-addr", controlAddr(port, loopback),
		"--termination-log", corev1.TerminationMessagePathDefault,
	}
}

// controlAddr is the launcher's --control-addr. Through pods/portforward the kubelet's runtime dials
// 127.0.0.1:port inside the pod, so a loopback listener is all the controller needs; nothing on the pod
// network (another pod, or the guest, whose gateway is a pod address) then reaches the API at all.
func controlAddr(port int, loopback bool) string {
	if loopback {
		return fmt.Sprintf("127.0.0.1:%d", port)
	}
	return fmt.Sprintf(":%d", port)
}

// TokenSecretName is the name of the per-VMI control-API token secret: "<vmi>-launcher-token", with the
// VMI name shortened (v1.ShortenedName) where the whole would pass the 253 characters of an object name.
func TokenSecretName(vmiName string) string {
	return v1.ShortenedName(vmiName, "-launcher-token", k8svalidation.DNS1123SubdomainMaxLength)
}

// launcherPodPrefix is the launcher pod's generateName: "virt-launcher-<vmi>-" as in KubeVirt, cut to
// the 58 characters the apiserver keeps of a generateName anyway (so the generated name, with its 5
// random characters, is at most 63), which also keeps a long VMI name from making the prefix invalid.
func launcherPodPrefix(vmiName string) string {
	const keep = k8svalidation.DNS1123LabelMaxLength - 5
	p := "virt-launcher-" + vmiName + "-"
	if len(p) > keep {
		p = p[:keep]
	}
	return p
}

// newToken returns a fresh random control-API token.
func newToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// renderTokenSecret returns the per-VMI token secret, owned by the VMI.
func renderTokenSecret(vmi *v1.VirtualMachineInstance, token string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:            TokenSecretName(vmi.Name),
			Namespace:       vmi.Namespace,
			Labels:          map[string]string{v1.AppLabel: TokenSecretLabelValue, v1.CreatedByLabel: string(vmi.UID)},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(vmi, v1.VirtualMachineInstanceGroupVersionKind)},
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{TokenSecretKey: []byte(token)},
	}
}

// MinGuestMemory is the least guest RAM kvirt's VMM boots (launcher/spec.MinMemoryBytes, pinned by a test).
// KubeVirt accepts any memory of at least 1M (its functional tests start guest-less VMs with 1Mi and
// 4096Ki); the launcher raises a smaller guest to this, and the pod is sized for what actually runs.
const MinGuestMemory = 16 << 20

// guestMemory returns the memory the guest gets, in KubeVirt's order (its mutating webhook's
// setGuestMemory): memory.guest, else a non-zero memory request, else a non-zero memory limit.
func guestMemory(spec *v1.VirtualMachineInstanceSpec) (resource.Quantity, bool) {
	if spec.Domain.Memory != nil && spec.Domain.Memory.Guest != nil {
		return spec.Domain.Memory.Guest.DeepCopy(), true
	}
	for _, l := range []corev1.ResourceList{spec.Domain.Resources.Requests, spec.Domain.Resources.Limits} {
		if q, ok := l[corev1.ResourceMemory]; ok && !q.IsZero() {
			return q.DeepCopy(), true
		}
	}
	return resource.Quantity{}, false
}

// podMemory returns the launcher container's memory request and limit (hasLimit: the VMI sets a
// non-zero memory limit) as KubeVirt's resource renderer computes them (WithMemoryRequests,
// WithMemoryOverhead): the request is the VMI's memory request, else its memory limit, else the guest
// memory; request and limit each get the launcher's overhead for the guest that runs (at least
// MinGuestMemory).
func podMemory(spec *v1.VirtualMachineInstanceSpec, guest resource.Quantity) (req, limit resource.Quantity, hasLimit bool) {
	res := spec.Domain.Resources
	lim, hasLimit := res.Limits[corev1.ResourceMemory]
	hasLimit = hasLimit && !lim.IsZero()
	switch r, hasReq := res.Requests[corev1.ResourceMemory]; {
	case hasReq && !r.IsZero():
		req = r.DeepCopy()
	case hasLimit:
		req = lim.DeepCopy()
	default:
		req = guest.DeepCopy()
	}
	runs := guest.DeepCopy()
	var raised resource.Quantity // what the launcher adds to a guest below MinGuestMemory
	if guest.CmpInt64(MinGuestMemory) < 0 {
		runs = *resource.NewQuantity(MinGuestMemory, resource.BinarySI)
		raised = runs.DeepCopy()
		raised.Sub(guest)
	}
	overhead := launcherOverhead(runs)
	overhead.Add(raised)
	req.Add(overhead)
	if hasLimit {
		limit = lim.DeepCopy()
		limit.Add(overhead)
	}
	return req, limit, hasLimit
}

// vcpus is the guest's vCPU count (api/v1 VCPUs: the topology, else the CPU limit/request rounded up).
func vcpus(spec *v1.VirtualMachineInstanceSpec) int64 {
	return int64(spec.VCPUs())
}

// gracePeriod is the VMI's terminationGracePeriodSeconds or KubeVirt's default.
func gracePeriod(vmi *v1.VirtualMachineInstance) int64 {
	if g := vmi.Spec.TerminationGracePeriodSeconds; g != nil && *g >= 0 {
		return *g
	}
	return DefaultGracePeriodSeconds
}

// launcherVMI is the part of the VMI the launcher reads from VMIFile: metadata, spec, and the status of
// its claims (volumes, from renderPodVolumes).
func launcherVMI(vmi *v1.VirtualMachineInstance, volumes []v1.VolumeStatus) ([]byte, error) {
	out := &v1.VirtualMachineInstance{
		TypeMeta: metav1.TypeMeta{APIVersion: v1.GroupVersion.String(), Kind: "VirtualMachineInstance"},
		ObjectMeta: metav1.ObjectMeta{
			Name: vmi.Name, Namespace: vmi.Namespace, UID: vmi.UID,
			Labels: vmi.Labels, Annotations: vmi.Annotations,
		},
		Spec:   vmi.Spec,
		Status: v1.VirtualMachineInstanceStatus{VolumeStatus: volumes},
	}
	return json.Marshal(out)
}

// launcherSysctls are the pod-level sysctls the launcher needs: with a masquerade interface, IPv4
// forwarding and route_localnet in the pod's network namespace (podsysctl.Required), which the launcher
// cannot set itself (/proc/sys is read-only in a container and the launcher has no CAP_SYS_ADMIN). They
// are unsafe sysctls: the node's kubelet must allow them (allowedUnsafeSysctls: ["net.ipv4.ip_forward",
// "net.ipv4.conf.default.route_localnet"]), as `just cluster-up`'s does; otherwise the kubelet rejects
// the pod with SysctlForbidden. KubeVirt sets these from its privileged virt-handler instead.
func launcherSysctls(vmi *v1.VirtualMachineInstance) []corev1.Sysctl {
	masquerade := false
	for _, in := range vmi.Spec.Domain.Devices.Interfaces {
		masquerade = masquerade || in.Masquerade != nil
	}
	if !masquerade {
		return nil
	}
	var out []corev1.Sysctl
	for k, v := range podsysctl.Required {
		out = append(out, corev1.Sysctl{Name: k, Value: v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// renderLauncherPod builds the launcher pod of vmi (KubeVirt's template.go, for our launcher). claims holds
// the VMI's persistentVolumeClaims by name (every one must be there: missingClaims).
func renderLauncherPod(vmi *v1.VirtualMachineInstance, cfg PodConfig, claims map[string]*corev1.PersistentVolumeClaim) (*corev1.Pod, error) {
	mem, ok := guestMemory(&vmi.Spec)
	if !ok {
		return nil, fmt.Errorf("VMI %s/%s: no memory requested (spec.domain.memory.guest, spec.domain.resources.requests.memory or spec.domain.resources.limits.memory)", vmi.Namespace, vmi.Name)
	}
	persistent, err := renderPodVolumes(vmi, claims, cfg.HostDisks) // controller/podvolumes.go
	if err != nil {
		return nil, fmt.Errorf("VMI %s/%s: %w", vmi.Namespace, vmi.Name, err)
	}
	vmiJSON, err := launcherVMI(vmi, persistent.status)
	if err != nil {
		return nil, fmt.Errorf("VMI %s/%s: encode for the launcher: %w", vmi.Namespace, vmi.Name, err)
	}
	port := cfg.ControlPort
	if port == 0 {
		port = DefaultControlPort
	}

	requests := corev1.ResourceList{}
	limits := corev1.ResourceList{}
	for k, v := range vmi.Spec.Domain.Resources.Requests {
		requests[k] = v.DeepCopy()
	}
	for k, v := range vmi.Spec.Domain.Resources.Limits {
		limits[k] = v.DeepCopy()
	}
	memReq, memLimit, hasLimit := podMemory(&vmi.Spec, mem)
	requests[corev1.ResourceMemory] = memReq
	delete(limits, corev1.ResourceMemory)
	if hasLimit {
		limits[corev1.ResourceMemory] = memLimit
	}
	if _, ok := requests[corev1.ResourceCPU]; !ok {
		// KubeVirt's cpuAllocationRatio of 10: a tenth of a core per vCPU.
		requests[corev1.ResourceCPU] = *resource.NewMilliQuantity(100*vcpus(&vmi.Spec), resource.DecimalSI)
	}
	limits[v1.KVMDeviceResource] = resource.MustParse("1")
	limits[v1.TunDeviceResource] = resource.MustParse("1")

	labels := map[string]string{}
	for k, v := range vmi.Labels {
		labels[k] = v
	}
	labels[v1.AppLabel] = v1.VirtLauncherValue
	labels[v1.CreatedByLabel] = string(vmi.UID)
	labels[v1.VirtualMachineInstanceIDLabel] = v1.NameLabelValue(vmi.Name)
	if vmName, ok := vmi.Labels[v1.VirtualMachineNameLabel]; ok {
		labels[v1.VirtualMachineNameLabel] = vmName
	} else if ref := metav1.GetControllerOf(vmi); ref != nil && ref.Kind == "VirtualMachine" {
		labels[v1.VirtualMachineNameLabel] = v1.NameLabelValue(ref.Name)
	}
	delete(labels, v1.NodeNameLabel)

	var podSecurity *corev1.PodSecurityContext
	if sysctls := launcherSysctls(vmi); len(sysctls) > 0 {
		podSecurity = &corev1.PodSecurityContext{Sysctls: sysctls}
	}

	grace := gracePeriod(vmi) + GraceMargin
	falseVal := false
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: launcherPodPrefix(vmi.Name),
			Namespace:    vmi.Namespace,
			Labels:       labels,
			Annotations: map[string]string{
				v1.DomainAnnotation: vmi.Name,
				VMIAnnotation:       string(vmiJSON),
			},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(vmi, v1.VirtualMachineInstanceGroupVersionKind)},
		},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: &grace,
			AutomountServiceAccountToken:  &falseVal,
			NodeSelector:                  vmi.Spec.NodeSelector,
			Affinity:                      vmi.Spec.Affinity,
			Tolerations:                   vmi.Spec.Tolerations,
			SchedulerName:                 vmi.Spec.SchedulerName,
			PriorityClassName:             vmi.Spec.PriorityClassName,
			Hostname:                      vmi.Spec.Hostname,
			Subdomain:                     vmi.Spec.Subdomain,
			SecurityContext:               podSecurity,
			ReadinessGates:                []corev1.PodReadinessGate{{ConditionType: v1.VirtualMachineUnpausedPodCondition}},
			Containers: []corev1.Container{{
				Name:            LauncherContainerName,
				Image:           cfg.Image,
				ImagePullPolicy: corev1.PullIfNotPresent,
				Args:            LauncherArgs(port, cfg.ControlLoopback),
				Env: []corev1.EnvVar{
					{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
					{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
					{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
				},
				Ports:                    []corev1.ContainerPort{{Name: "control", ContainerPort: int32(port), Protocol: corev1.ProtocolTCP}},
				Resources:                corev1.ResourceRequirements{Requests: requests, Limits: limits},
				TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
				SecurityContext: &corev1.SecurityContext{
					Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN", "NET_RAW"}},
				},
				VolumeMounts: []corev1.VolumeMount{
					{Name: "vmi", MountPath: "/var/run/kvirt/vmi.json", SubPath: "vmi.json", ReadOnly: true},
					{Name: "token", MountPath: "/var/run/kvirt/secret", ReadOnly: true},
				},
			}},
			Volumes: []corev1.Volume{
				{Name: "vmi", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
					Items: []corev1.DownwardAPIVolumeFile{{Path: "vmi.json", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations['" + VMIAnnotation + "']"}}},
				}}},
				{Name: "token", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: TokenSecretName(vmi.Name)}}},
			},
		},
	}
	addContainerDisks(pod, vmi, cfg.Image) // controller/poddisks.go
	addAccessCredentials(pod, vmi)         // controller/accesscreds.go
	addPodVolumes(pod, persistent)         // controller/podvolumes.go
	return pod, nil
}
