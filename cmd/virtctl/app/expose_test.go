package app

import (
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	v1 "github.com/kvirt/kvirt/api/v1"
)

// Flags as KubeVirt parses them: names case-insensitive, its error texts, a dual-stack family list
// defaulting the policy to PreferDualStack.
func TestExposeFlags(t *testing.T) {
	base := ExposeOptions{ServiceName: "s", Type: "ClusterIP", Protocol: "TCP"}
	with := func(f func(*ExposeOptions)) ExposeOptions { o := base; f(&o); return o }
	for _, tc := range []struct {
		name string
		o    ExposeOptions
		want serviceFlags
		err  string
	}{
		{"defaults", base, serviceFlags{protocol: "TCP", typ: "ClusterIP"}, ""},
		{"case-insensitive", with(func(o *ExposeOptions) { o.Protocol, o.Type = "udp", "nodeport" }), serviceFlags{protocol: "UDP", typ: "NodePort"}, ""},
		{"load balancer", with(func(o *ExposeOptions) { o.Type = "LoadBalancer" }), serviceFlags{protocol: "TCP", typ: "LoadBalancer"}, ""},
		{"SCTP unknown", with(func(o *ExposeOptions) { o.Protocol = "SCTP" }), serviceFlags{}, "unknown protocol: SCTP"},
		{"protocol unknown", with(func(o *ExposeOptions) { o.Protocol = "madeup" }), serviceFlags{}, "unknown protocol: madeup"},
		{"ExternalName", with(func(o *ExposeOptions) { o.Type = "externalname" }), serviceFlags{}, "type: externalname not supported"},
		{"type unknown", with(func(o *ExposeOptions) { o.Type = "madeup" }), serviceFlags{}, "unknown service type: madeup"},
		{"IPv4", with(func(o *ExposeOptions) { o.IPFamily = "ipv4" }),
			serviceFlags{protocol: "TCP", typ: "ClusterIP", families: []corev1.IPFamily{"IPv4"}}, ""},
		{"IPv6 single stack", with(func(o *ExposeOptions) { o.IPFamily, o.IPFamilyPolicy = "IPv6", "singlestack" }),
			serviceFlags{protocol: "TCP", typ: "ClusterIP", families: []corev1.IPFamily{"IPv6"}, policy: "SingleStack"}, ""},
		{"dual stack defaults the policy", with(func(o *ExposeOptions) { o.IPFamily = "IPv6,IPv4" }),
			serviceFlags{protocol: "TCP", typ: "ClusterIP", families: []corev1.IPFamily{"IPv6", "IPv4"}, policy: "PreferDualStack"}, ""},
		{"dual stack required", with(func(o *ExposeOptions) { o.IPFamily, o.IPFamilyPolicy = "IPv4,IPv6", "RequireDualStack" }),
			serviceFlags{protocol: "TCP", typ: "ClusterIP", families: []corev1.IPFamily{"IPv4", "IPv6"}, policy: "RequireDualStack"}, ""},
		{"policy without families", with(func(o *ExposeOptions) { o.IPFamilyPolicy = "PreferDualStack" }),
			serviceFlags{protocol: "TCP", typ: "ClusterIP", policy: "PreferDualStack"}, ""},
		{"family unknown", with(func(o *ExposeOptions) { o.IPFamily = "IPv4, IPv6" }), serviceFlags{}, "unknown IPFamily/s: IPv4, IPv6"},
		{"policy unknown", with(func(o *ExposeOptions) { o.IPFamilyPolicy = "madeup" }), serviceFlags{}, "unknown IPFamilyPolicy/s: madeup"},
		{"node port without port", with(func(o *ExposeOptions) { o.NodePort, o.Type = 30001, "NodePort" }), serviceFlags{}, "--node-port needs --port"},
		{"node port on ClusterIP", with(func(o *ExposeOptions) { o.NodePort, o.Port = 30001, 22 }), serviceFlags{}, "--node-port needs --type=NodePort or LoadBalancer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.o.parse()
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func podNetSpec(ifaces []v1.Interface, networks ...v1.Network) v1.VirtualMachineInstanceSpec {
	var s v1.VirtualMachineInstanceSpec
	s.Domain.Devices.Interfaces = ifaces
	s.Networks = networks
	return s
}

// The ports of the interface on the (first) pod network become port-1, port-2, …; nothing else counts.
func TestDeclaredPorts(t *testing.T) {
	web := []v1.Port{{Port: 80}, {Name: "dns", Protocol: "UDP", Port: 53}}
	pod := v1.Network{Name: "default", Pod: &v1.PodNetwork{}}
	for _, tc := range []struct {
		name string
		spec v1.VirtualMachineInstanceSpec
		want []corev1.ServicePort
	}{
		{"no networks", podNetSpec([]v1.Interface{{Name: "default", Ports: web}}), nil},
		{"pod network ports", podNetSpec([]v1.Interface{{Name: "default", Ports: web}}, pod),
			[]corev1.ServicePort{{Name: "port-1", Port: 80}, {Name: "port-2", Protocol: "UDP", Port: 53}}},
		{"pod network without ports", podNetSpec([]v1.Interface{{Name: "default"}}, pod), nil},
		{"pod network without interface", podNetSpec([]v1.Interface{{Name: "other", Ports: web}}, pod), nil},
		{"only the pod network's interface", podNetSpec(
			[]v1.Interface{{Name: "multus", Ports: []v1.Port{{Port: 1}}}, {Name: "default", Ports: web[:1]}},
			v1.Network{Name: "multus"}, pod),
			[]corev1.ServicePort{{Name: "port-1", Port: 80}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := DeclaredPorts(&tc.spec); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// Names that fit a label value are their own ID; longer ones are shortened with a hash, as KubeVirt
// labels its launcher pods (values pinned from sha1sum).
func TestVirtualMachineInstanceID(t *testing.T) {
	long := "vm-" + strings.Repeat("abcdefghij", 7)
	for _, tc := range []struct{ name, want string }{
		{"my-vm", "my-vm"},
		{strings.Repeat("a", 63), strings.Repeat("a", 63)},
		{strings.Repeat("a", 64), strings.Repeat("a", 54) + "-0098ba82"},
		{long, long[:54] + "-689ecff3"},
	} {
		got := VirtualMachineInstanceID(tc.name)
		if got != tc.want || len(got) > 63 {
			t.Errorf("ID(%q) = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// The Service for a VM, VMI or replica set: its owner, its selector, and the port from --port or else
// the declared ones.
func TestExposeService(t *testing.T) {
	f := false
	tmpl := podNetSpec([]v1.Interface{{Name: "default", Ports: []v1.Port{{Port: 22}, {Port: 53, Protocol: "UDP"}}}},
		v1.Network{Name: "default", Pod: &v1.PodNetwork{}})
	vm := &v1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: "web", UID: "vm-uid"},
		Spec: v1.VirtualMachineSpec{Template: &v1.VirtualMachineInstanceTemplateSpec{Spec: tmpl}}}
	vmi := &v1.VirtualMachineInstance{ObjectMeta: metav1.ObjectMeta{Name: "web", UID: "vmi-uid"}}
	rs := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceReplicaSet",
		"metadata": map[string]any{"name": "pool", "uid": "rs-uid"},
		"spec": map[string]any{
			"selector": map[string]any{"matchLabels": map[string]any{"app": "pool"}},
			"template": map[string]any{"spec": map[string]any{
				"networks": []any{map[string]any{"name": "default", "pod": map[string]any{}}},
				"domain": map[string]any{"devices": map[string]any{"interfaces": []any{
					map[string]any{"name": "default", "masquerade": map[string]any{}, "ports": []any{map[string]any{"port": int64(8080)}}}}}},
			}},
		},
	}}
	xrs, err := ExposedReplicaSet(rs)
	if err != nil {
		t.Fatal(err)
	}
	ref := func(kind, name string, uid types.UID) metav1.OwnerReference {
		tr := true
		return metav1.OwnerReference{APIVersion: "kubevirt.io/v1", Kind: kind, Name: name, UID: uid, Controller: &tr, BlockOwnerDeletion: &f}
	}
	base := ExposeOptions{ServiceName: "svc", Type: "ClusterIP", Protocol: "TCP"}
	for _, tc := range []struct {
		name     string
		x        Exposed
		o        func(*ExposeOptions)
		owner    metav1.OwnerReference
		selector map[string]string
		ports    []corev1.ServicePort
		err      string
	}{
		{"vm declared ports", ExposedVM(vm), nil, ref("VirtualMachine", "web", "vm-uid"),
			map[string]string{v1.VirtualMachineInstanceIDLabel: "web"},
			[]corev1.ServicePort{{Name: "port-1", Port: 22}, {Name: "port-2", Protocol: "UDP", Port: 53}}, ""},
		{"--port wins over declared", ExposedVM(vm), func(o *ExposeOptions) { o.Port, o.TargetPort, o.PortName, o.Protocol = 2222, "ssh", "p", "udp" },
			ref("VirtualMachine", "web", "vm-uid"), map[string]string{v1.VirtualMachineInstanceIDLabel: "web"},
			[]corev1.ServicePort{{Name: "p", Protocol: "UDP", Port: 2222, TargetPort: intstr.FromString("ssh")}}, ""},
		{"vmi --port", ExposedVMI(vmi), func(o *ExposeOptions) { o.Port = 80 }, ref("VirtualMachineInstance", "web", "vmi-uid"),
			map[string]string{v1.VirtualMachineInstanceIDLabel: "web"},
			[]corev1.ServicePort{{Protocol: "TCP", Port: 80, TargetPort: intstr.FromInt32(80)}}, ""},
		{"vmi without ports", ExposedVMI(vmi), nil, metav1.OwnerReference{}, nil, nil, "couldn't find port via --port flag or introspection"},
		{"replica set", xrs, nil, ref("VirtualMachineInstanceReplicaSet", "pool", "rs-uid"), map[string]string{"app": "pool"},
			[]corev1.ServicePort{{Name: "port-1", Port: 8080}}, ""},
		{"node port", ExposedVM(vm), func(o *ExposeOptions) { o.Port, o.NodePort, o.Type = 22, 30022, "NodePort" },
			ref("VirtualMachine", "web", "vm-uid"), map[string]string{v1.VirtualMachineInstanceIDLabel: "web"},
			[]corev1.ServicePort{{Protocol: "TCP", Port: 22, TargetPort: intstr.FromInt32(22), NodePort: 30022}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := base
			if tc.o != nil {
				tc.o(&o)
			}
			svc, err := ExposeService("ns", tc.x, o)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if svc.Name != "svc" || svc.Namespace != "ns" || !reflect.DeepEqual(svc.OwnerReferences, []metav1.OwnerReference{tc.owner}) {
				t.Errorf("metadata %+v, want owner %+v", svc.ObjectMeta, tc.owner)
			}
			if !reflect.DeepEqual(svc.Spec.Selector, tc.selector) || !reflect.DeepEqual(svc.Spec.Ports, tc.ports) {
				t.Errorf("selector %v ports %+v; want %v %+v", svc.Spec.Selector, svc.Spec.Ports, tc.selector, tc.ports)
			}
		})
	}

	o := base
	o.Port, o.IPFamily, o.ExternalIP, o.ClusterIP = 80, "IPv4,IPv6", "192.0.2.7", "None"
	svc, err := ExposeService("ns", ExposedVMI(vmi), o)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(svc.Spec.IPFamilies, []corev1.IPFamily{"IPv4", "IPv6"}) || svc.Spec.IPFamilyPolicy == nil ||
		*svc.Spec.IPFamilyPolicy != "PreferDualStack" || !reflect.DeepEqual(svc.Spec.ExternalIPs, []string{"192.0.2.7"}) ||
		svc.Spec.ClusterIP != "None" {
		t.Errorf("spec %+v", svc.Spec)
	}
	svc, _ = ExposeService("ns", ExposedVMI(vmi), ExposeOptions{ServiceName: "s", Type: "ClusterIP", Protocol: "TCP", Port: 1})
	if svc.Spec.IPFamilies != nil || svc.Spec.IPFamilyPolicy != nil || svc.Spec.ExternalIPs != nil {
		t.Errorf("no IP flags, spec %+v", svc.Spec)
	}
}

// A replica set whose selector a Service cannot express is refused with KubeVirt's texts.
func TestExposedReplicaSetSelector(t *testing.T) {
	for _, tc := range []struct {
		name     string
		selector any
		err      string
	}{
		{"no selector", nil, "cannot expose VirtualMachineInstanceReplicaSet without any selector labels"},
		{"expressions only", map[string]any{"matchExpressions": []any{map[string]any{"key": "a", "operator": "Exists"}}},
			"cannot expose VirtualMachineInstanceReplicaSet without any selector labels"},
		{"labels and expressions", map[string]any{"matchLabels": map[string]any{"a": "b"},
			"matchExpressions": []any{map[string]any{"key": "a", "operator": "Exists"}}},
			"cannot expose VirtualMachineInstanceReplicaSet with match expressions"},
	} {
		spec := map[string]any{}
		if tc.selector != nil {
			spec["selector"] = tc.selector
		}
		rs := &unstructured.Unstructured{Object: map[string]any{"metadata": map[string]any{"name": "rs"}, "spec": spec}}
		if _, err := ExposedReplicaSet(rs); err == nil || err.Error() != tc.err {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.err)
		}
	}
}
