package main

import (
	"bufio"
	"net"
	"strconv"
	"testing"
	"time"
)

func TestServeAnswersFixedLine(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	if err := serve(strconv.Itoa(port)); err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", l.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != ServeReply {
		t.Fatalf("read %q, %v; want %q", line, err, ServeReply)
	}
	for _, bad := range []string{"", "0", "65536", "-1", "http"} {
		if err := serve(bad); err == nil {
			t.Errorf("serve(%q) accepted", bad)
		}
	}
}
