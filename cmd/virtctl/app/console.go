package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/lifecycle"
)

// escapeByte is ^] (Ctrl+], also sent by Ctrl+5): it ends the console session, as in KubeVirt.
const escapeByte = 0x1d

// consolePoll is how often console re-reads the VMI while waiting for it to run.
var consolePoll = time.Second

func newConsoleCommand(e *env) *cobra.Command {
	var timeout int
	cmd := &cobra.Command{
		Use:   "console (VMI)",
		Short: "Connect to a console of a virtual machine instance.",
		Example: e.example("# Connect to the console on VirtualMachineInstance 'myvmi':", "{{virtctl}} console myvmi",
			"# Configure one minute timeout (default 5 minutes)", "{{virtctl}} console --timeout=1 myvmi"),
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: e.completeName("vmi"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout < 0 {
				return fmt.Errorf("--timeout must be 0 or more minutes, got %d", timeout)
			}
			return e.console(cmd.Context(), args[0], time.Duration(timeout)*time.Minute)
		},
	}
	cmd.Flags().IntVar(&timeout, "timeout", 5, "The number of minutes to wait for the virtual machine instance to be ready.")
	return cmd
}

// ConsoleReady says whether a console can attach to vmi now: it is Running (paused or not). done is
// true when waiting is pointless because the VMI has finished.
func ConsoleReady(vmi *v1.VirtualMachineInstance) (ready, done bool) {
	switch {
	case vmi.IsFinal():
		return false, true
	case vmi.Status.Phase == v1.Running:
		return true, false
	}
	return false, false
}

// waitConsole polls until the VMI runs and has a running launcher pod, or the deadline passes.
func (e *env) waitConsole(ctx context.Context, c *Clients, name string, timeout time.Duration) (*corev1.Pod, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	told := false
	var last error
	for {
		vmi, err := c.Kubevirt.KubevirtV1().VirtualMachineInstances(c.Namespace).Get(ctx, name, metav1.GetOptions{})
		switch {
		case err == nil:
			ready, done := ConsoleReady(vmi)
			if done {
				return nil, fmt.Errorf("VMI %s has finished (phase %s); start it again and reconnect", name, vmi.Status.Phase)
			}
			last = nil
			if ready {
				pod, perr := lifecycle.LauncherPod(ctx, c.Kube, vmi)
				if perr == nil && pod != nil {
					return pod, nil
				}
				if apierrors.IsForbidden(perr) || apierrors.IsUnauthorized(perr) {
					return nil, perr
				}
				last = perr
			}
		case apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err):
			return nil, err // waiting will not change RBAC
		case apierrors.IsNotFound(err):
			last = nil
		case ctx.Err() == nil:
			last = err
		}
		if !told {
			fmt.Fprintf(e.ErrOut, "Waiting up to %s for VMI %s to be running…\n", timeout, name)
			told = true
		}
		t := time.NewTimer(consolePoll)
		select {
		case <-ctx.Done():
			t.Stop()
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				if last != nil {
					return nil, fmt.Errorf("Timeout trying to connect to the virtual machine instance: %v", last)
				}
				return nil, errors.New("Timeout trying to connect to the virtual machine instance")
			}
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

func (e *env) console(ctx context.Context, name string, timeout time.Duration) error {
	c, err := e.connect()
	if err != nil {
		return err
	}
	pod, err := e.waitConsole(ctx, c, name, timeout)
	if err != nil {
		return err
	}

	// The exec reads stdin only once its streams to the pod are up: the first read is the moment the
	// console is connected. Only then does the terminal go raw and the banner appear, so a failed
	// connection leaves the terminal untouched and prints just the error.
	var (
		once     sync.Once
		restore  func()
		rawError error
	)
	connected := func() {
		once.Do(func() {
			if f, ok := e.In.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
				state, err := term.MakeRaw(int(f.Fd()))
				if err != nil {
					rawError = fmt.Errorf("Make raw terminal failed: %s", err)
					return
				}
				restore = func() { _ = term.Restore(int(f.Fd()), state) }
			}
			fmt.Fprintf(e.ErrOut, "Successfully connected to %s console. The escape sequence is ^]\n", name)
		})
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	escaped := make(chan struct{})
	stdin := copyUntilEscape(e.In, cancel, escaped)
	defer stdin.Close()
	var stderr bytes.Buffer
	err = e.executor(c).Exec(ctx, lifecycle.ExecRequest{
		Namespace: c.Namespace, Pod: pod.Name, Container: lifecycle.LauncherContainer,
		Command: []string{lifecycle.LauncherBinary, "console"},
		Stdin:   &onFirstRead{r: stdin, f: connected}, Stdout: e.Out, Stderr: &stderr,
	})
	wasConnected := true
	once.Do(func() { wasConnected = false }) // after this, restore and rawError are settled
	if restore != nil {
		defer restore()
	}
	if rawError != nil {
		return rawError
	}
	select {
	case <-escaped:
		fmt.Fprint(e.ErrOut, "\r\n")
		return nil
	default:
	}
	if out := bytes.TrimSpace(stderr.Bytes()); err != nil && len(out) > 0 {
		err = fmt.Errorf("%s: %v", out, err)
	}
	if !wasConnected {
		if err == nil {
			err = errors.New("the connection closed before it was established")
		}
		return fmt.Errorf("cannot connect to the console of VMI %s (launcher pod %s): %v", name, pod.Name, err)
	}
	if ctx.Err() != nil && err != nil {
		return ctx.Err()
	}
	fmt.Fprint(e.ErrOut, "\r\nYou were disconnected from the console. This has one of the following reasons:\r\n"+
		" - another user connected to the console of the target vm\r\n - network issues\r\n - the VMI stopped or restarted\r\n")
	return err
}

// onFirstRead calls f before the first Read is passed on.
type onFirstRead struct {
	r    io.Reader
	f    func()
	done bool
}

func (o *onFirstRead) Read(p []byte) (int, error) {
	if !o.done {
		o.done = true
		o.f()
	}
	return o.r.Read(p)
}

// copyUntilEscape returns a reader carrying in's bytes up to (not including) the first ^]; at ^] it
// closes escaped, calls cancel and ends the stream. The copying goroutine ends at ^], at in's EOF or
// error, or at its next read once the returned reader is closed.
func copyUntilEscape(in io.Reader, cancel func(), escaped chan<- struct{}) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		buf := make([]byte, 1024)
		for {
			n, err := in.Read(buf)
			if i := bytes.IndexByte(buf[:n], escapeByte); i >= 0 {
				if i > 0 {
					_, _ = pw.Write(buf[:i])
				}
				close(escaped)
				_ = pw.Close()
				cancel()
				return
			}
			if n > 0 {
				if _, werr := pw.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				_ = pw.CloseWithError(err)
				return
			}
		}
	}()
	return pr
}
