package main

import (
	"crypto/sha256"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseRandread(t *testing.T) {
	for _, c := range []struct {
		in   string
		want randreadSpec
	}{
		{"/dev/vda:10", randreadSpec{"/dev/vda", 10, 1}},
		{"/dev/vdb:5:8", randreadSpec{"/dev/vdb", 5, 8}},
	} {
		got, err := parseRandread(c.in)
		if err != nil || got != c.want {
			t.Errorf("parseRandread(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "/dev/vda", "vda:10", "/dev/vda:0", "/dev/vda:x", "/dev/vda:10:0", "/dev/vda:10:65", "/dev/vda:10:1:2", "/dev/vda::1"} {
		if got, err := parseRandread(bad); err == nil {
			t.Errorf("parseRandread(%q) = %+v, want an error", bad, got)
		}
	}
}

func TestBenchArgErrors(t *testing.T) {
	for _, c := range []struct{ name, arg string }{
		{"tcprecv", "10.0.2.1"}, {"tcprecv", "10.0.2.1:0"}, {"tcprecv", "10.0.2.1:70000"},
		{"tcpsend", "10.0.2.1:8080"}, {"tcpsend", "10.0.2.1:8080:0"}, {"tcpsend", "10.0.2.1:8080:x"},
		{"ping", "10.0.2.1"}, {"ping", "host:3"}, {"ping", "10.0.2.1:0"}, {"ping", "::1:3"},
		{"randread", "/dev/vda:1:2:3"}, {"nope", "x"},
	} {
		if err := runBench(c.name, c.arg); err == nil {
			t.Errorf("%s:%s: no error", c.name, c.arg)
		}
	}
}

func TestEchoPackets(t *testing.T) {
	req := echoRequest(0x1234, 7)
	if inetChecksum(req) != 0 {
		t.Fatalf("echo request checksum does not verify: %x", req)
	}
	// A reply as the raw socket returns it: a 20-byte IPv4 header, then type 0 with the same id/seq.
	reply := append(make([]byte, 20), req...)
	reply[0] = 0x45
	reply[20] = 0
	if !isEchoReply(reply, 0x1234, 7) {
		t.Error("matching reply not recognised")
	}
	if isEchoReply(reply, 0x1234, 8) || isEchoReply(reply[:25], 0x1234, 7) || isEchoReply(nil, 0, 0) {
		t.Error("wrong or short reply accepted")
	}
	reply[20] = 8
	if isEchoReply(reply, 0x1234, 7) {
		t.Error("our own request taken for a reply")
	}
}

// tcpsend and tcprecv against a local listener: byte counts and the result line's shape.
func TestTCPSendRecvLoopback(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	got := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- -1
			return
		}
		var n int64
		buf := make([]byte, 1<<16)
		for {
			k, err := c.Read(buf)
			n += int64(k)
			if err != nil {
				break
			}
		}
		c.Close()
		got <- n
	}()
	if err := tcpsend("127.0.0.1:" + strconv.Itoa(port) + ":2"); err != nil {
		t.Fatal(err)
	}
	if n := <-got; n != 2<<20 {
		t.Fatalf("listener received %d bytes, want %d", n, 2<<20)
	}
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		_, _ = c.Write(make([]byte, 3<<20))
		c.Close()
	}()
	out := captureConsole(t)
	if err := tcprecv("127.0.0.1:" + strconv.Itoa(port)); err != nil {
		t.Fatal(err)
	}
	if s := out(); !strings.HasPrefix(s, "kvirt-guest: tcprecv bytes=3145728 seconds=") || !strings.Contains(s, " mbps=") ||
		!strings.Contains(s, fmt.Sprintf(" sha256=%x\n", sha256.Sum256(make([]byte, 3<<20)))) {
		t.Fatalf("tcprecv printed %q", s)
	}
}

