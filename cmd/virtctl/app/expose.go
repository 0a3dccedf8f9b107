package app

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"

	v1 "github.com/kvirt/kvirt/api/v1"
)

// ExposeOptions are the flags of `virtctl expose`.
type ExposeOptions struct {
	ServiceName, TargetPort, Type, Protocol, PortName, ClusterIP, ExternalIP string
	IPFamily, IPFamilyPolicy                                                 string
	Port, NodePort                                                           int32
}

// Kinds `virtctl expose` accepts besides vm and vmi (resourceKind). kvirt serves no
// VirtualMachineInstanceReplicaSet; expose reads one untyped where a cluster serves it.
const kindReplicaSet = "vmirs"

var (
	replicaSetResource = v1.GroupVersion.WithResource("virtualmachineinstancereplicasets")
	replicaSetKind     = v1.GroupVersion.WithKind("VirtualMachineInstanceReplicaSet")
)

// exposeKind normalises expose's first argument: vm, vmi or vmirs, in any of KubeVirt's spellings.
func exposeKind(arg string) (string, error) {
	switch strings.ToLower(arg) {
	case "vmirs", "vmirss", "virtualmachineinstancereplicaset", "virtualmachineinstancereplicasets":
		return kindReplicaSet, nil
	}
	if kind, err := resourceKind(arg); err == nil {
		return kind, nil
	}
	return "", fmt.Errorf("unsupported resource type: %s", strings.ToLower(arg))
}

// Exposed is what a Service is made from: the object it belongs to, the pod selector, and the ports the
// object declares on its pod-network interface (used when --port is not given).
type Exposed struct {
	Owner    metav1.OwnerReference
	Selector map[string]string
	Ports    []corev1.ServicePort
}

// VirtualMachineInstanceID is the value of a launcher pod's vmi.kubevirt.io/id label for a VMI name:
// the name itself when it fits a label value (63 characters), else KubeVirt's shortening, the first 54
// characters, "-" and the first 8 hex digits of the name's SHA-1 (v1.NameLabelValue, which the controller
// puts on launcher pods).
func VirtualMachineInstanceID(name string) string { return v1.NameLabelValue(name) }

// owner is the owner reference of the Service to obj: a controller reference, as KubeVirt sets, that does
// not block the owner's deletion (blocking would need update on the owner's finalizers).
func owner(obj metav1.Object, gvk schema.GroupVersionKind) metav1.OwnerReference {
	ref := *metav1.NewControllerRef(obj, gvk)
	no := false
	ref.BlockOwnerDeletion = &no
	return ref
}

// ExposedVM selects the launcher pod of every VMI the VM runs (a VM's VMI has its name) and offers the
// ports of the VM's template.
func ExposedVM(vm *v1.VirtualMachine) Exposed {
	x := Exposed{
		Owner:    owner(vm, v1.VirtualMachineGroupVersionKind),
		Selector: map[string]string{v1.VirtualMachineInstanceIDLabel: VirtualMachineInstanceID(vm.Name)},
	}
	if vm.Spec.Template != nil {
		x.Ports = DeclaredPorts(&vm.Spec.Template.Spec)
	}
	return x
}

// ExposedVMI selects the VMI's launcher pod and offers the VMI's ports.
func ExposedVMI(vmi *v1.VirtualMachineInstance) Exposed {
	return Exposed{
		Owner:    owner(vmi, v1.VirtualMachineInstanceGroupVersionKind),
		Selector: map[string]string{v1.VirtualMachineInstanceIDLabel: VirtualMachineInstanceID(vmi.Name)},
		Ports:    DeclaredPorts(&vmi.Spec),
	}
}

