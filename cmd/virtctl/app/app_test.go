package app

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	kvfake "github.com/kvirt/kvirt/api/client/clientset/versioned/fake"
	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/lifecycle"
)

// fakeExec records exec requests; it drains stdin (until EOF or cancellation) and writes stdout.
type fakeExec struct {
	mu     sync.Mutex
	reqs   []lifecycle.ExecRequest
	stdin  []byte
	stdout string
	err    error
	// refuse fails the exec before any stream is up (stdin is never read).
	refuse error
}

func (f *fakeExec) Exec(ctx context.Context, r lifecycle.ExecRequest) error {
	f.mu.Lock()
	f.reqs = append(f.reqs, r)
	f.mu.Unlock()
	if f.refuse != nil {
		return f.refuse
	}
	if r.Stdout != nil && f.stdout != "" {
		_, _ = io.WriteString(r.Stdout, f.stdout)
	}
	if r.Stdin != nil {
		done := make(chan []byte)
		go func() { b, _ := io.ReadAll(r.Stdin); done <- b }()
		select {
		case b := <-done:
			f.mu.Lock()
			f.stdin = b
			f.mu.Unlock()
		case <-ctx.Done():
			b := <-done // the escape closes the pipe before cancelling, so this returns
			f.mu.Lock()
			f.stdin = b
			f.mu.Unlock()
			return ctx.Err()
		}
	}
	return f.err
}

type fakeCluster struct {
	kv   *kvfake.Clientset
	dyn  *dynamicfake.FakeDynamicClient // the same kubevirt.io objects, untyped
	kube *kubefake.Clientset
	exec *fakeExec
}

func newFake(kv []runtime.Object, kube ...runtime.Object) *fakeCluster {
	scheme := runtime.NewScheme()
	if err := v1.AddToScheme(scheme); err != nil {
		panic(err)
	}
	var copies []runtime.Object
	for _, o := range kv {
		copies = append(copies, o.DeepCopyObject())
	}
	return &fakeCluster{kv: kvfake.NewSimpleClientset(kv...), dyn: dynamicfake.NewSimpleDynamicClient(scheme, copies...),
		kube: kubefake.NewSimpleClientset(kube...), exec: &fakeExec{}}
}

func (f *fakeCluster) clients() *Clients {
	return &Clients{Namespace: "ns", Kubevirt: f.kv, Kube: f.kube, Dynamic: f.dyn}
}

func (f *fakeCluster) run(t *testing.T, in io.Reader, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	if in == nil {
		in = strings.NewReader("")
	}
	code = Run(context.Background(), args, Options{
		In: in, Out: &out, ErrOut: &errOut,
		Connect: func(*genericclioptions.ConfigFlags) (*Clients, error) { return f.clients(), nil },
		Exec:    f.exec,
	})
	return code, out.String(), errOut.String()
}

func noConnect(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Run(context.Background(), args, Options{
		Out: &out, ErrOut: &errOut, In: strings.NewReader(""),
		Connect: func(*genericclioptions.ConfigFlags) (*Clients, error) {
			t.Errorf("%v connected to the cluster; it should fail before", args)
			return nil, errors.New("no cluster in this test")
		},
	})
	return code, out.String(), errOut.String()
}

func TestForceAndGraceTogether(t *testing.T) {
	for _, args := range [][]string{
		{"stop", "my-vm", "--force"},
		{"stop", "my-vm", "--grace-period=0"},
		{"restart", "my-vm", "--force"},
		{"restart", "my-vm", "--grace-period", "0"},
	} {
		code, out, errOut := noConnect(t, args...)
		if code != 1 || out != "" || errOut != "Must both use --force=true and set --grace-period.\n" {
			t.Errorf("%v: code %d stdout %q stderr %q", args, code, out, errOut)
		}
	}
}

func TestArgumentErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"start"}, "accepts 1 arg(s), received 0"},
		{[]string{"pause", "vmx", "a"}, "unsupported resource type: vmx"},
		{[]string{"expose", "vm", "a", "--port", "80"}, `required flag(s) "name" not set`},
		{[]string{"expose", "vm", "a", "--name", "s", "--port", "80", "--type", "ExternalName"}, "type: ExternalName not supported"},
		{[]string{"expose", "vm", "a", "--name", "s", "--port", "80", "--protocol", "ICMP"}, "unknown protocol: ICMP"},
		{[]string{"expose", "vm", "a", "--name", "s", "--ip-family", "IPv5"}, "unknown IPFamily/s: IPv5"},
		{[]string{"expose", "vmx", "a", "--name", "s"}, "unsupported resource type: vmx"},
		{[]string{"rename", "vmi", "a", "b"}, "only VirtualMachines can be renamed"},
		{[]string{"console", "a", "--timeout=-1"}, "--timeout must be 0 or more minutes"},
		{[]string{"stop", "my-vm", "--grace-period=x", "--force"}, "invalid argument"},
	} {
		code, _, errOut := noConnect(t, tc.args...)
		if code != 1 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: code %d stderr %q, want it to contain %q", tc.args, code, errOut, tc.want)
		}
	}
}

func vmObj(rs v1.VirtualMachineRunStrategy) *v1.VirtualMachine {
	vm := testVM(rs)
	return vm
}

func TestLifecycleMessages(t *testing.T) {
	for _, tc := range []struct {
		args            []string
		rs              v1.VirtualMachineRunStrategy
		vmi             *v1.VirtualMachineInstance
		code            int
		stdout, stderr  string
		wantRunStrategy v1.VirtualMachineRunStrategy
	}{
		{[]string{"start", "my-vm"}, v1.RunStrategyHalted, nil, 0, "VM my-vm was scheduled to start\n", "", v1.RunStrategyAlways},
		{[]string{"start", "my-vm"}, v1.RunStrategyAlways, nil, 1, "", "Error starting VirtualMachine Operation cannot be fulfilled on virtualmachine.kubevirt.io \"my-vm\": Always does not support manual start requests\n", v1.RunStrategyAlways},
		{[]string{"stop", "my-vm"}, v1.RunStrategyAlways, nil, 0, "VM my-vm was scheduled to stop\n", "", v1.RunStrategyHalted},
		{[]string{"stop", "my-vm"}, v1.RunStrategyManual, nil, 1, "", "error stopping VirtualMachine Operation cannot be fulfilled on virtualmachine.kubevirt.io \"my-vm\": VM is not running\n", v1.RunStrategyManual},
		{[]string{"stop", "my-vm", "--force", "--grace-period=0"}, v1.RunStrategyManual, nil, 1, "", "error force stopping VirtualMachine: Operation cannot be fulfilled on virtualmachine.kubevirt.io \"my-vm\": VM is not running\n", v1.RunStrategyManual},
		{[]string{"restart", "my-vm"}, v1.RunStrategyHalted, nil, 1, "", "error restarting VirtualMachine: Operation cannot be fulfilled on virtualmachine.kubevirt.io \"my-vm\": RunStategy Halted does not support manual restart requests\n", v1.RunStrategyHalted},
		{[]string{"restart", "my-vm", "--force", "--grace-period=3"}, v1.RunStrategyAlways, testVMI(v1.Running), 1, "", "error force restarting VirtualMachine: For force restart, only gracePeriod=0 is supported for now\n", v1.RunStrategyAlways},
		{[]string{"start", "my-vm", "--dry-run"}, v1.RunStrategyHalted, nil, 0, "Dry Run execution\nVM my-vm was scheduled to start\n", "", ""},
		{[]string{"start", "nope"}, v1.RunStrategyHalted, nil, 1, "", "Error starting VirtualMachine virtualmachine.kubevirt.io \"nope\" not found\n", v1.RunStrategyHalted},
	} {
		t.Run(strings.Join(tc.args, " ")+" "+string(tc.rs), func(t *testing.T) {
			objs := []runtime.Object{vmObj(tc.rs)}
			if tc.vmi != nil {
				objs = append(objs, tc.vmi)
			}
			f := newFake(objs)
			code, out, errOut := f.run(t, nil, tc.args...)
			if code != tc.code || out != tc.stdout || errOut != tc.stderr {
				t.Fatalf("code %d stdout %q stderr %q\nwant %d %q %q", code, out, errOut, tc.code, tc.stdout, tc.stderr)
			}
			if tc.wantRunStrategy == "" { // dry run: every write must carry dryRun=All
				patches := 0
				for _, a := range f.kv.Actions() {
					if pa, ok := a.(k8stesting.PatchActionImpl); ok {
						patches++
						if d := pa.GetPatchOptions().DryRun; len(d) != 1 || d[0] != metav1.DryRunAll {
							t.Errorf("patch without dryRun=All: %s", pa.GetPatch())
						}
					}
				}
				if patches == 0 {
					t.Error("dry run sent no patch to validate")
				}
				return
			}
			vm, err := f.kv.KubevirtV1().VirtualMachines("ns").Get(context.Background(), "my-vm", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if *vm.Spec.RunStrategy != tc.wantRunStrategy {
				t.Errorf("runStrategy %s, want %s", *vm.Spec.RunStrategy, tc.wantRunStrategy)
			}
		})
	}
}

func pausedVMI(paused bool) *v1.VirtualMachineInstance {
	vmi := testVMI(v1.Running)
	if paused {
		vmi.Status.Conditions = []v1.VirtualMachineInstanceCondition{{Type: v1.VirtualMachineInstancePaused, Status: corev1.ConditionTrue, Reason: v1.PausedByUserReason}}
	}
	return vmi
}

func launcherPodFor(vmi *v1.VirtualMachineInstance, phase corev1.PodPhase) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "virt-launcher-my-vm-abcde", Namespace: "ns", Labels: map[string]string{
			v1.AppLabel: v1.VirtLauncherValue, v1.CreatedByLabel: string(vmi.UID), v1.VirtualMachineInstanceIDLabel: vmi.Name,
		}},
		Status: corev1.PodStatus{Phase: phase},
	}
}

