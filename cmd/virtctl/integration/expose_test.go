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
	"github.com/kvirt/kvirt/tests/harness"
	"github.com/kvirt/kvirt/tests/testenv"
)

// gcTimeout bounds how long kube-controller-manager's garbage collector may take to delete a Service
// whose owner is gone. It includes the collector's discovery refresh (every 30 s), which must first see
// the CRDs installed after it started, and slack for a loaded CI machine.
const gcTimeout = 120 * time.Second

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

// createVMWithPorts creates a Halted VM whose pod-network interface declares ssh (22) and 53/UDP.
func (c *cluster) createVMWithPorts(name string) *v1.VirtualMachine {
	c.t.Helper()
	vm := &v1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.VirtualMachineSpec{Template: template()}}
	halted := v1.RunStrategyHalted
	vm.Spec.RunStrategy = &halted
	vm.Spec.Template.Spec.Networks = []v1.Network{{Name: "default", Pod: &v1.PodNetwork{}}}
	vm.Spec.Template.Spec.Domain.Devices.Interfaces = []v1.Interface{{Name: "default", Masquerade: &v1.InterfaceMasquerade{},
		Ports: []v1.Port{{Name: "ssh", Port: 22}, {Port: 53, Protocol: "UDP"}}}}
	vm, err := c.kv.KubevirtV1().VirtualMachines(c.ns).Create(context.Background(), vm, metav1.CreateOptions{})
	if err != nil {
		c.t.Fatalf("create VM %s: %v", name, err)
	}
	return vm
}

// Without --port the Service takes the ports the pod-network interface declares; it is owned by the VM
// or VMI it exposes.
func TestExposeDeclaredPortsAndOwner(t *testing.T) {
	c := setup(t)
	vm := c.createVMWithPorts("web")

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
}

// Deleting the VM or VMI a Service was exposed for deletes the Service: kube-controller-manager's garbage
// collector follows the owner reference. This test has a control plane of its own with the controller
// manager, whose pod GC would otherwise delete the other tests' launcher pods bound to "no-such-node".
func TestExposedServiceGoesWithItsOwner(t *testing.T) {
	cp := harness.StartControlPlane(t, harness.Options{ControllerManager: true})
	installCRDs(t, cp)
	c := newCluster(t, cp)
	ctx := context.Background()
	vm := c.createVMWithPorts("web")
	c.createVMI("solo", v1.Running)
	for _, args := range [][]string{
		{"expose", "vm", "web", "--name", "web-svc"},
		{"expose", "vmi", "solo", "--name", "solo-http", "--port", "80"},
	} {
		if code, _, errOut := c.virtctl(nil, args...); code != 0 {
			t.Fatalf("%v: %q", args, errOut)
		}
	}
	if got := c.service("web-svc").OwnerReferences; len(got) != 1 || got[0].UID != vm.UID {
		t.Fatalf("owner references %+v", got)
	}
	if err := c.kv.KubevirtV1().VirtualMachines(c.ns).Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	c.serviceGone("web-svc")
	// The VMI's Service is untouched by the VM's deletion, and goes with the VMI.
	c.service("solo-http")
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
	if code != 1 || !strings.HasPrefix(errOut, `service creation failed: Service "f-bad" is invalid: `) ||
		!strings.Contains(errOut, "spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535") {
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
