package harness

import (
	"bufio"
	"context"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestDesiredListeners(t *testing.T) {
	svcs := []any{
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "web"}, Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeNodePort, ClusterIP: "10.96.3.4",
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, NodePort: 30080}, {Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}},
		}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "headless"}, Spec: corev1.ServiceSpec{ClusterIP: "None", Ports: []corev1.ServicePort{{Port: 1}}}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "ext"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "x"}},
	}
	got := desiredListeners(svcs)
	web := target{ns: "a", svc: "web", portName: "http"}
	want := map[string]target{"10.96.3.4:80": web, "127.0.0.1:30080": web, BridgeAddress + ":30080": web}
	if len(got) != len(want) {
		t.Fatalf("listeners %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s -> %v, want %v", k, got[k], v)
		}
	}
}

func TestReadyEndpoints(t *testing.T) {
	yes, no := true, false
	name, other, port, port2 := "http", "metrics", int32(8080), int32(9090)
	es := &discoveryv1.EndpointSlice{
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port}, {Name: &other, Port: &port2}},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.244.0.9"}, Conditions: discoveryv1.EndpointConditions{Ready: &yes}},
			{Addresses: []string{"10.244.0.7"}, Conditions: discoveryv1.EndpointConditions{Ready: &no}},
			{Addresses: []string{"10.244.0.8"}},
		},
	}
	got := readyEndpoints([]any{es}, "http")
	if len(got) != 2 || got[0] != "10.244.0.8:8080" || got[1] != "10.244.0.9:8080" {
		t.Fatalf("ready endpoints %v, want the ready and unknown ones on 8080", got)
	}
	if got := readyEndpoints([]any{es}, "none"); len(got) != 0 {
		t.Fatalf("a port the slice does not have: %v", got)
	}
}

// A Service's ClusterIP (a loopback address here, so no route is needed) forwards to its endpoint.
func TestServeServicesForwards(t *testing.T) {
	backend, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	go func() {
		for {
			c, err := backend.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, "hello from the endpoint\n")
			c.Close()
		}
	}()
	bport := int32(backend.Addr().(*net.TCPAddr).Port)
	free, err := freePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	svcPort := int32(free[0])
	name := "p"
	client := fake.NewClientset(
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "svc"}, Spec: corev1.ServiceSpec{
			ClusterIP: "127.0.0.3", Ports: []corev1.ServicePort{{Name: name, Port: svcPort}},
		}},
		&discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: "svc-x", Labels: map[string]string{discoveryv1.LabelServiceName: "svc"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &bport}},
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"127.0.0.1"}}},
		},
	)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeServices(ctx, client, "127.0.0.1:1", io.Discard) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeServices: %v", err)
		}
	}()
	addr := net.JoinHostPort("127.0.0.3", strconv.Itoa(int(svcPort)))
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp4", addr, time.Second)
		if err == nil {
			line, rerr := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if rerr == nil && line == "hello from the endpoint\n" {
				return
			}
			err = rerr
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing forwarded through %s: %v", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