func TestPauseUnpause(t *testing.T) {
	const vmiPrefix = `Operation cannot be fulfilled on virtualmachineinstance.kubevirt.io "my-vm": `
	for _, tc := range []struct {
		name     string
		args     []string
		vm       *v1.VirtualMachine
		vmi      *v1.VirtualMachineInstance
		pod      bool
		code     int
		stdout   string
		stderr   string
		execArgv string
	}{
		{"pause vmi", []string{"pause", "vmi", "my-vm"}, nil, pausedVMI(false), true, 0, "VMI my-vm was scheduled to pause\n", "", "virt-launcher pause"},
		{"pause vm", []string{"pause", "VirtualMachine", "my-vm"}, testVM(v1.RunStrategyAlways), pausedVMI(false), true, 0, "VMI my-vm was scheduled to pause\n", "", "virt-launcher pause"},
		{"unpause vm", []string{"unpause", "vm", "my-vm"}, testVM(v1.RunStrategyAlways), pausedVMI(true), true, 0, "VMI my-vm was scheduled to unpause\n", "", "virt-launcher unpause"},
		{"pause paused", []string{"pause", "vmi", "my-vm"}, nil, pausedVMI(true), true, 1, "", "Error pausing VirtualMachineInstance my-vm: " + vmiPrefix + "VMI is already paused\n", ""},
		{"unpause unpaused", []string{"unpause", "vmi", "my-vm"}, nil, pausedVMI(false), true, 1, "", "Error unpausing VirtualMachineInstance my-vm: " + vmiPrefix + "VMI is not paused\n", ""},
		{"pause scheduling", []string{"pause", "vmi", "my-vm"}, nil, testVMI(v1.Scheduling), true, 1, "", "Error pausing VirtualMachineInstance my-vm: " + vmiPrefix + "VM is not running\n", ""},
		{"unpause succeeded", []string{"unpause", "vmi", "my-vm"}, nil, testVMI(v1.Succeeded), true, 1, "", "Error unpausing VirtualMachineInstance my-vm: " + vmiPrefix + "VMI is not running\n", ""},
		{"pause halted vm", []string{"pause", "vm", "my-vm"}, testVM(v1.RunStrategyHalted), nil, false, 1, "", "Error pausing VirtualMachineInstance my-vm. VirtualMachine my-vm is not set to run\n", ""},
		{"pause manual vm", []string{"pause", "vm", "my-vm"}, testVM(v1.RunStrategyManual), nil, false, 1, "", "Error pausing VirtualMachineInstance my-vm, it was not found\n", ""},
		{"pause missing vm", []string{"pause", "vm", "my-vm"}, nil, nil, false, 1, "", "Error getting VirtualMachine my-vm: virtualmachines.kubevirt.io \"my-vm\" not found\n", ""},
		{"pause missing vmi", []string{"pause", "vmi", "my-vm"}, nil, nil, false, 1, "", "Error pausing VirtualMachineInstance my-vm: virtualmachineinstance.kubevirt.io \"my-vm\" not found\n", ""},
		{"pause no pod", []string{"pause", "vmi", "my-vm"}, nil, pausedVMI(false), false, 1, "", "Error pausing VirtualMachineInstance my-vm: " + vmiPrefix + "VMI has no running launcher pod\n", ""},
		{"pause dry run", []string{"pause", "vmi", "my-vm", "--dry-run"}, nil, pausedVMI(false), true, 0, "Dry Run execution\nVMI my-vm was scheduled to pause\n", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var kv, kube []runtime.Object
			if tc.vm != nil {
				kv = append(kv, tc.vm)
			}
			if tc.vmi != nil {
				kv = append(kv, tc.vmi)
				if tc.pod {
					kube = append(kube, launcherPodFor(tc.vmi, corev1.PodRunning))
				}
			}
			f := newFake(kv, kube...)
			code, out, errOut := f.run(t, nil, tc.args...)
			if code != tc.code || out != tc.stdout || errOut != tc.stderr {
				t.Fatalf("code %d stdout %q stderr %q\nwant %d %q %q", code, out, errOut, tc.code, tc.stdout, tc.stderr)
			}
			var argv string
			if len(f.exec.reqs) == 1 {
				r := f.exec.reqs[0]
				argv = strings.Join(r.Command, " ")
				if r.Pod != "virt-launcher-my-vm-abcde" || r.Container != "compute" || r.Namespace != "ns" {
					t.Errorf("exec in %s/%s container %s", r.Namespace, r.Pod, r.Container)
				}
			} else if len(f.exec.reqs) > 1 {
				t.Fatalf("%d execs", len(f.exec.reqs))
			}
			if argv != tc.execArgv {
				t.Errorf("exec %q, want %q", argv, tc.execArgv)
			}
		})
	}
}

