package main

import (
	"bufio"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// freePort returns a TCP port that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

func dial(t *testing.T, port string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp4", "127.0.0.1:"+port, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	return c
}

func TestServeAnswersFixedLine(t *testing.T) {
	port := freePort(t)
	if err := serve("serve", port); err != nil {
		t.Fatal(err)
	}
	c := dial(t, port)
	defer c.Close()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != ServeReply {
		t.Fatalf("read %q, %v; want %q", line, err, ServeReply)
	}
}

func TestListenNamesHostAndPeer(t *testing.T) {
	port := freePort(t)
	if err := serve("listen", port); err != nil {
		t.Fatal(err)
	}
	c := dial(t, port)
	defer c.Close()
	b, err := io.ReadAll(c)
	if err != nil || !strings.HasPrefix(string(b), "kvirt-guest ") || !strings.HasSuffix(string(b), " from 127.0.0.1") {
		t.Fatalf("reply %q %v", b, err)
	}
}

func TestServeRejectsBadPorts(t *testing.T) {
	for _, name := range []string{"serve", "listen"} {
		for _, bad := range []string{"", "0", "65536", "70000", "-1", "http"} {
			if err := serve(name, bad); err == nil {
				t.Errorf("%s:%s accepted", name, bad)
			}
		}
	}
	if err := serve("other", "8080"); err == nil {
		t.Error("serve accepted an unknown action name")
	}
}

func TestServeTakenPort(t *testing.T) {
	l, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	if err := serve("listen", port); err == nil || !strings.Contains(err.Error(), "listen:"+port) {
		t.Errorf("serve on a taken port: %v, want an error naming listen:%s", err, port)
	}
}
