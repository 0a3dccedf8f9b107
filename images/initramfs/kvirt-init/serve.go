package main

import (
	"fmt"
	"net"
	"os"
)

// serve:PORT and listen:PORT are one action: a TCP listener on PORT (all addresses) in the background (the
// next actions run at once) that writes a greeting to every connection and closes it. The two names differ
// only in the lines that tests match (both were added in parallel and existing tests depend on each):
//
//	serve:PORT   prints "kvirt-guest: serving on :PORT" once bound; answers ServeReply (a fixed line).
//	             Used with net first (kvirt.test=net,serve:8080) to show a Service reaching the guest.
//	listen:PORT  prints "kvirt-guest: listening port=PORT" once bound; answers "kvirt-guest HOSTNAME from
//	             PEER-IP" (no newline) and prints "kvirt-guest: accepted PEER-IP": tests check inbound
//	             forwarding (masquerade ports) and which address the guest saw. Follow it with "wait".

func init() {
	knownActions["serve"] = true
	knownActions["listen"] = true
}

// ServeReply is the line serve:PORT answers on every connection.
const ServeReply = "kvirt-guest: hello from the guest\n"

// serve runs the serve or listen action (name) on port arg.
func serve(name, arg string) error {
	if name != "serve" && name != "listen" {
		return fmt.Errorf("serve: unknown action %q", name)
	}
	if _, err := positive(name, "port", arg, 65535); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", ":"+arg)
	if err != nil {
		return fmt.Errorf("%s:%s: %w", name, arg, err)
	}
	if name == "serve" {
		say("serving on :%s", arg)
	} else {
		say("listening port=%s", arg)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				say("error %s: %v", name, err)
				return
			}
			go greet(name, c)
		}
	}()
	return nil
}

func greet(name string, c net.Conn) {
	defer c.Close()
	if name == "serve" {
		_, _ = c.Write([]byte(ServeReply))
		return
	}
	peer := c.RemoteAddr().String()
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		peer = a.IP.String()
	}
	host, _ := hostname()
	_, _ = fmt.Fprintf(c, "kvirt-guest %s from %s", host, peer)
	say("accepted %s", peer)
}

func hostname() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/hostname")
	return firstLine(string(b)), err
}
