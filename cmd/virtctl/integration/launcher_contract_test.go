package integration_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	kubefake "k8s.io/client-go/kubernetes/fake"

	kvfake "github.com/kvirt/kvirt/api/client/clientset/versioned/fake"
	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/cmd/virtctl/app"
	"github.com/kvirt/kvirt/launcher"
	"github.com/kvirt/kvirt/launcher/control"
	"github.com/kvirt/kvirt/lifecycle"
	"github.com/kvirt/kvirt/tests/testenv"
)

// The exec contract between virtctl and the launcher, end to end except for the kubelet: virtctl's
// pause/unpause/console run the real `virt-launcher pause|unpause|console` code (launcher.Subcommand)
// against a real control-API server, as pod exec would in the launcher pod.

// echoVM is a guest whose serial console echoes its input.
type echoVM struct {
	hub    *control.ConsoleHub
	mu     sync.Mutex
	paused bool
}

func (v *echoVM) Pause() error           { v.mu.Lock(); defer v.mu.Unlock(); v.paused = true; return nil }
func (v *echoVM) Resume() error          { v.mu.Lock(); defer v.mu.Unlock(); v.paused = false; return nil }
func (v *echoVM) RequestShutdown() error { return nil }
func (v *echoVM) Stop() error            { return nil }
func (v *echoVM) isPaused() bool         { v.mu.Lock(); defer v.mu.Unlock(); return v.paused }
func (v *echoVM) Console() (io.ReadCloser, io.Writer, error) {
	return v.hub.Subscribe(), hubWriter{v.hub}, nil
}

type hubWriter struct{ h *control.ConsoleHub }

func (w hubWriter) Write(p []byte) (int, error) { return w.h.Write(p) }

// podExec runs the exec'd command in-process, as the launcher container would.
type podExec struct{ sock string }

func (x podExec) Exec(ctx context.Context, r lifecycle.ExecRequest) error {
	if r.Container != lifecycle.LauncherContainer || len(r.Command) != 2 || r.Command[0] != lifecycle.LauncherBinary {
		return fmt.Errorf("exec %q in container %q: not a launcher subcommand", r.Command, r.Container)
	}
	stdout, stderr := r.Stdout, r.Stderr
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	if code := launcher.Subcommand(ctx, x.sock, r.Command[1], r.Stdin, stdout, stderr); code != 0 {
		return fmt.Errorf("command terminated with exit code %d", code)
	}
	return nil
}

func TestLauncherExecContract(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "launcher.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	vm := &echoVM{hub: control.NewConsoleHub(0)}
	srv := &control.Server{VM: vm, Board: control.NewBoard(control.Status{Phase: control.Running})}
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(l, true) }()
	defer func() { _ = srv.Close(); <-served }()

	vmi := &v1.VirtualMachineInstance{
		ObjectMeta: metav1.ObjectMeta{Name: "g", Namespace: "ns", UID: "uid-g"},
		Status:     v1.VirtualMachineInstanceStatus{Phase: v1.Running},
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "virt-launcher-g-x", Namespace: "ns", Labels: map[string]string{
			v1.AppLabel: v1.VirtLauncherValue, v1.CreatedByLabel: "uid-g"}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
	kv, kube := kvfake.NewSimpleClientset(vmi), kubefake.NewSimpleClientset(pod)
	run := func(in io.Reader, out io.Writer, args ...string) (int, string) {
		var errOut testenv.SyncBuffer
		code := app.Run(context.Background(), args, app.Options{
			In: in, Out: out, ErrOut: &errOut, Exec: podExec{sock},
			Connect: func(*genericclioptions.ConfigFlags) (*app.Clients, error) {
				return &app.Clients{Namespace: "ns", Kubevirt: kv, Kube: kube}, nil
			},
		})
		return code, errOut.String()
	}
	setPaused := func(p bool) {
		cur, err := kv.KubevirtV1().VirtualMachineInstances("ns").Get(context.Background(), "g", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cur.Status.Conditions = nil
		if p { // what the controller reports once the launcher says so
			cur.Status.Conditions = []v1.VirtualMachineInstanceCondition{{Type: v1.VirtualMachineInstancePaused, Status: corev1.ConditionTrue}}
		}
		if _, err := kv.KubevirtV1().VirtualMachineInstances("ns").Update(context.Background(), cur, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	var out testenv.SyncBuffer
	if code, errOut := run(nil, &out, "pause", "vmi", "g"); code != 0 || out.String() != "VMI g was scheduled to pause\n" || !vm.isPaused() {
		t.Fatalf("pause: %d %q %q paused=%v", code, out.String(), errOut, vm.isPaused())
	}
	// virtctl's check passes (status not updated yet) but the launcher refuses: its reason reaches the user.
	if code, errOut := run(nil, io.Discard, "pause", "vmi", "g"); code != 1 || errOut != "Error pausing VirtualMachineInstance g: Internal error occurred: VMI is already paused: command terminated with exit code 1\n" {
		t.Fatalf("second pause: %d %q", code, errOut)
	}
	setPaused(true)

	// The console works while paused; ^] leaves; a second session attaches again.
	for session, word := range []string{"hello", "again"} {
		pr, pw := io.Pipe()
		var cout testenv.SyncBuffer
		type result struct {
			code   int
			errOut string
		}
		done := make(chan result, 1)
		go func() { c, e := run(pr, &cout, "console", "g", "--timeout=1"); done <- result{c, e} }()
		// Typing before the session is up is fine: bytes wait in the pipe.
		go func() { _, _ = pw.Write([]byte(word + "\r")) }()
		testenv.Eventually(t, fmt.Sprintf("session %d echo of %q", session, word), 10*time.Second, func() (bool, string) {
			return strings.Contains(cout.String(), word), fmt.Sprintf("console output %q", cout.String())
		})
		go func() { _, _ = pw.Write([]byte{0x1d}) }()
		select {
		case r := <-done:
			if r.code != 0 || !strings.Contains(r.errOut, "Successfully connected to g console. The escape sequence is ^]") ||
				strings.Contains(r.errOut, "disconnected") {
				t.Fatalf("session %d: %d %q", session, r.code, r.errOut)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("session %d: ^] did not end the console within 10s", session)
		}
		pw.Close()
	}

	if code, errOut := run(nil, &out, "unpause", "vm", "g"); code != 1 || !strings.Contains(errOut, "Error getting VirtualMachine g") {
		t.Fatalf("unpause vm without a VM: %d %q", code, errOut)
	}
	var out2 testenv.SyncBuffer
	if code, errOut := run(nil, &out2, "unpause", "vmi", "g"); code != 0 || out2.String() != "VMI g was scheduled to unpause\n" || vm.isPaused() {
		t.Fatalf("unpause: %d %q %q", code, out2.String(), errOut)
	}
}
