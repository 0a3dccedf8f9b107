package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// Resource is one advertised device kind.
type Resource struct {
	Name string // extended resource name
	Path string // device path on the host and in the container
}

// DefaultResources are the devices a virt-launcher pod needs.
var DefaultResources = []Resource{
	{Name: "devices.kubevirt.io/kvm", Path: "/dev/kvm"},
	{Name: "devices.kubevirt.io/tun", Path: "/dev/net/tun"},
}

// healthInterval is how often device presence is re-checked and the kubelet socket watched.
var healthInterval = 2 * time.Second

// Run serves one plugin per resource until ctx ends, re-registering whenever the kubelet restarts.
func Run(ctx context.Context, socketDir, devRoot string, count int, resources []Resource) error {
	var wg sync.WaitGroup
	errs := make(chan error, len(resources))
	for _, r := range resources {
		p := &plugin{res: r, socketDir: socketDir, devRoot: devRoot, count: count}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.run(ctx); err != nil {
				errs <- fmt.Errorf("%s: %w", r.Name, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	return errors.Join(func() []error {
		var all []error
		for e := range errs {
			all = append(all, e)
		}
		return all
	}()...)
}

type plugin struct {
	pluginapi.UnimplementedDevicePluginServer
	res       Resource
	socketDir string
	devRoot   string
	count     int
}

// socketName is the plugin's socket file in the kubelet directory: devices.kubevirt.io/kvm → kubevirt-kvm.sock.
func (p *plugin) socketName() string {
	return "kubevirt-" + filepath.Base(p.res.Name) + ".sock"
}

// run serves and registers, and starts over when the kubelet removes the socket (kubelet restart) or
// the server fails, until ctx ends.
func (p *plugin) run(ctx context.Context) error {
	for {
		err := p.serveOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		log.Printf("%s: %v; serving again in %s", p.res.Name, err, healthInterval)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(healthInterval):
		}
	}
}

func (p *plugin) serveOnce(ctx context.Context) error {
	sock := filepath.Join(p.socketDir, p.socketName())
	if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	l, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(srv, p)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	defer func() {
		srv.Stop()
		os.Remove(sock)
	}()
	if err := p.register(ctx); err != nil {
		return err
	}
	log.Printf("%s: registered with the kubelet (socket %s, %d devices of %s)", p.res.Name, sock, p.count, p.res.Path)
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-served:
			return fmt.Errorf("gRPC server: %v", err)
		case <-time.After(healthInterval):
			if _, err := os.Stat(sock); err != nil {
				return fmt.Errorf("socket %s gone (kubelet restarted?)", sock)
			}
		}
	}
}

func (p *plugin) register(ctx context.Context) error {
	kubelet := filepath.Join(p.socketDir, filepath.Base(pluginapi.KubeletSocket))
	conn, err := grpc.NewClient("unix://"+kubelet, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("connect %s: %w", kubelet, err)
	}
	defer conn.Close()
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = pluginapi.NewRegistrationClient(conn).Register(rctx, &pluginapi.RegisterRequest{
		Version:      pluginapi.Version,
		Endpoint:     p.socketName(),
		ResourceName: p.res.Name,
		Options:      &pluginapi.DevicePluginOptions{},
	})
	if err != nil {
		return fmt.Errorf("register with %s: %w", kubelet, err)
	}
	return nil
}

// devices returns the advertised devices, all healthy when the host device exists.
func (p *plugin) devices() []*pluginapi.Device {
	health := pluginapi.Healthy
	if _, err := os.Stat(filepath.Join(p.devRoot, strings.TrimPrefix(p.res.Path, "/dev/"))); err != nil {
		health = pluginapi.Unhealthy
	}
	out := make([]*pluginapi.Device, p.count)
	for i := range out {
		out[i] = &pluginapi.Device{ID: fmt.Sprintf("%s%d", filepath.Base(p.res.Path), i), Health: health}
	}
	return out
}

func (p *plugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{}, nil
}

// ListAndWatch sends the device list, then again whenever health changes.
func (p *plugin) ListAndWatch(_ *pluginapi.Empty, stream pluginapi.DevicePlugin_ListAndWatchServer) error {
	last := ""
	for {
		devs := p.devices()
		if devs[0].Health != last {
			if err := stream.Send(&pluginapi.ListAndWatchResponse{Devices: devs}); err != nil {
				return err
			}
			last = devs[0].Health
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-time.After(healthInterval):
		}
	}
}

// Allocate gives every requesting container the device node, read-write.
func (p *plugin) Allocate(_ context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	resp := &pluginapi.AllocateResponse{}
	for _, c := range req.ContainerRequests {
		if len(c.DevicesIDs) == 0 {
			return nil, fmt.Errorf("%s: allocate request without device IDs", p.res.Name)
		}
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerAllocateResponse{
			Devices: []*pluginapi.DeviceSpec{{ContainerPath: p.res.Path, HostPath: p.res.Path, Permissions: "rw"}},
		})
	}
	return resp, nil
}

func (p *plugin) GetPreferredAllocation(context.Context, *pluginapi.PreferredAllocationRequest) (*pluginapi.PreferredAllocationResponse, error) {
	return &pluginapi.PreferredAllocationResponse{}, nil
}

func (p *plugin) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}