// ExposedReplicaSet selects by the replica set's matchLabels (launcher pods carry their VMI's labels)
// and offers its template's ports. A selector a Service cannot express is refused with KubeVirt's texts.
func ExposedReplicaSet(rs *unstructured.Unstructured) (Exposed, error) {
	var spec struct {
		Selector *metav1.LabelSelector                  `json:"selector"`
		Template *v1.VirtualMachineInstanceTemplateSpec `json:"template"`
	}
	if raw, ok := rs.Object["spec"].(map[string]any); ok {
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(raw, &spec); err != nil {
			return Exposed{}, fmt.Errorf("error reading VirtualMachineInstanceReplicaSet %s: %v", rs.GetName(), err)
		}
	}
	if spec.Selector == nil || len(spec.Selector.MatchLabels) == 0 {
		return Exposed{}, errors.New("cannot expose VirtualMachineInstanceReplicaSet without any selector labels")
	}
	if len(spec.Selector.MatchExpressions) > 0 {
		return Exposed{}, errors.New("cannot expose VirtualMachineInstanceReplicaSet with match expressions")
	}
	x := Exposed{Owner: owner(rs, replicaSetKind), Selector: spec.Selector.MatchLabels}
	if spec.Template != nil {
		x.Ports = DeclaredPorts(&spec.Template.Spec)
	}
	return x, nil
}

// DeclaredPorts are the `ports` of the interface attached to the first pod network, as Service ports
// port-1, port-2, … (the protocol as declared; the apiserver defaults an empty one to TCP). None when
// there is no pod network or its interface lists no ports.
func DeclaredPorts(spec *v1.VirtualMachineInstanceSpec) []corev1.ServicePort {
	network := ""
	for _, n := range spec.Networks {
		if n.Pod != nil {
			network = n.Name
			break
		}
	}
	if network == "" {
		return nil
	}
	for _, iface := range spec.Domain.Devices.Interfaces {
		if iface.Name != network {
			continue
		}
		var ports []corev1.ServicePort
		for i, p := range iface.Ports {
			ports = append(ports, corev1.ServicePort{Name: fmt.Sprintf("port-%d", i+1), Protocol: corev1.Protocol(p.Protocol), Port: p.Port})
		}
		return ports
	}
	return nil
}

// serviceFlags are the ExposeOptions that need parsing, checked before virtctl connects.
type serviceFlags struct {
	protocol corev1.Protocol
	typ      corev1.ServiceType
	families []corev1.IPFamily
	policy   corev1.IPFamilyPolicy
}

// parse checks the flags as KubeVirt does (names case-insensitive, its error texts) plus kvirt's
// --node-port, which KubeVirt no longer has.
func (o ExposeOptions) parse() (serviceFlags, error) {
	var f serviceFlags
	var ok bool
	if f.protocol, ok = oneOf(o.Protocol, corev1.ProtocolTCP, corev1.ProtocolUDP); !ok {
		return f, fmt.Errorf("unknown protocol: %s", o.Protocol)
	}
	if strings.EqualFold(o.Type, string(corev1.ServiceTypeExternalName)) {
		return f, fmt.Errorf("type: %s not supported", o.Type)
	}
	if f.typ, ok = oneOf(o.Type, corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer); !ok {
		return f, fmt.Errorf("unknown service type: %s", o.Type)
	}
	switch strings.ToLower(o.IPFamily) {
	case "":
	case "ipv4":
		f.families = []corev1.IPFamily{corev1.IPv4Protocol}
	case "ipv6":
		f.families = []corev1.IPFamily{corev1.IPv6Protocol}
	case "ipv4,ipv6":
		f.families = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
	case "ipv6,ipv4":
		f.families = []corev1.IPFamily{corev1.IPv6Protocol, corev1.IPv4Protocol}
	default:
		return f, fmt.Errorf("unknown IPFamily/s: %s", o.IPFamily)
	}
	if o.IPFamilyPolicy == "" {
		if len(f.families) > 1 {
			f.policy = corev1.IPFamilyPolicyPreferDualStack
		}
	} else if f.policy, ok = oneOf(o.IPFamilyPolicy, corev1.IPFamilyPolicySingleStack,
		corev1.IPFamilyPolicyPreferDualStack, corev1.IPFamilyPolicyRequireDualStack); !ok {
		return f, fmt.Errorf("unknown IPFamilyPolicy/s: %s", o.IPFamilyPolicy)
	}
	if o.NodePort != 0 {
		if o.Port == 0 {
			return f, errors.New("--node-port needs --port")
		}
		if f.typ == corev1.ServiceTypeClusterIP {
			return f, errors.New("--node-port needs --type=NodePort or LoadBalancer")
		}
	}
	return f, nil
}

