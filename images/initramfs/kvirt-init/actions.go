package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// run performs one kvirt.test action, printing its "kvirt-guest: ..." result lines.
func run(a action, cfg config, rp *reaper) error {
	switch a.Name {
	case "nproc":
		b, err := os.ReadFile("/sys/devices/system/cpu/online")
		if err != nil {
			return err
		}
		n, err := countCPUs(string(b))
		if err != nil {
			return err
		}
		say("cpus=%d", n)
	case "uuid":
		b, err := os.ReadFile("/sys/class/dmi/id/product_uuid")
		if err != nil {
			return fmt.Errorf("%w (does the VMM write SMBIOS tables?)", err)
		}
		say("uuid=%s", firstLine(string(b)))
	case "topology":
		return topology()
	case "randread", "tcprecv", "tcpsend", "ping":
		return runBench(a.Name, a.Arg)
	case "ticks":
		tick()
	case "disk":
		return disk(cfg)
	case "disks", "cidata":
		return cidataAction(a.Name)
	case "net":
		return network(cfg, rp)
	case "wait":
		say("waiting for the power button")
		select {}
	case "poweroff":
		powerOff("kvirt.test")
	case "reboot":
		reboot()
	case "crash":
		// PID 1 exiting makes the kernel panic ("Attempted to kill init"); with panic=-1 it reboots at
		// once: how a test sees a guest crash.
		say("crash: init exits")
		syscall.Sync()
		os.Exit(1)
	case "sh":
		code, err := rp.runPath("sh", "-c", a.Arg)
		if err != nil {
			return err
		}
		say("sh exit=%d", code)
	case "serve", "listen":
		return serve(a.Name, a.Arg)
	case "echo":
		say("%s", a.Arg)
	case "sleep":
		d, err := time.ParseDuration(a.Arg)
		if err != nil {
			return err
		}
		time.Sleep(d)
	default:
		return fmt.Errorf("unknown action")
	}
	return nil
}

// disk mounts cfg.Disk (ext4) on /mnt, prints /mnt/hello if present, writes kvirt.write= to /mnt/written
// durably, and unmounts.
func disk(cfg config) error {
	if err := syscall.Mount(cfg.Disk, "/mnt", "ext4", 0, ""); err != nil {
		return fmt.Errorf("mount %s on /mnt as ext4: %w", cfg.Disk, err)
	}
	mounted := true
	defer func() {
		if mounted {
			_ = syscall.Unmount("/mnt", 0)
		}
	}()
	if b, err := os.ReadFile("/mnt/hello"); err == nil {
		say("read=%s", firstLine(string(b)))
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	f, err := os.OpenFile(filepath.Join("/mnt", "written"), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(cfg.Write + "\n"); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	syscall.Sync()
	mounted = false
	if err := syscall.Unmount("/mnt", 0); err != nil {
		return fmt.Errorf("umount /mnt: %w", err)
	}
	say("disk ok")
	return nil
}

// network configures cfg.Iface by DHCP (u-root's dhclient), prints the address and gateway, and pings the
// gateway three times.
func network(cfg config, rp *reaper) error {
	code, err := rp.runPath("dhclient", "-ipv6=false", "-timeout", "30", "-retry", "3", cfg.Iface)
	if err != nil {
		return fmt.Errorf("dhclient: %w", err)
	}
	if code != 0 {
		return fmt.Errorf("dhclient %s exited %d", cfg.Iface, code)
	}
	ifc, err := net.InterfaceByName(cfg.Iface)
	if err != nil {
		return err
	}
	addrs, err := ifc.Addrs()
	if err != nil {
		return err
	}
	var ip string
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
			ip = n.String()
			break
		}
	}
	if ip == "" {
		return fmt.Errorf("%s has no IPv4 address after DHCP", cfg.Iface)
	}
	routes, err := os.ReadFile("/proc/net/route")
	if err != nil {
		return err
	}
	gw, err := defaultGateway(string(routes), cfg.Iface)
	if err != nil {
		return err
	}
	say("ip=%s gw=%s", ip, gw)
	code, err = rp.runPath("ping", "-c", "3", "-w", "10000", gw.String()) // u-root ping fails on the first reply later than -w ms: generous on loaded, interpreted hosts
	if err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	if code != 0 {
		return fmt.Errorf("ping %s exited %d", gw, code)
	}
	say("ping ok")
	return nil
}