func TestPauseExecFailure(t *testing.T) {
	vmi := pausedVMI(false)
	f := newFake([]runtime.Object{vmi}, launcherPodFor(vmi, corev1.PodRunning))
	f.exec.err = errors.New("command terminated with exit code 1")
	f.exec.stdout = "guest is shutting down\n"
	code, _, errOut := f.run(t, nil, "pause", "vmi", "my-vm")
	want := "Error pausing VirtualMachineInstance my-vm: Internal error occurred: guest is shutting down: command terminated with exit code 1\n"
	if code != 1 || errOut != want {
		t.Fatalf("code %d stderr %q, want %q", code, errOut, want)
	}
}

func TestConsole(t *testing.T) {
	vmi := pausedVMI(true) // the console works while paused
	f := newFake([]runtime.Object{vmi}, launcherPodFor(vmi, corev1.PodRunning))
	f.exec.stdout = "login: "
	code, out, errOut := f.run(t, iotest.OneByteReader(strings.NewReader("root\r\x1dtyped after escape")), "console", "my-vm")
	if code != 0 {
		t.Fatalf("code %d stderr %q", code, errOut)
	}
	if out != "login: " {
		t.Errorf("stdout %q", out)
	}
	if !strings.Contains(errOut, "Successfully connected to my-vm console. The escape sequence is ^]") {
		t.Errorf("stderr %q", errOut)
	}
	if string(f.exec.stdin) != "root\r" {
		t.Errorf("guest got %q, want the bytes before ^] only", f.exec.stdin)
	}
	if got := strings.Join(f.exec.reqs[0].Command, " "); got != "virt-launcher console" {
		t.Errorf("exec %q", got)
	}
}