// oneOf returns the value among choices that s names, ignoring case.
func oneOf[T ~string](s string, choices ...T) (T, bool) {
	for _, c := range choices {
		if strings.EqualFold(s, string(c)) {
			return c, true
		}
	}
	return "", false
}

// ExposeService renders the Service for x: the port from --port, or else every port x declares; without
// either, KubeVirt's "couldn't find port via --port flag or introspection". Port numbers are left to the
// apiserver's validation, as KubeVirt does.
func ExposeService(namespace string, x Exposed, o ExposeOptions) (*corev1.Service, error) {
	f, err := o.parse()
	if err != nil {
		return nil, err
	}
	ports := x.Ports
	if o.Port != 0 {
		target := intstr.FromInt32(o.Port)
		if o.TargetPort != "" {
			target = intstr.Parse(o.TargetPort)
		}
		ports = []corev1.ServicePort{{Name: o.PortName, Protocol: f.protocol, Port: o.Port, TargetPort: target, NodePort: o.NodePort}}
	}
	if len(ports) == 0 {
		return nil, errors.New("couldn't find port via --port flag or introspection")
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: o.ServiceName, Namespace: namespace, OwnerReferences: []metav1.OwnerReference{x.Owner}},
		Spec: corev1.ServiceSpec{
			Ports:      ports,
			Selector:   x.Selector,
			ClusterIP:  o.ClusterIP,
			Type:       f.typ,
			IPFamilies: f.families,
		},
	}
	if o.ExternalIP != "" {
		svc.Spec.ExternalIPs = []string{o.ExternalIP}
	}
	if f.policy != "" {
		svc.Spec.IPFamilyPolicy = &f.policy
	}
	return svc, nil
}

