package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/kvirt/kvirt/tests/testenv"
)

// fakeKubelet records registrations on kubelet.sock in dir.
type fakeKubelet struct {
	pluginapi.UnimplementedRegistrationServer
	mu   sync.Mutex
	regs []*pluginapi.RegisterRequest
}

func (k *fakeKubelet) Register(_ context.Context, r *pluginapi.RegisterRequest) (*pluginapi.Empty, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.regs = append(k.regs, r)
	return &pluginapi.Empty{}, nil
}

func (k *fakeKubelet) count(resource string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	n := 0
	for _, r := range k.regs {
		if r.ResourceName == resource {
			n++
		}
	}
	return n
}

func TestPluginRegistersServesAndReregisters(t *testing.T) {
	healthInterval = 50 * time.Millisecond
	dir := t.TempDir()
	devRoot := t.TempDir()
	if err := os.WriteFile(filepath.Join(devRoot, "kvm"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", filepath.Join(dir, "kubelet.sock"))
	if err != nil {
		t.Fatal(err)
	}
	kubelet := &fakeKubelet{}
	srv := grpc.NewServer()
	pluginapi.RegisterRegistrationServer(srv, kubelet)
	go srv.Serve(l)
	defer srv.Stop()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, dir, devRoot, 3, DefaultResources) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	testenv.Eventually(t, "both resources registered", 10*time.Second, func() (bool, string) {
		kvm, tun := kubelet.count("devices.kubevirt.io/kvm"), kubelet.count("devices.kubevirt.io/tun")
		return kvm == 1 && tun == 1, fmt.Sprintf("registrations: kvm %d, tun %d", kvm, tun)
	})
	kubelet.mu.Lock()
	for _, r := range kubelet.regs {
		if r.Version != pluginapi.Version {
			t.Errorf("registered version %q", r.Version)
		}
	}
	kubelet.mu.Unlock()

	conn, err := grpc.NewClient("unix://"+filepath.Join(dir, "kubevirt-kvm.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := pluginapi.NewDevicePluginClient(conn)
	lctx, lcancel := context.WithTimeout(ctx, 10*time.Second)
	defer lcancel()
	stream, err := client.ListAndWatch(lctx, &pluginapi.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Devices) != 3 || first.Devices[0].Health != pluginapi.Healthy {
		t.Fatalf("devices = %v, want 3 healthy", first.Devices)
	}
	// The device disappears: the list is sent again, unhealthy.
	os.Remove(filepath.Join(devRoot, "kvm"))
	second, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if second.Devices[0].Health != pluginapi.Unhealthy {
		t.Fatalf("after removing the device: %v, want unhealthy", second.Devices)
	}

	resp, err := client.Allocate(ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIDs: []string{"kvm0"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.ContainerResponses) != 1 || len(resp.ContainerResponses[0].Devices) != 1 {
		t.Fatalf("allocate = %v", resp)
	}
	d := resp.ContainerResponses[0].Devices[0]
	if d.HostPath != "/dev/kvm" || d.ContainerPath != "/dev/kvm" || d.Permissions != "rw" {
		t.Fatalf("device spec = %v", d)
	}
	if _, err := client.Allocate(ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{}}}); err == nil {
		t.Fatal("allocate without device IDs succeeded")
	}

	// A kubelet restart removes the sockets: the plugin registers again.
	os.Remove(filepath.Join(dir, "kubevirt-tun.sock"))
	testenv.Eventually(t, "tun registered again", 10*time.Second, func() (bool, string) {
		n := kubelet.count("devices.kubevirt.io/tun")
		return n == 2, fmt.Sprintf("%d tun registrations", n)
	})
}
