package app

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	v1 "github.com/kvirt/kvirt/api/v1"
)

// ExposeOptions are the flags of `virtctl expose`.
type ExposeOptions struct {
	ServiceName, TargetPort, Type, Protocol, PortName, ClusterIP, ExternalIP string
	Port, NodePort                                                           int32
}

// ServiceSelector is the selector of a Service exposing a VM or VMI. It selects launcher pods by labels
// every launcher pod carries, so it keeps working across restarts: a VM's pods by vm.kubevirt.io/name
// (every VMI the VM ever creates), a VMI's by vmi.kubevirt.io/id (that VMI's name).
func ServiceSelector(kind, name string) map[string]string {
	if kind == "vm" {
		return map[string]string{v1.VirtualMachineNameLabel: name}
	}
	return map[string]string{v1.VirtualMachineInstanceIDLabel: name}
}

// ExposeService validates the flags and renders the Service; errors use KubeVirt's texts.
func ExposeService(namespace, kind, name string, o ExposeOptions) (*corev1.Service, error) {
	if o.ServiceName == "" {
		return nil, fmt.Errorf("required flag(s) \"name\" not set")
	}
	if o.Port <= 0 || o.Port > 65535 {
		return nil, fmt.Errorf("port must be between 1 and 65535, got %d (set --port)", o.Port)
	}
	var protocol corev1.Protocol
	switch o.Protocol {
	case "TCP":
		protocol = corev1.ProtocolTCP
	case "UDP":
		protocol = corev1.ProtocolUDP
	case "SCTP":
		protocol = corev1.ProtocolSCTP
	default:
		return nil, fmt.Errorf("unknown protocol: %s", o.Protocol)
	}
	var typ corev1.ServiceType
	switch o.Type {
	case "ClusterIP":
		typ = corev1.ServiceTypeClusterIP
	case "NodePort":
		typ = corev1.ServiceTypeNodePort
	case "LoadBalancer":
		typ = corev1.ServiceTypeLoadBalancer
	case "ExternalName":
		return nil, fmt.Errorf("type: %s not supported", o.Type)
	default:
		return nil, fmt.Errorf("unknown service type: %s", o.Type)
	}
	if o.NodePort != 0 && typ == corev1.ServiceTypeClusterIP {
		return nil, fmt.Errorf("--node-port needs --type=NodePort or LoadBalancer")
	}
	target := intstr.FromInt32(o.Port)
	if o.TargetPort != "" {
		target = intstr.Parse(o.TargetPort)
		if target.Type == intstr.Int && (target.IntVal <= 0 || target.IntVal > 65535) {
			return nil, fmt.Errorf("target port must be between 1 and 65535 or a port name, got %s", o.TargetPort)
		}
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: o.ServiceName, Namespace: namespace},
		Spec: corev1.ServiceSpec{
			Ports: []corev1.ServicePort{{
				Name: o.PortName, Protocol: protocol, Port: o.Port, TargetPort: target, NodePort: o.NodePort,
			}},
			Selector:  ServiceSelector(kind, name),
			ClusterIP: o.ClusterIP,
			Type:      typ,
		},
	}
	if o.ExternalIP != "" {
		svc.Spec.ExternalIPs = []string{o.ExternalIP}
	}
	return svc, nil
}

func newExposeCommand(e *env) *cobra.Command {
	var o ExposeOptions
	cmd := &cobra.Command{
		Use:   "expose vm|vmi NAME --name SERVICE --port PORT",
		Short: "Expose a virtual machine instance, virtual machine as a new service.",
		Long: `Creates a Service that selects the launcher pod of a virtual machine (every instance it runs, so the
Service survives restarts) or of one virtual machine instance.

Possible types are (case insensitive, both single and plural forms):

virtualmachineinstance (vmi), virtualmachine (vm)`,
		Example: e.example("# Expose SSH of a virtual machine called 'myvm' as port 5555, opening node port 30001:",
			"{{virtctl}} expose vm myvm --port=5555 --node-port=30001 --target-port=22 --name=myvm-ssh --type=NodePort"),
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: e.completeKindName("vm", "vmi"),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, err := resourceKind(args[0])
			if err != nil {
				return err
			}
			return e.expose(cmd.Context(), kind, args[0], args[1], o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.ServiceName, "name", "", "Name of the service created for the exposure of the VM.")
	f.Int32Var(&o.Port, "port", 0, "The port that the service should serve on.")
	f.StringVar(&o.TargetPort, "target-port", "", "Name or number for the port on the VM that the service should direct traffic to. Optional.")
	f.StringVar(&o.Type, "type", "ClusterIP", "Type for this service: ClusterIP, NodePort, or LoadBalancer.")
	f.StringVar(&o.Protocol, "protocol", "TCP", "The network protocol for the service to be created.")
	f.Int32Var(&o.NodePort, "node-port", 0, "Port used to expose the service on each node in a cluster.")
	f.StringVar(&o.PortName, "port-name", "", "Name of the port. Optional.")
	f.StringVar(&o.ClusterIP, "cluster-ip", "", "ClusterIP to be assigned to the service. Leave empty to auto-allocate, or set to 'None' to create a headless service.")
	f.StringVar(&o.ExternalIP, "external-ip", "", "Additional external IP address (not managed by the cluster) to accept for the service.")
	_ = cmd.MarkFlagRequired("name")
	_ = cmd.MarkFlagRequired("port")
	return cmd
}

func (e *env) expose(ctx context.Context, kind, typed, name string, o ExposeOptions) error {
	svc, err := ExposeService("", kind, name, o)
	if err != nil {
		return err
	}
	c, err := e.connect()
	if err != nil {
		return err
	}
	svc.Namespace = c.Namespace
	if kind == "vm" {
		if _, err := c.Kubevirt.KubevirtV1().VirtualMachines(c.Namespace).Get(ctx, name, metav1.GetOptions{}); err != nil {
			return fmt.Errorf("error fetching VirtualMachine: %v", err)
		}
	} else {
		if _, err := c.Kubevirt.KubevirtV1().VirtualMachineInstances(c.Namespace).Get(ctx, name, metav1.GetOptions{}); err != nil {
			return fmt.Errorf("error fetching VirtualMachineInstance: %v", err)
		}
	}
	if _, err := c.Kube.CoreV1().Services(c.Namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("service creation failed: %v", err)
	}
	fmt.Fprintf(e.Out, "Service %s successfully exposed for %s %s\n", o.ServiceName, typed, name)
	return nil
}
