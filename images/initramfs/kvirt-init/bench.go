package main

// Guest-side benchmark actions, each printing one parseable result line:
//
//	randread:DEV:SECONDS[:DEPTH]  4 KiB random reads with O_DIRECT over the whole device, DEPTH requests in
//	                              flight (default 1) → "kvirt-guest: randread dev=/dev/vda bs=4096 depth=1 ops=N seconds=S iops=X"
//	tcprecv:HOST:PORT             connects, reads until EOF → "kvirt-guest: tcprecv bytes=N seconds=S mbps=X sha256=HEX"
//	tcpsend:HOST:PORT:MIB         connects, writes MIB MiB of zeros, closes → "kvirt-guest: tcpsend bytes=N seconds=S mbps=X"
//	ping:HOST:N                   N ICMP echoes one after the other (the first, which includes ARP, is not
//	                              counted) → "kvirt-guest: ping host=H n=N min_ms=A median_ms=B max_ms=C"
//
// mbps is 10^6 bytes per second measured in the guest. tcprecv and tcpsend keep trying to connect for
// dialPatience: on a loaded host an interpreted guest kernel can take far longer than the usual 10 s
// (u-root netcat's default, which made a loaded guest abandon a connection the host had just accepted). A failed action returns an error (kvirt-init prints
// "kvirt-guest: error ...").

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

func init() {
	for _, name := range []string{"randread", "tcprecv", "tcpsend", "ping"} {
		knownActions[name] = true
	}
}

// benchArgs splits an action argument into exactly n fields (the last optional ones may be missing when
// optional > 0).
func benchArgs(action, arg string, n, optional int) ([]string, error) {
	f := strings.Split(arg, ":")
	if len(f) > n || len(f) < n-optional {
		return nil, fmt.Errorf("%s:%s: want %d to %d fields separated by ':'", action, arg, n-optional, n)
	}
	for i, s := range f {
		if s == "" {
			return nil, fmt.Errorf("%s:%s: field %d is empty", action, arg, i+1)
		}
	}
	return f, nil
}

func positive(action, what, s string, max int) (int, error) {
	v, err := strconv.Atoi(s)
	if err != nil || v < 1 || v > max {
		return 0, fmt.Errorf("%s: %s %q is not a whole number from 1 to %d", action, what, s, max)
	}
	return v, nil
}

// hostPort joins HOST and PORT fields, checking the port.
func hostPort(action, host, port string) (string, error) {
	if _, err := positive(action, "port", port, 65535); err != nil {
		return "", err
	}
	return net.JoinHostPort(host, port), nil
}

type randreadSpec struct {
	dev     string
	seconds int
	depth   int
}

func parseRandread(arg string) (randreadSpec, error) {
	f, err := benchArgs("randread", arg, 3, 1)
	if err != nil {
		return randreadSpec{}, err
	}
	s := randreadSpec{dev: f[0], depth: 1}
	if !strings.HasPrefix(s.dev, "/dev/") {
		return s, fmt.Errorf("randread: %q is not a /dev/ path", s.dev)
	}
	if s.seconds, err = positive("randread", "seconds", f[1], 3600); err != nil {
		return s, err
	}
	if len(f) == 3 {
		if s.depth, err = positive("randread", "depth", f[2], 64); err != nil {
			return s, err
		}
	}
	return s, nil
}

const benchBlock = 4096

// randread reads 4 KiB blocks at random aligned offsets with O_DIRECT (no page cache: every read reaches the
// device) from depth goroutines for the given time.
func randread(arg string) error {
	s, err := parseRandread(arg)
	if err != nil {
		return err
	}
	return s.run()
}

func (s randreadSpec) run() error {
	f, err := os.OpenFile(s.dev, os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		return fmt.Errorf("randread: %w", err)
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("randread: size of %s: %w", s.dev, err)
	}
	blocks := size / benchBlock
	if blocks < 1 {
		return fmt.Errorf("randread: %s is smaller than one %d-byte block", s.dev, benchBlock)
	}
	var ops atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(time.Duration(s.seconds) * time.Second)
	for w := 0; w < s.depth; w++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			buf := alignedBlock()
			r := rand.New(rand.NewPCG(seed, 0x6b76))
			for time.Now().Before(deadline) {
				off := r.Int64N(blocks) * benchBlock
				if _, err := f.ReadAt(buf, off); err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("randread: read %s at %d: %w", s.dev, off, err) })
					return
				}
				ops.Add(1)
			}
		}(uint64(w) + 1)
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	secs := time.Since(start).Seconds()
	say("randread dev=%s bs=%d depth=%d ops=%d seconds=%.3f iops=%.1f", s.dev, benchBlock, s.depth, ops.Load(), secs,
		float64(ops.Load())/secs)
	return nil
}

// alignedBlock returns a 4 KiB buffer aligned to 4 KiB, as O_DIRECT requires.
func alignedBlock() []byte {
	b := make([]byte, 2*benchBlock)
	off := int(uintptr(unsafe.Pointer(&b[0])) & (benchBlock - 1))
	if off != 0 {
		off = benchBlock - off
	}
	return b[off : off+benchBlock]
}

func tcprecv(arg string) error {
	f, err := benchArgs("tcprecv", arg, 2, 0)
	if err != nil {
		return err
	}
	addr, err := hostPort("tcprecv", f[0], f[1])
	if err != nil {
		return err
	}
	c, err := dialPatiently(addr, dialPatience)
	if err != nil {
		return fmt.Errorf("tcprecv: %w", err)
	}
	defer c.Close()
	start := time.Now()
	h := sha256.New()
	n, err := io.CopyBuffer(h, c, make([]byte, 256<<10))
	if err != nil {
		return fmt.Errorf("tcprecv: after %d bytes: %w", n, err)
	}
	secs := time.Since(start).Seconds()
	say("tcprecv bytes=%d seconds=%.3f mbps=%.3f sha256=%x", n, secs, float64(n)/secs/1e6, h.Sum(nil))
	return nil
}

