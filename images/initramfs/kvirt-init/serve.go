package main

import (
	"fmt"
	"net"
	"strconv"
)

// ServeReply is the line the serve action answers on every connection.
const ServeReply = "kvirt-guest: hello from the guest\n"

// serve listens on TCP port arg (all addresses) and answers every connection with ServeReply, in the
// background; it returns once listening, printing "kvirt-guest: serving on :PORT". Used with net first
// (kvirt.test=net,serve:8080) to show a Service reaching the guest through the pod network.
func serve(arg string) error {
	port, err := strconv.ParseUint(arg, 10, 16)
	if err != nil || port == 0 {
		return fmt.Errorf("serve:%s: want a TCP port 1-65535", arg)
	}
	ln, err := net.Listen("tcp", ":"+strconv.FormatUint(port, 10))
	if err != nil {
		return err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				say("error serve: %v", err)
				return
			}
			go func() {
				defer c.Close()
				_, _ = c.Write([]byte(ServeReply))
			}()
		}
	}()
	say("serving on :%d", port)
	return nil
}
