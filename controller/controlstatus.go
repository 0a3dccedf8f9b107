package controller

import (
	"context"
	"net"
	"strconv"

	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/launcher/control"
)

// controlStatusSource is the real StatusSource: the launcher's control API (launcher/control).
type controlStatusSource struct{}

// NewControlStatusSource returns the StatusSource that watches launchers over their control API.
func NewControlStatusSource() StatusSource { return controlStatusSource{} }

func (controlStatusSource) Watch(ctx context.Context, ep LauncherEndpoint, report func(LauncherState)) error {
	port := ep.Port
	if port == 0 {
		port = control.DefaultPort
	}
	cl := control.NewClient(net.JoinHostPort(ep.PodIP, strconv.Itoa(port)), ep.Token)
	return cl.Watch(ctx, func(s control.Status) { report(fromControlStatus(s)) })
}

func fromControlStatus(s control.Status) LauncherState {
	out := LauncherState{Paused: s.Paused, Reason: s.Reason, Message: s.Message}
	switch s.Phase {
	case control.Running:
		out.Phase = GuestRunning
	case control.Succeeded:
		out.Phase = GuestSucceeded
	case control.Failed:
		out.Phase = GuestFailed
	default:
		out.Phase = GuestStarting
	}
	for _, i := range s.Interfaces {
		ips := append([]string(nil), i.IPs...)
		if len(ips) == 0 && i.IP != "" {
			ips = []string{i.IP}
		}
		out.Interfaces = append(out.Interfaces, v1.VirtualMachineInstanceNetworkInterface{
			Name: i.Name, MAC: i.MAC, IP: i.IP, IPs: ips, InfoSource: "domain",
		})
	}
	return out
}
