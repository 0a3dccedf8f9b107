package main

import (
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestListenAction(t *testing.T) {
	for _, bad := range []string{"", "0", "70000", "http"} {
		if err := listenAction(bad); err == nil {
			t.Errorf("listen:%s accepted", bad)
		}
	}
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	if err := listenAction(strconv.Itoa(port)); err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp4", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil || !strings.HasPrefix(string(b), "kvirt-guest ") || !strings.HasSuffix(string(b), " from 127.0.0.1") {
		t.Fatalf("reply %q %v", b, err)
	}
}