func TestConsoleDisconnected(t *testing.T) {
	vmi := pausedVMI(false)
	f := newFake([]runtime.Object{vmi}, launcherPodFor(vmi, corev1.PodRunning))
	code, _, errOut := f.run(t, strings.NewReader("abc"), "console", "my-vm")
	if code != 0 || !strings.Contains(errOut, "You were disconnected from the console") {
		t.Fatalf("code %d stderr %q", code, errOut)
	}
}

func TestConsoleConnectFails(t *testing.T) {
	vmi := pausedVMI(false)
	f := newFake([]runtime.Object{vmi}, launcherPodFor(vmi, corev1.PodRunning))
	f.exec.refuse = errors.New("upgrade request failed")
	code, out, errOut := f.run(t, strings.NewReader("abc"), "console", "my-vm")
	want := "cannot connect to the console of VMI my-vm (launcher pod virt-launcher-my-vm-abcde): upgrade request failed\n"
	if code != 1 || out != "" || errOut != want {
		t.Fatalf("code %d stdout %q stderr %q, want %q", code, out, errOut, want)
	}
}

func TestConsoleTimeout(t *testing.T) {
	f := newFake(nil)
	start := time.Now()
	code, _, errOut := f.run(t, nil, "console", "my-vm", "--timeout=0")
	if code != 1 || !strings.Contains(errOut, "Timeout trying to connect to the virtual machine instance") {
		t.Fatalf("code %d stderr %q", code, errOut)
	}
	if time.Since(start) > 10*time.Second {
		t.Errorf("--timeout=0 took %s", time.Since(start))
	}
	f = newFake([]runtime.Object{testVMI(v1.Failed)})
	code, _, errOut = f.run(t, nil, "console", "my-vm")
	if code != 1 || !strings.Contains(errOut, "VMI my-vm has finished (phase Failed)") {
		t.Fatalf("code %d stderr %q", code, errOut)
	}
}

// The console waits for a VMI that is not running yet and connects once it runs.
func TestConsoleWaitsForRunning(t *testing.T) {
	old := consolePoll
	consolePoll = 10 * time.Millisecond
	defer func() { consolePoll = old }()
	vmi := testVMI(v1.Scheduled)
	f := newFake([]runtime.Object{vmi})
	done := make(chan struct{})
	var code int
	var errOut string
	go func() {
		defer close(done)
		code, _, errOut = f.run(t, strings.NewReader("\x1d"), "console", "my-vm", "--timeout=1")
	}()
	ctx := context.Background()
	// Let the console see the VMI not running first.
	deadline := time.Now().Add(10 * time.Second)
	for !f.sawVMIGet() {
		if time.Now().After(deadline) {
			t.Fatal("console never read the VMI")
		}
		time.Sleep(5 * time.Millisecond)
	}
	running := testVMI(v1.Running)
	if _, err := f.kv.KubevirtV1().VirtualMachineInstances("ns").Update(ctx, running, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.kube.CoreV1().Pods("ns").Create(ctx, launcherPodFor(running, corev1.PodRunning), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("console did not connect within 30s of the VMI running")
	}
	if code != 0 || !strings.Contains(errOut, "Waiting up to 1m0s for VMI my-vm to be running") || !strings.Contains(errOut, "Successfully connected") {
		t.Fatalf("code %d stderr %q", code, errOut)
	}
}

func (f *fakeCluster) sawVMIGet() bool {
	for _, a := range f.kv.Actions() {
		if a.GetVerb() == "get" && a.GetResource().Resource == "virtualmachineinstances" {
			return true
		}
	}
	return false
}

func TestCopyUntilEscape(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"abc", "abc"},
		{"ab\x1dcd", "ab"},
		{"\x1d", ""},
		{"", ""},
	} {
		for _, r := range []io.Reader{strings.NewReader(tc.in), iotest.OneByteReader(strings.NewReader(tc.in))} {
			escaped := make(chan struct{})
			cancelled := make(chan struct{})
			rc := copyUntilEscape(r, func() { close(cancelled) }, escaped)
			got, err := io.ReadAll(rc)
			if err != nil || string(got) != tc.want {
				t.Errorf("%q: got %q, %v", tc.in, got, err)
			}
			if strings.Contains(tc.in, "\x1d") {
				<-escaped
				<-cancelled
			} else {
				select {
				case <-escaped:
					t.Errorf("%q: escaped without ^]", tc.in)
				case <-cancelled:
					t.Errorf("%q: cancelled without ^]", tc.in)
				default:
				}
			}
		}
	}
}

