package integration_test

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/cmd/virtctl/app"
	"github.com/kvirt/kvirt/tests/testenv"
)

// gcTimeout bounds how long kube-controller-manager's garbage collector may take to delete a Service
// whose owner is gone (it acts on the owner's delete event; the bound is for a loaded CI machine).
const gcTimeout = 60 * time.Second

// serviceGone waits until the garbage collector has deleted Service name.
func (c *cluster) serviceGone(name string) {
	c.t.Helper()
	testenv.Eventually(c.t, "Service "+name+" deleted by the garbage collector", gcTimeout, func() (bool, string) {
		svc, err := c.kube.CoreV1().Services(c.ns).Get(context.Background(), name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, ""
		}
		if err != nil {
			return false, err.Error()
		}
		var owners []string
		for _, r := range svc.OwnerReferences {
			owners = append(owners, r.Kind+"/"+r.Name)
		}
		return false, "still there, owned by " + strings.Join(owners, ",")
	})
}

func (c *cluster) service(name string) *corev1.Service {
	c.t.Helper()
	svc, err := c.kube.CoreV1().Services(c.ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		c.t.Fatalf("get Service %s: %v", name, err)
	}
	return svc
}

// controllerRef is the owner reference virtctl expose must set: KubeVirt's controller reference that does
// not block the owner's deletion.
func controllerRef(kind, name string, uid types.UID) []metav1.OwnerReference {
	t, f := true, false
	return []metav1.OwnerReference{{APIVersion: "kubevirt.io/v1", Kind: kind, Name: name, UID: uid, Controller: &t, BlockOwnerDeletion: &f}}
}