func tcpsend(arg string) error {
	f, err := benchArgs("tcpsend", arg, 3, 0)
	if err != nil {
		return err
	}
	addr, err := hostPort("tcpsend", f[0], f[1])
	if err != nil {
		return err
	}
	mib, err := positive("tcpsend", "MiB", f[2], 4096)
	if err != nil {
		return err
	}
	c, err := dialPatiently(addr, dialPatience)
	if err != nil {
		return fmt.Errorf("tcpsend: %w", err)
	}
	defer c.Close()
	buf := make([]byte, 256<<10)
	total := int64(mib) << 20
	start := time.Now()
	var n int64
	for n < total {
		k, err := c.Write(buf[:min(int64(len(buf)), total-n)])
		n += int64(k)
		if err != nil {
			return fmt.Errorf("tcpsend: after %d bytes: %w", n, err)
		}
	}
	// Wait for the peer to close, so the time includes delivery rather than only filling the socket buffer.
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
		_, _ = io.Copy(io.Discard, c)
	}
	secs := time.Since(start).Seconds()
	say("tcpsend bytes=%d seconds=%.3f mbps=%.3f", n, secs, float64(n)/secs/1e6)
	return nil
}

func ping(arg string) error {
	f, err := benchArgs("ping", arg, 2, 0)
	if err != nil {
		return err
	}
	ip := net.ParseIP(f[0]).To4()
	if ip == nil {
		return fmt.Errorf("ping: %q is not an IPv4 address", f[0])
	}
	n, err := positive("ping", "count", f[1], 1000)
	if err != nil {
		return err
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, syscall.IPPROTO_ICMP)
	if err != nil {
		return fmt.Errorf("ping: raw ICMP socket: %w", err)
	}
	defer syscall.Close(fd)
	tv := syscall.NsecToTimeval(int64(10 * time.Second))
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	sa := &syscall.SockaddrInet4{}
	copy(sa.Addr[:], ip)
	id := uint16(os.Getpid())
	var rtts []time.Duration
	buf := make([]byte, 1500)
	for seq := 0; seq <= n; seq++ { // seq 0 warms up the neighbour cache
		msg := echoRequest(id, uint16(seq))
		start := time.Now()
		if err := syscall.Sendto(fd, msg, 0, sa); err != nil {
			return fmt.Errorf("ping: send: %w", err)
		}
		for {
			k, from, err := syscall.Recvfrom(fd, buf, 0)
			if err != nil {
				return fmt.Errorf("ping: no reply to echo %d from %s: %w", seq, ip, err)
			}
			if f4, ok := from.(*syscall.SockaddrInet4); !ok || !net.IP(f4.Addr[:]).Equal(ip) {
				continue
			}
			if isEchoReply(buf[:k], id, uint16(seq)) {
				break
			}
		}
		if seq > 0 {
			rtts = append(rtts, time.Since(start))
		}
	}
	slices.Sort(rtts)
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	say("ping host=%s n=%d min_ms=%.3f median_ms=%.3f max_ms=%.3f", ip, n, ms(rtts[0]), ms(rtts[len(rtts)/2]), ms(rtts[len(rtts)-1]))
	return nil
}

// dialPatience is how long tcprecv and tcpsend try to connect.
var dialPatience = 5 * time.Minute

// dialPatiently connects to addr, retrying until patience runs out: the kernel gives up a connect after its
// SYN retries (ETIMEDOUT, ~2 min), and a listener may not be up yet (ECONNREFUSED).
func dialPatiently(addr string, patience time.Duration) (net.Conn, error) {
	deadline := time.Now().Add(patience)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Until(deadline))
		if err == nil {
			return c, nil
		}
		if time.Now().Add(time.Second).After(deadline) {
			return nil, fmt.Errorf("no connection to %s within %v: %w", addr, patience, err)
		}
		time.Sleep(time.Second)
	}
}

// echoRequest is an ICMP echo request with identifier id and sequence seq.
func echoRequest(id, seq uint16) []byte {
	m := []byte{8, 0, 0, 0, 0, 0, 0, 0, 'k', 'v', 'i', 'r', 't', '-', 'p', 'i', 'n', 'g'}
	binary.BigEndian.PutUint16(m[4:], id)
	binary.BigEndian.PutUint16(m[6:], seq)
	binary.BigEndian.PutUint16(m[2:], inetChecksum(m))
	return m
}

// isEchoReply reports whether pkt (an IPv4 packet as a raw socket returns it) is the echo reply to id/seq.
func isEchoReply(pkt []byte, id, seq uint16) bool {
	if len(pkt) < 20 {
		return false
	}
	ihl := int(pkt[0]&0xf) * 4
	if ihl < 20 || len(pkt) < ihl+8 {
		return false
	}
	icmp := pkt[ihl:]
	return icmp[0] == 0 && binary.BigEndian.Uint16(icmp[4:]) == id && binary.BigEndian.Uint16(icmp[6:]) == seq
}

func inetChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// runBench runs the benchmark action name.
func runBench(name, arg string) error {
	switch name {
	case "randread":
		return randread(arg)
	case "tcprecv":
		return tcprecv(arg)
	case "tcpsend":
		return tcpsend(arg)
	case "ping":
		return ping(arg)
	}
	return fmt.Errorf("%s: not a benchmark action", name)
}