// captureConsole sends say's lines to a file for the rest of the test; the returned func reads them.
func captureConsole(t *testing.T) func() string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "console")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	old := console
	console = f
	t.Cleanup(func() { console = old; f.Close() })
	return func() string {
		b, _ := os.ReadFile(p)
		return string(b)
	}
}

// randread on a regular file (where the file system allows O_DIRECT): the result line counts reads.
func TestRandreadFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "disk")
	if err := os.WriteFile(p, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_DIRECT, 0); err != nil {
		t.Skipf("O_DIRECT not supported here: %v", err)
	} else {
		f.Close()
	}
	// randread insists on a /dev/ path; a symlink there is not ours to make, so call the reader directly.
	out := captureConsole(t)
	if err := (randreadSpec{dev: p, seconds: 1, depth: 2}).run(); err != nil {
		t.Fatal(err)
	}
	if s := out(); !strings.Contains(s, "kvirt-guest: randread dev="+p+" bs=4096 depth=2 ops=") || strings.Contains(s, "ops=0 ") {
		t.Fatalf("randread printed %q", s)
	}
}

// A handshake that takes longer than a short connect timeout (a loaded, interpreted guest kernel; here: a
// listener whose accept queue is full, so the kernel drops SYNs until it is drained) must not fail the
// transfer. u-root's netcat gave up after its 10 s default and the host was left writing to a connection
// the guest had reset, which looked like a stalled virtio-net.
func TestTCPRecvWaitsForSlowHandshake(t *testing.T) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil { // accept queue of one
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(sa.(*syscall.SockaddrInet4).Port)
	filler, err := net.DialTimeout("tcp4", addr, 5*time.Second) // fills the queue
	if err != nil {
		t.Fatal(err)
	}
	defer filler.Close()
	if c, err := net.DialTimeout("tcp4", addr, time.Second); err == nil {
		c.Close()
		t.Skip("this kernel did not drop SYNs for a full accept queue; cannot slow the handshake down")
	}
	old := dialPatience
	dialPatience = time.Minute
	defer func() { dialPatience = old }()
	go func() { // drain after a while, then serve 1 MiB on the first real connection
		time.Sleep(2500 * time.Millisecond)
		for i := 0; i < 4; i++ {
			nfd, _, err := syscall.Accept(fd)
			if err != nil {
				return
			}
			f := os.NewFile(uintptr(nfd), "conn")
			c, err := net.FileConn(f)
			f.Close()
			if err != nil {
				return
			}
			if c.RemoteAddr().String() == filler.LocalAddr().String() {
				c.Close()
				continue
			}
			_, _ = c.Write(make([]byte, 1<<20))
			c.Close()
			return
		}
	}()
	out := captureConsole(t)
	if err := tcprecv(addr); err != nil {
		t.Fatal(err)
	}
	if s := out(); !strings.Contains(s, "tcprecv bytes=1048576 ") {
		t.Fatalf("tcprecv printed %q", s)
	}
}

// The benchmark actions' arguments come from the kernel command line: any string gives a spec or an error.
func FuzzBenchArgs(f *testing.F) {
	for _, s := range []string{"/dev/vda:10", "/dev/vda:10:8", "10.0.2.1:8080", "10.0.2.1:8081:16", "::", "/dev/:1:99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if r, err := parseRandread(s); err == nil && (r.seconds < 1 || r.depth < 1 || r.depth > 64 || !strings.HasPrefix(r.dev, "/dev/")) {
			t.Fatalf("parseRandread(%q) accepted %+v", s, r)
		}
		if f, err := benchArgs("tcpsend", s, 3, 1); err == nil {
			if len(f) < 2 || len(f) > 3 {
				t.Fatalf("benchArgs(%q) gave %d fields", s, len(f))
			}
			if _, err := hostPort("tcpsend", f[0], f[1]); err == nil {
				if p, _ := strconv.Atoi(f[1]); p < 1 || p > 65535 {
					t.Fatalf("hostPort accepted port %q", f[1])
				}
			}
		}
	})
}
