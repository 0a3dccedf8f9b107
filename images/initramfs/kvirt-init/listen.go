package main

import (
	"fmt"
	"net"
	"os"
)

// listen:PORT serves TCP on PORT in the background (the next actions run at once): each connection gets
// "kvirt-guest <hostname> from <peer IP>" and is closed, and the guest prints "kvirt-guest: accepted <peer>".
// It prints "kvirt-guest: listening port=PORT" once the socket is bound. Tests use it to check inbound
// forwarding (masquerade ports) into a real guest; follow it with "wait" to keep the guest up.

func init() { knownActions["listen"] = true }

func listenAction(arg string) error {
	if _, err := positive("listen", "port", arg, 65535); err != nil {
		return err
	}
	l, err := net.Listen("tcp4", ":"+arg)
	if err != nil {
		return err
	}
	say("listening port=%s", arg)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				say("error listen: %v", err)
				return
			}
			peer := c.RemoteAddr().(*net.TCPAddr).IP.String()
			host, _ := hostname()
			fmt.Fprintf(c, "kvirt-guest %s from %s", host, peer)
			c.Close()
			say("accepted %s", peer)
		}
	}()
	return nil
}

func hostname() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/hostname")
	return firstLine(string(b)), err
}
