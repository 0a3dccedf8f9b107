package net

import (
	"fmt"
	"net"
	"strings"
)

// TapSpec is a NIC as given on a command line: `NAME[,mac=M]`.
type TapSpec struct {
	Name string
	MAC  net.HardwareAddr // nil: random
}

// ParseTapSpec parses `NAME[,mac=M]` (virt-launcher's --tap).
func ParseTapSpec(s string) (TapSpec, error) {
	parts := strings.Split(s, ",")
	t := TapSpec{Name: parts[0]}
	if t.Name == "" || len(t.Name) > 15 || strings.ContainsAny(t.Name, "/ \t\n:") {
		return t, fmt.Errorf("tap %q: want NAME[,mac=M] with an interface name of 1..15 characters", s)
	}
	for _, p := range parts[1:] {
		key, val, _ := strings.Cut(p, "=")
		if key != "mac" || t.MAC != nil {
			return t, fmt.Errorf("tap %q: unknown or repeated option %q (want mac=M)", s, p)
		}
		mac, err := net.ParseMAC(val)
		if err != nil || len(mac) != 6 {
			return t, fmt.Errorf("tap %q: mac %q is not a 6-byte MAC address", s, val)
		}
		if mac[0]&1 != 0 {
			return t, fmt.Errorf("tap %q: mac %s is a multicast address", s, mac)
		}
		t.MAC = mac
	}
	return t, nil
}

// String formats the spec back into the flag syntax.
func (t TapSpec) String() string {
	if t.MAC != nil {
		return t.Name + ",mac=" + t.MAC.String()
	}
	return t.Name
}

// Open attaches to (or creates) the tap in the calling thread's network namespace and builds the device.
// Close the device to close the tap.
func (t TapSpec) Open() (*Device, error) {
	tap, err := OpenTap(t.Name)
	if err != nil {
		return nil, err
	}
	dev, err := New(Config{Backend: tap, MAC: t.MAC, OwnBackend: true, Name: t.Name})
	if err != nil {
		tap.Close()
		return nil, err
	}
	return dev, nil
}