func FuzzCopyUntilEscape(f *testing.F) {
	f.Add([]byte("abc\x1ddef"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		want := in
		if i := bytes.IndexByte(in, escapeByte); i >= 0 {
			want = in[:i]
		}
		escaped := make(chan struct{})
		got, err := io.ReadAll(copyUntilEscape(iotest.HalfReader(bytes.NewReader(in)), func() {}, escaped))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("got %q, %v; want %q", got, err, want)
		}
	})
}

func TestExpose(t *testing.T) {
	f := newFake([]runtime.Object{testVM(v1.RunStrategyAlways), testVMI(v1.Running)})
	code, out, errOut := f.run(t, nil, "expose", "VM", "my-vm", "--name", "my-vm-ssh", "--port", "2222", "--target-port", "22", "--type", "NodePort")
	if code != 0 || out != "Service my-vm-ssh successfully created for vm my-vm\n" {
		t.Fatalf("code %d stdout %q stderr %q", code, out, errOut)
	}
	svc, err := f.kube.CoreV1().Services("ns").Get(context.Background(), "my-vm-ssh", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(svc.Spec.Selector) != 1 || svc.Spec.Selector[v1.VirtualMachineInstanceIDLabel] != "my-vm" {
		t.Errorf("selector %v", svc.Spec.Selector)
	}
	if len(svc.OwnerReferences) != 1 || svc.OwnerReferences[0].Kind != "VirtualMachine" || svc.OwnerReferences[0].Name != "my-vm" {
		t.Errorf("owner references %+v", svc.OwnerReferences)
	}
	p := svc.Spec.Ports[0]
	if p.Port != 2222 || p.TargetPort.IntValue() != 22 || p.Protocol != corev1.ProtocolTCP || svc.Spec.Type != corev1.ServiceTypeNodePort {
		t.Errorf("service spec %+v", svc.Spec)
	}

	code, _, _ = f.run(t, nil, "expose", "vmi", "my-vm", "--name", "vmi-http", "--port", "80")
	svc, err = f.kube.CoreV1().Services("ns").Get(context.Background(), "vmi-http", metav1.GetOptions{})
	if code != 0 || err != nil {
		t.Fatalf("code %d, %v", code, err)
	}
	if svc.Spec.Selector[v1.VirtualMachineInstanceIDLabel] != "my-vm" || svc.Spec.Ports[0].TargetPort.IntValue() != 80 ||
		svc.OwnerReferences[0].Kind != "VirtualMachineInstance" {
		t.Errorf("vmi service %+v %+v", svc.ObjectMeta, svc.Spec)
	}

	code, _, errOut = f.run(t, nil, "expose", "vm", "my-vm", "--name", "x")
	if code != 1 || errOut != "couldn't find port via --port flag or introspection\n" {
		t.Errorf("no ports: code %d stderr %q", code, errOut)
	}
	code, _, errOut = f.run(t, nil, "expose", "vm", "other", "--name", "x", "--port", "80")
	if code != 1 || !strings.HasPrefix(errOut, "error fetching VirtualMachine: ") {
		t.Errorf("missing VM: code %d stderr %q", code, errOut)
	}
	code, _, errOut = f.run(t, nil, "expose", "vmirs", "pool", "--name", "x", "--port", "80")
	if code != 1 || !strings.HasPrefix(errOut, "error fetching VirtualMachineInstanceReplicaSet: ") {
		t.Errorf("missing replica set: code %d stderr %q", code, errOut)
	}
}

func TestRename(t *testing.T) {
	vm := testVM(v1.RunStrategyHalted)
	vm.Labels = map[string]string{"app": "web"}
	vm.Annotations = map[string]string{lastAppliedAnnotation: "{}", "note": "x"}
	f := newFake([]runtime.Object{vm})
	code, out, errOut := f.run(t, nil, "rename", "vm", "my-vm", "web-1")
	if code != 0 || out != "VM my-vm was renamed to web-1\n" {
		t.Fatalf("code %d stdout %q stderr %q", code, out, errOut)
	}
	ctx := context.Background()
	vms := f.dyn.Resource(v1.GroupVersion.WithResource("virtualmachines")).Namespace("ns")
	u, err := vms.Get(ctx, "web-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var n v1.VirtualMachine
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &n); err != nil {
		t.Fatal(err)
	}
	if n.Labels["app"] != "web" || n.Annotations["note"] != "x" || n.Annotations[lastAppliedAnnotation] != "" || *n.Spec.RunStrategy != v1.RunStrategyHalted {
		t.Errorf("renamed VM %+v", n.ObjectMeta)
	}
	if _, err := vms.Get(ctx, "my-vm", metav1.GetOptions{}); err == nil {
		t.Error("old VM still exists")
	}
}

// The copy is of the VM as stored: a field kvirt's types do not model survives, status and server-set
// metadata do not.
func TestRenamedCopy(t *testing.T) {
	stored := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
		"metadata": map[string]any{"name": "old", "namespace": "ns", "uid": "u1", "resourceVersion": "7", "generation": int64(2),
			"labels": map[string]any{"app": "web"}, "annotations": map[string]any{lastAppliedAnnotation: "{}", "note": "x"},
			"finalizers": []any{"kubevirt.io/virtualMachineControllerFinalize"}},
		"spec": map[string]any{"runStrategy": "Halted", "template": map[string]any{"spec": map[string]any{
			"domain": map[string]any{"devices": map[string]any{}, "launchSecurity": map[string]any{"sev": map[string]any{}}}}}},
		"status": map[string]any{"printableStatus": "Stopped"},
	}}
	n := RenamedCopy(stored, "new")
	if n.GetName() != "new" || n.GetNamespace() != "ns" || n.GetUID() != "" || n.GetResourceVersion() != "" || len(n.GetFinalizers()) != 0 || n.GetGeneration() != 0 {
		t.Errorf("metadata %+v", n.Object["metadata"])
	}
	if _, ok := n.Object["status"]; ok {
		t.Error("status copied")
	}
	if _, found, _ := unstructured.NestedMap(n.Object, "spec", "template", "spec", "domain", "launchSecurity", "sev"); !found {
		t.Errorf("unmodelled field lost: %+v", n.Object["spec"])
	}
	if n.GetLabels()["app"] != "web" || n.GetAnnotations()["note"] != "x" || n.GetAnnotations()[lastAppliedAnnotation] != "" {
		t.Errorf("labels %v annotations %v", n.GetLabels(), n.GetAnnotations())
	}
	// The stored object is not changed.
	if stored.GetAnnotations()[lastAppliedAnnotation] != "{}" {
		t.Error("RenamedCopy changed its input")
	}
}