// Without --port the Service takes the ports the pod-network interface declares; it is owned by the VM
// or VMI, and deleting that lets the garbage collector delete the Service.
func TestExposeDeclaredPortsAndOwner(t *testing.T) {
	c := setup(t)
	ctx := context.Background()
	vm := &v1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: v1.VirtualMachineSpec{Template: template()}}
	halted := v1.RunStrategyHalted
	vm.Spec.RunStrategy = &halted
	vm.Spec.Template.Spec.Networks = []v1.Network{{Name: "default", Pod: &v1.PodNetwork{}}}
	vm.Spec.Template.Spec.Domain.Devices.Interfaces = []v1.Interface{{Name: "default", Masquerade: &v1.InterfaceMasquerade{},
		Ports: []v1.Port{{Name: "ssh", Port: 22}, {Port: 53, Protocol: "UDP"}}}}
	vm, err := c.kv.KubevirtV1().VirtualMachines(c.ns).Create(ctx, vm, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	code, out, errOut := c.virtctl(nil, "expose", "vm", "web", "--name", "web-svc")
	if code != 0 || out != "Service web-svc successfully created for vm web\n" || errOut != "" {
		t.Fatalf("expose vm without --port: %d %q %q", code, out, errOut)
	}
	svc := c.service("web-svc")
	wantPorts := []corev1.ServicePort{
		{Name: "port-1", Protocol: corev1.ProtocolTCP, Port: 22, TargetPort: intstr.FromInt32(22)},
		{Name: "port-2", Protocol: corev1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(53)},
	}
	if !reflect.DeepEqual(svc.Spec.Ports, wantPorts) {
		t.Errorf("ports %+v, want %+v", svc.Spec.Ports, wantPorts)
	}
	if want := map[string]string{v1.VirtualMachineInstanceIDLabel: "web"}; !reflect.DeepEqual(svc.Spec.Selector, want) {
		t.Errorf("selector %v, want %v", svc.Spec.Selector, want)
	}
	if want := controllerRef("VirtualMachine", "web", vm.UID); !reflect.DeepEqual(svc.OwnerReferences, want) {
		t.Errorf("owner references %+v, want %+v", svc.OwnerReferences, want)
	}

	// A VMI declaring no ports needs --port; with it, the VMI owns the Service.
	vmi := c.createVMI("solo", v1.Running)
	code, out, errOut = c.virtctl(nil, "expose", "vmi", "solo", "--name", "solo-http")
	if code != 1 || out != "" || errOut != "couldn't find port via --port flag or introspection\n" {
		t.Errorf("expose vmi without ports: %d %q %q", code, out, errOut)
	}
	if code, out, errOut = c.virtctl(nil, "expose", "vmi", "solo", "--name", "solo-http", "--port", "80"); code != 0 ||
		out != "Service solo-http successfully created for vmi solo\n" {
		t.Fatalf("expose vmi: %d %q %q", code, out, errOut)
	}
	if got, want := c.service("solo-http").OwnerReferences, controllerRef("VirtualMachineInstance", "solo", vmi.UID); !reflect.DeepEqual(got, want) {
		t.Errorf("VMI Service owner references %+v, want %+v", got, want)
	}

	if err := c.kv.KubevirtV1().VirtualMachines(c.ns).Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	c.serviceGone("web-svc")
	if err := c.kv.KubevirtV1().VirtualMachineInstances(c.ns).Delete(ctx, "solo", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	c.serviceGone("solo-http")
}

// A VM name too long for a label value gets KubeVirt's shortened vmi.kubevirt.io/id in the selector, which
// the apiserver accepts (the raw name it would refuse).
func TestExposeLongName(t *testing.T) {
	c := setup(t)
	name := "vm-" + strings.Repeat("longname-", 7) + "x" // 67 characters
	c.createVM(name, "Halted")
	if code, out, errOut := c.virtctl(nil, "expose", "vm", name, "--name", "long", "--port", "22"); code != 0 ||
		out != "Service long successfully created for vm "+name+"\n" {
		t.Fatalf("expose: %d %q %q", code, out, errOut)
	}
	id := c.service("long").Spec.Selector[v1.VirtualMachineInstanceIDLabel]
	if id != app.VirtualMachineInstanceID(name) || len(id) != 63 || !strings.HasPrefix(name, id[:54]) {
		t.Errorf("selector value %q", id)
	}
}

// --ip-family and --ip-family-policy reach the Service; flag errors are KubeVirt's and come before any
// request; port numbers are the apiserver's to refuse.
func TestExposeFlagsReachTheService(t *testing.T) {
	c := setup(t)
	c.createVM("f", "Halted")
	code, out, errOut := c.virtctl(nil, "expose", "VirtualMachine", "f", "--name", "f-v4", "--port", "80",
		"--ip-family", "ipv4", "--ip-family-policy", "singlestack", "--type", "nodeport", "--protocol", "udp")
	if code != 0 || out != "Service f-v4 successfully created for virtualmachine f\n" {
		t.Fatalf("expose: %d %q %q", code, out, errOut)
	}
	svc := c.service("f-v4")
	if !reflect.DeepEqual(svc.Spec.IPFamilies, []corev1.IPFamily{corev1.IPv4Protocol}) || svc.Spec.IPFamilyPolicy == nil ||
		*svc.Spec.IPFamilyPolicy != corev1.IPFamilyPolicySingleStack || svc.Spec.Type != corev1.ServiceTypeNodePort ||
		svc.Spec.Ports[0].Protocol != corev1.ProtocolUDP {
		t.Errorf("spec %+v", svc.Spec)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--ip-family", "IPv5"}, "unknown IPFamily/s: IPv5\n"},
		{[]string{"--ip-family-policy", "Dual"}, "unknown IPFamilyPolicy/s: Dual\n"},
		{[]string{"--protocol", "SCTP"}, "unknown protocol: SCTP\n"},
		{[]string{"--type", "ExternalName"}, "type: ExternalName not supported\n"},
	} {
		args := append([]string{"expose", "vm", "f", "--name", "f-bad", "--port", "80"}, tc.args...)
		if code, out, errOut := c.virtctl(nil, args...); code != 1 || out != "" || errOut != tc.want {
			t.Errorf("%v: %d %q %q, want %q", tc.args, code, out, errOut, tc.want)
		}
	}
	code, _, errOut = c.virtctl(nil, "expose", "vm", "f", "--name", "f-bad", "--port", "70000")
	if code != 1 || !strings.HasPrefix(errOut, `service creation failed: Service "f-bad" is invalid: spec.ports[0].port: Invalid value: 70000`) {
		t.Errorf("port 70000: %d %q", code, errOut)
	}
}

// kvirt serves no VirtualMachineInstanceReplicaSet: expose vmirs gets the apiserver's answer in KubeVirt's
// words, and a note why.
func TestExposeReplicaSetNotServed(t *testing.T) {
	c := setup(t)
	code, out, errOut := c.virtctl(nil, "expose", "vmirs", "pool", "--name", "pool-http", "--port", "80")
	const want = "error fetching VirtualMachineInstanceReplicaSet: the server could not find the requested resource " +
		"(kvirt does not serve VirtualMachineInstanceReplicaSets)\n"
	if code != 1 || out != "" || errOut != want {
		t.Errorf("expose vmirs: %d %q %q, want %q", code, out, errOut, want)
	}
}
