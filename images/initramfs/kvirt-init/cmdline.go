package main

import (
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
)

// An action is one step of kvirt.test=: a name and, for "sh:<command>"-style actions, an argument.
type action struct {
	Name string
	Arg  string
}

func (a action) String() string {
	if a.Arg == "" {
		return a.Name
	}
	return a.Name + ":" + a.Arg
}

// config is what kvirt-init takes from the kernel command line.
type config struct {
	// Actions from kvirt.test=, in order; empty means: interactive shell on the console.
	Actions []action
	// Write is kvirt.write=: what the disk action writes to /mnt/written.
	Write string
	// Disk is kvirt.disk=: the block device the disk action mounts (default /dev/vda).
	Disk string
	// Iface is kvirt.iface=: the interface the net action configures (default eth0).
	Iface string
}

// Actions kvirt-init knows, and whether each takes an argument (after a colon).
var knownActions = map[string]bool{
	"nproc":    false,
	"uuid":     false,
	"topology": false,
	"ticks":    false,
	"disk":     false,
	"net":      false,
	"wait":     false,
	"poweroff": false,
	"reboot":   false,
	"crash":    false,
	"sh":       true,
	"echo":     true,
	"serve":    true,
	"sleep":    true,
}

// maxCmdline bounds the input: Linux's x86 command line is at most 2048 bytes (COMMAND_LINE_SIZE).
const maxCmdline = 64 << 10

// splitCmdline splits a kernel command line into words the way the kernel does (lib/cmdline.c next_arg):
// words are separated by spaces, and double quotes group spaces into a word; the quotes themselves are
// dropped.
func splitCmdline(s string) ([]string, error) {
	if len(s) > maxCmdline {
		return nil, fmt.Errorf("command line is %d bytes, more than %d", len(s), maxCmdline)
	}
	var words []string
	var cur strings.Builder
	inWord, inQuote := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"':
			inQuote = !inQuote
			inWord = true
		case !inQuote && (c == ' ' || c == '\t' || c == '\n'):
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inQuote {
		return nil, errors.New("unbalanced double quote in command line")
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// parseCmdline reads kvirt.* words from the kernel command line (/proc/cmdline). Unknown kvirt.test actions
// are an error naming the action; other words are ignored.
func parseCmdline(s string) (config, error) {
	cfg := config{Disk: "/dev/vda", Iface: "eth0"}
	words, err := splitCmdline(s)
	if err != nil {
		return cfg, err
	}
	for _, w := range words {
		key, val, ok := strings.Cut(w, "=")
		if !ok {
			continue
		}
		switch key {
		case "kvirt.test":
			acts, err := parseActions(val)
			if err != nil {
				return cfg, fmt.Errorf("kvirt.test=%s: %w", val, err)
			}
			cfg.Actions = acts
		case "kvirt.write":
			cfg.Write = val
		case "kvirt.disk":
			if !strings.HasPrefix(val, "/dev/") {
				return cfg, fmt.Errorf("kvirt.disk=%s: want a /dev/ path", val)
			}
			cfg.Disk = val
		case "kvirt.iface":
			if val == "" || len(val) > 15 || strings.ContainsAny(val, "/ ") {
				return cfg, fmt.Errorf("kvirt.iface=%s: not an interface name", val)
			}
			cfg.Iface = val
		}
	}
	return cfg, nil
}

// knownActionList names every action, those taking an argument as name:ARG, sorted.
func knownActionList() string {
	names := make([]string, 0, len(knownActions))
	for name, takesArg := range knownActions {
		if takesArg {
			name += ":ARG"
		}
		names = append(names, name)
	}
	sort.Strings(names)
	return strings.Join(names, " ")
}

// parseActions parses a comma-separated list such as "nproc,uuid,sh:uname -a,poweroff".
func parseActions(s string) ([]action, error) {
	if s == "" {
		return nil, errors.New("empty action list")
	}
	var acts []action
	for _, item := range strings.Split(s, ",") {
		name, arg, hasArg := strings.Cut(item, ":")
		takesArg, known := knownActions[name]
		switch {
		case !known:
			return nil, fmt.Errorf("unknown action %q (known: %s)", name, knownActionList())
		case takesArg && (!hasArg || arg == ""):
			return nil, fmt.Errorf("action %q needs an argument: %s:<value>", name, name)
		case !takesArg && hasArg:
			return nil, fmt.Errorf("action %q takes no argument", name)
		}
		acts = append(acts, action{Name: name, Arg: arg})
	}
	return acts, nil
}

// countCPUs counts the CPUs in a Linux CPU list such as /sys/devices/system/cpu/online ("0-3,5,7-8").
func countCPUs(list string) (int, error) {
	list = strings.TrimSpace(list)
	if list == "" {
		return 0, errors.New("empty CPU list")
	}
	n := 0
	for _, part := range strings.Split(list, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.ParseUint(lo, 10, 16)
		if err != nil {
			return 0, fmt.Errorf("CPU list %q: bad number %q", list, lo)
		}
		b := a
		if isRange {
			if b, err = strconv.ParseUint(hi, 10, 16); err != nil {
				return 0, fmt.Errorf("CPU list %q: bad number %q", list, hi)
			}
			if b < a {
				return 0, fmt.Errorf("CPU list %q: range %s is backwards", list, part)
			}
		}
		n += int(b-a) + 1
	}
	return n, nil
}

// defaultGateway finds the IPv4 default route of iface in the text of /proc/net/route.
func defaultGateway(procNetRoute, iface string) (net.IP, error) {
	lines := strings.Split(procNetRoute, "\n")
	for _, line := range lines[min(1, len(lines)):] { // the first line is the header
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != iface || f[1] != "00000000" {
			continue
		}
		gw, err := strconv.ParseUint(f[2], 16, 32)
		if err != nil || len(f[2]) != 8 {
			return nil, fmt.Errorf("/proc/net/route: bad gateway %q", f[2])
		}
		// The kernel prints the address as a native-endian (little-endian on x86) 32-bit number.
		return net.IPv4(byte(gw), byte(gw>>8), byte(gw>>16), byte(gw>>24)), nil
	}
	return nil, fmt.Errorf("no default route via %s in /proc/net/route", iface)
}