func TestRenameCheck(t *testing.T) {
	for _, tc := range []struct {
		rs   v1.VirtualMachineRunStrategy
		vmi  *v1.VirtualMachineInstance
		to   string
		want string
	}{
		{v1.RunStrategyHalted, nil, "b", ""},
		{v1.RunStrategyManual, testVMI(v1.Succeeded), "b", ""},
		{v1.RunStrategyOnce, testVMI(v1.Succeeded), "b", ""},
		{v1.RunStrategyManual, testVMI(v1.Running), "b", "VirtualMachine my-vm is not stopped (its VMI is Running); stop it first: virtctl stop my-vm"},
		{v1.RunStrategyHalted, testVMI(v1.VmPhaseUnset), "b", "is not stopped (its VMI is Pending)"},
		{v1.RunStrategyAlways, nil, "b", "VirtualMachine my-vm is set to run (runStrategy Always); stop it first"},
		{v1.RunStrategyOnce, nil, "b", "is set to run (runStrategy Once)"},
		{v1.RunStrategyHalted, nil, "my-vm", "is the VM's current name"},
	} {
		err := RenameCheck(testVM(tc.rs), tc.vmi, tc.to)
		if (err == nil) != (tc.want == "") || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %v → %q: %v, want %q", tc.rs, tc.vmi != nil, tc.to, err, tc.want)
		}
	}
}

