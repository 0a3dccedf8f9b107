package launcher

import (
	"context"
	"fmt"
	"io"

	"github.com/kvirt/kvirt/launcher/control"
)

// Subcommand runs one of the `virt-launcher pause|unpause|console` commands that virtctl executes in the
// launcher pod (cmd/virtctl/app/exec.go), against the control API's Unix socket. It returns the exit code:
// 0 on success; 1 with the reason on stderr (KubeVirt's message, e.g. "VMI is already paused") otherwise.
// console copies stdin to the guest's serial input and its output to stdout until stdin ends.
func Subcommand(ctx context.Context, socket, verb string, stdin io.Reader, stdout, stderr io.Writer) int {
	if socket == "" {
		socket = control.DefaultSocket
	}
	c := control.NewUnixClient(socket)
	var err error
	switch verb {
	case "pause":
		err = c.Pause(ctx)
	case "unpause":
		err = c.Unpause(ctx)
	case "console":
		err = console(ctx, c, stdin, stdout)
	default:
		err = fmt.Errorf("unknown subcommand %q: want pause, unpause or console", verb)
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}

func console(ctx context.Context, c *control.Client, stdin io.Reader, stdout io.Writer) error {
	con, err := c.Console(ctx)
	if err != nil {
		return err
	}
	defer con.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(stdout, con)
	}()
	in := make(chan struct{})
	go func() {
		defer close(in)
		io.Copy(con, stdin)
	}()
	select {
	case <-in: // stdin ended: detach
	case <-done: // the guest (or the launcher) ended
	case <-ctx.Done():
	}
	con.Close()
	<-done
	return nil
}