func newExposeCommand(e *env) *cobra.Command {
	var o ExposeOptions
	cmd := &cobra.Command{
		Use:   "expose vm|vmi|vmirs NAME --name SERVICE",
		Short: "Expose a virtual machine instance, virtual machine, or virtual machine instance replica set as a new service.",
		Long: `Creates a Service owned by a virtual machine, virtual machine instance or virtual machine instance
replica set (deleting that object deletes the Service). A virtual machine's Service selects the launcher
pod of every instance it runs, so it survives restarts; a replica set's selects by its matchLabels.
Without --port the Service gets every port the pod-network interface declares (ports: in the template).

Possible types are (case insensitive, both single and plural forms):

virtualmachineinstance (vmi), virtualmachine (vm), virtualmachineinstancereplicaset (vmirs)`,
		Example: e.example("# Expose SSH of a virtual machine called 'myvm' on each node through a NodePort service:",
			"{{virtctl}} expose vm myvm --port=22 --name=myvm-ssh --type=NodePort",
			"",
			"# Expose every port the pod-network interface of 'myvm' declares:",
			"{{virtctl}} expose vm myvm --name=myvm-service",
			"",
			"# Expose port 8080 of the guest as port 80, over IPv4 and IPv6:",
			"{{virtctl}} expose vmi myvm --port=80 --target-port=8080 --name=myvm-http --ip-family=IPv4,IPv6"),
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: e.completeKindName("vm", "vmi"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := o.parse(); err != nil {
				return err
			}
			kind, err := exposeKind(args[0])
			if err != nil {
				return err
			}
			return e.expose(cmd.Context(), kind, strings.ToLower(args[0]), args[1], o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.ServiceName, "name", "", "Name of the service created for the exposure of the VM.")
	f.Int32Var(&o.Port, "port", 0, "The port that the service should serve on. Optional: without it, the ports the VM declares.")
	f.StringVar(&o.TargetPort, "target-port", "", "Name or number for the port on the VM that the service should direct traffic to. Optional.")
	f.StringVar(&o.Type, "type", "ClusterIP", "Type for this service: ClusterIP, NodePort, or LoadBalancer.")
	f.StringVar(&o.Protocol, "protocol", "TCP", "The network protocol for the service to be created.")
	f.Int32Var(&o.NodePort, "node-port", 0, "Port used to expose the service on each node in a cluster (with --port; kvirt only).")
	f.StringVar(&o.PortName, "port-name", "", "Name of the port. Optional.")
	f.StringVar(&o.ClusterIP, "cluster-ip", "", "ClusterIP to be assigned to the service. Leave empty to auto-allocate, or set to 'None' to create a headless service.")
	f.StringVar(&o.ExternalIP, "external-ip", "", "Additional external IP address (not managed by the cluster) to accept for the service.")
	f.StringVar(&o.IPFamily, "ip-family", "", "IP family over which the service will be exposed. Valid values are 'IPv4', 'IPv6', 'IPv4,IPv6' or 'IPv6,IPv4'")
	f.StringVar(&o.IPFamilyPolicy, "ip-family-policy", "", "IP family policy defines whether the service can use IPv4, IPv6, or both. Valid values are 'SingleStack', 'PreferDualStack' or 'RequireDualStack'")
	_ = cmd.MarkFlagRequired("name")
	return cmd
}

// expose reads the object (its fetch error is KubeVirt's), renders the Service and creates it. typed is
// the type as the user wrote it, lower-cased, for the success message.
func (e *env) expose(ctx context.Context, kind, typed, name string, o ExposeOptions) error {
	c, err := e.connect()
	if err != nil {
		return err
	}
	var x Exposed
	switch kind {
	case "vm":
		vm, err := c.Kubevirt.KubevirtV1().VirtualMachines(c.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("error fetching VirtualMachine: %v", err)
		}
		x = ExposedVM(vm)
	case "vmi":
		vmi, err := c.Kubevirt.KubevirtV1().VirtualMachineInstances(c.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("error fetching VirtualMachineInstance: %v", err)
		}
		x = ExposedVMI(vmi)
	case kindReplicaSet:
		if c.Dynamic == nil {
			return errors.New("error fetching VirtualMachineInstanceReplicaSet: no dynamic client (Clients.Dynamic)")
		}
		rs, err := c.Dynamic.Resource(replicaSetResource).Namespace(c.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			if resourceNotServed(err) {
				return fmt.Errorf("error fetching VirtualMachineInstanceReplicaSet: %v (kvirt does not serve VirtualMachineInstanceReplicaSets)", err)
			}
			return fmt.Errorf("error fetching VirtualMachineInstanceReplicaSet: %v", err)
		}
		if x, err = ExposedReplicaSet(rs); err != nil {
			return err
		}
	}
	svc, err := ExposeService(c.Namespace, x, o)
	if err != nil {
		return err
	}
	if _, err := c.Kube.CoreV1().Services(c.Namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("service creation failed: %v", err)
	}
	fmt.Fprintf(e.Out, "Service %s successfully created for %s %s\n", o.ServiceName, typed, name)
	return nil
}

// resourceNotServed tells a 404 for the resource type (the API serves no such resource) from one for
// the object, which names it.
func resourceNotServed(err error) bool {
	var se apierrors.APIStatus
	if !apierrors.IsNotFound(err) || !errors.As(err, &se) {
		return false
	}
	d := se.Status().Details
	return d == nil || d.Name == ""
}
