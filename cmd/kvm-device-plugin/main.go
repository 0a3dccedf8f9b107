// Command kvm-device-plugin is a kubelet device plugin (API v1beta1) that advertises
// devices.kubevirt.io/kvm and devices.kubevirt.io/tun, so an unprivileged pod that requests one gets
// /dev/kvm or /dev/net/tun mounted read-write. It runs as a DaemonSet (deploy/device-plugin).
//
// Each resource is a shareable device: the node advertises -count of each while the host device exists
// (checked under -dev-root, where the DaemonSet mounts the host's /dev), all unhealthy while it does
// not. When the kubelet restarts (and deletes the plugin sockets) the plugin registers again.
//
// `kvm-device-plugin -check /dev/kvm` opens the device read-write and exits 0: a probe for tests.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

func main() {
	socketDir := flag.String("socket-dir", pluginapi.DevicePluginPath, "kubelet device-plugin directory (kubelet.sock lives there)")
	devRoot := flag.String("dev-root", "/dev", "where the host's /dev is visible, for health checks")
	count := flag.Int("count", 110, "devices advertised per resource (pods that can share the device)")
	check := flag.String("check", "", "open this device read-write, print a line and exit 0 (test probe)")
	flag.Parse()

	if *check != "" {
		f, err := os.OpenFile(*check, os.O_RDWR, 0)
		if err != nil {
			fmt.Fprintf(os.Stderr, "kvm-device-plugin: check: %v\n", err)
			os.Exit(1)
		}
		f.Close()
		fmt.Printf("kvm-device-plugin: %s opened read-write\n", *check)
		return
	}
	if *count < 1 {
		log.Fatalf("kvm-device-plugin: -count must be at least 1")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := Run(ctx, *socketDir, *devRoot, *count, DefaultResources); err != nil {
		log.Fatalf("kvm-device-plugin: %v", err)
	}
}