func TestVersionClient(t *testing.T) {
	code, out, errOut := noConnect(t, "version", "--client")
	if code != 0 || !strings.HasPrefix(out, "Client Version: version.Info{") || !strings.Contains(out, `GoVersion:"go`) {
		t.Fatalf("code %d stdout %q stderr %q", code, out, errOut)
	}
}

func TestCompletionAndPluginName(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		code, out, errOut := noConnect(t, "completion", shell)
		if code != 0 || !strings.Contains(out, "virtctl") || len(out) < 500 {
			t.Errorf("completion %s: code %d, %d bytes, stderr %q", shell, code, len(out), errOut)
		}
	}
	var out bytes.Buffer
	code := Run(context.Background(), []string{"start", "--help"}, Options{Name: "kubectl virt", Out: &out, ErrOut: &out})
	if code != 0 || !strings.Contains(out.String(), "kubectl virt start myvm") || !strings.Contains(out.String(), "--kubeconfig") {
		t.Errorf("plugin help: %s", out.String())
	}
}

func TestNameCompletion(t *testing.T) {
	other := testVM(v1.RunStrategyHalted)
	other.Name = "other"
	f := newFake([]runtime.Object{testVM(v1.RunStrategyAlways), other, testVMI(v1.Running)})
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"__complete", "start", "my"}, "my-vm\n:4\n"},
		{[]string{"__complete", "stop", ""}, "my-vm\nother\n:4\n"},
		{[]string{"__complete", "console", ""}, "my-vm\n:4\n"},
		{[]string{"__complete", "pause", ""}, "vm\nvmi\n:4\n"},
		{[]string{"__complete", "pause", "vm", "o"}, "other\n:4\n"},
		{[]string{"__complete", "expose", "vmi", ""}, "--name\tName of the service created for the exposure of the VM.\nmy-vm\n:4\n"},
		{[]string{"__complete", "start", "my-vm", ""}, ":4\n"},
	} {
		code, out, _ := f.run(t, nil, tc.args...)
		if code != 0 || out != tc.want {
			t.Errorf("%v: code %d out %q, want %q", tc.args, code, out, tc.want)
		}
	}
}

// Any command line gives exit status 0 or 1 and never panics or hangs (the cluster is a fake one with a
// running VM, so verbs get far).
func FuzzCommandLine(f *testing.F) {
	for _, s := range []string{
		"start my-vm --paused", "stop my-vm --force --grace-period=0", "restart my-vm --dry-run",
		"pause vm my-vm", "unpause vmi my-vm", "console my-vm --timeout=0", "expose vm my-vm --name s --port 80",
		"rename vm my-vm x", "version --client", "completion fish", "__complete pause vm ",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		vm, vmi := testVM(v1.RunStrategyAlways), pausedVMI(false)
		fc := newFake([]runtime.Object{vm, vmi}, launcherPodFor(vmi, corev1.PodRunning))
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		var out bytes.Buffer
		code := Run(ctx, strings.Fields(line), Options{
			In: strings.NewReader(""), Out: &out, ErrOut: &out,
			Connect: func(*genericclioptions.ConfigFlags) (*Clients, error) { return fc.clients(), nil },
			Exec:    fc.exec,
		})
		if code != 0 && code != 1 {
			t.Fatalf("%q: exit %d", line, code)
		}
	})
}
