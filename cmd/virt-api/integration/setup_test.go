package integration_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kvirt/kvirt/api/client/clientset/versioned"
	kvscheme "github.com/kvirt/kvirt/api/client/clientset/versioned/scheme"
	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/cmd/virt-api/app"
	"github.com/kvirt/kvirt/launcher"
	"github.com/kvirt/kvirt/launcher/control"
	"github.com/kvirt/kvirt/lifecycle"
	"github.com/kvirt/kvirt/tests/harness"
)

// virtAPINamespace is where deploy/virt-api puts virt-api.
const virtAPINamespace = "kubevirt"

var (
	// stopVirtAPI ends every virt-api started by the tests; TestMain calls it after the last test.
	stopCtx, stopVirtAPI = context.WithCancel(context.Background())
	virtAPIs             sync.WaitGroup
)

func TestMain(m *testing.M) {
	code := harness.RunShared(m, harness.Options{})
	stopVirtAPI()
	virtAPIs.Wait()
	os.Exit(code)
}

// env is the shared control plane with virt-api running behind its APIService.
type env struct {
	cp      *harness.ControlPlane
	kv      versioned.Interface
	kube    kubernetes.Interface
	dyn     dynamic.Interface
	exec    *launcherExec
	apiPort int
	// virtAPIConfig is virt-api's own identity: the admin impersonating its service account.
	virtAPIKubeconfig string
}

var (
	envOnce sync.Once
	shared  *env
	envErr  error
)

func repoPath(parts ...string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(append([]string{filepath.Dir(file), "..", "..", ".."}, parts...)...)
}

// setup returns the shared environment: CRDs, deploy/virt-api's RBAC, roles and APIService, a Service
// that sends the aggregator to virt-api on 127.0.0.1, and one virt-api replica, Available.
func setup(t *testing.T) *env {
	t.Helper()
	cp := harness.Shared(t)
	envOnce.Do(func() { shared, envErr = newEnv(cp) })
	if envErr != nil {
		t.Fatalf("virt-api environment: %v", envErr)
	}
	return shared
}

func newEnv(cp *harness.ControlPlane) (*env, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := harness.InstallCRDs(ctx, cp.Config, repoPath("deploy", "crds", "kubevirt.io_virtualmachines.yaml"),
		repoPath("deploy", "crds", "kubevirt.io_virtualmachineinstances.yaml")); err != nil {
		return nil, err
	}
	e := &env{cp: cp, exec: &launcherExec{sockets: map[string]string{}}}
	var err error
	if e.kv, err = versioned.NewForConfig(cp.Config); err != nil {
		return nil, err
	}
	if e.kube, err = kubernetes.NewForConfig(cp.Config); err != nil {
		return nil, err
	}
	if e.dyn, err = dynamic.NewForConfig(cp.Config); err != nil {
		return nil, err
	}
	if _, err := e.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: virtAPINamespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	e.apiPort = l.Addr().(*net.TCPAddr).Port
	for _, f := range []string{"rbac.yaml", "roles.yaml", "apiservice.yaml"} {
		if err := e.apply(ctx, repoPath("deploy", "virt-api", f)); err != nil {
			return nil, err
		}
	}
	// No kube-proxy and no pod network here: the Service is an ExternalName for localhost, and the
	// APIService names virt-api's port, which the aggregator then dials on localhost (the Service's port
	// is not used for an ExternalName). The serving certificate is still checked for virt-api.kubevirt.svc.
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "virt-api", Namespace: virtAPINamespace},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "localhost"}}
	if _, err := e.kube.CoreV1().Services(virtAPINamespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	patch := fmt.Sprintf(`{"spec":{"service":{"port":%d}}}`, e.apiPort)
	if _, err := e.dyn.Resource(apiServiceGVR).Patch(ctx, "v1.subresources.kubevirt.io", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		return nil, err
	}
	if e.virtAPIKubeconfig, err = impersonatingKubeconfig(cp, "system:serviceaccount:kubevirt:virt-api"); err != nil {
		return nil, err
	}
	e.startVirtAPI(l)
	if err := e.waitAvailable(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

var apiServiceGVR = schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}

// startVirtAPI runs one virt-api replica on l until TestMain ends. It checks its certificate often, so a
// test that changes the Secret sees the replicas follow quickly.
func (e *env) startVirtAPI(l net.Listener) {
	virtAPIs.Add(1)
	go func() {
		defer virtAPIs.Done()
		err := app.Run(stopCtx, app.Options{Kubeconfig: e.virtAPIKubeconfig, Namespace: virtAPINamespace,
			Listener: l, Exec: e.exec, CertCheckInterval: 500 * time.Millisecond})
		if err != nil && stopCtx.Err() == nil {
			fmt.Fprintf(os.Stderr, "virt-api on %s: %v\n", l.Addr(), err)
		}
	}()
}

// waitAvailable waits for the aggregator to report the APIService Available (it reached virt-api and
// trusted its certificate through the caBundle virt-api wrote) and then for a request proxied through the
// aggregator to succeed: the availability controller and the proxy handler each take the new caBundle from
// their own informer, so Available can come a moment before the proxy trusts virt-api's certificate.
func (e *env) waitAvailable(ctx context.Context) error {
	var last string
	for {
		as, err := e.dyn.Resource(apiServiceGVR).Get(ctx, "v1.subresources.kubevirt.io", metav1.GetOptions{})
		if err == nil {
			conds, _, _ := unstructured.NestedSlice(as.Object, "status", "conditions")
			for _, c := range conds {
				m, _ := c.(map[string]any)
				if m["type"] == "Available" {
					if m["status"] == "True" {
						_, err := e.kube.Discovery().RESTClient().Get().AbsPath("/apis/subresources.kubevirt.io/v1/version").DoRaw(ctx)
						if err == nil {
							return nil
						}
						last = "Available, but a proxied GET version failed: " + err.Error()
						break
					}
					last = fmt.Sprintf("%v: %v", m["reason"], m["message"])
				}
			}
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("APIService v1.subresources.kubevirt.io not Available: %s", last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// impersonatingKubeconfig writes a kubeconfig: the control plane's admin acting as user.
func impersonatingKubeconfig(cp *harness.ControlPlane, user string) (string, error) {
	kc, err := clientcmd.LoadFromFile(cp.Kubeconfig)
	if err != nil {
		return "", err
	}
	for _, a := range kc.AuthInfos {
		a.Impersonate = user
	}
	path := filepath.Join(cp.Dir, "virt-api-"+strconv.Itoa(os.Getpid())+".kubeconfig")
	return path, clientcmd.WriteToFile(*kc, path)
}

// apply creates every object of a manifest file.
func (e *env) apply(ctx context.Context, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	for {
		var m map[string]any
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if m == nil {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		gvr, ok := resources[u.GetKind()]
		if !ok {
			return fmt.Errorf("%s: kind %s not handled by the test", path, u.GetKind())
		}
		var ri dynamic.ResourceInterface = e.dyn.Resource(gvr)
		if ns := u.GetNamespace(); ns != "" {
			ri = e.dyn.Resource(gvr).Namespace(ns)
		}
		if _, err := ri.Create(ctx, u, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("%s: %s %s: %w", path, u.GetKind(), u.GetName(), err)
		}
	}
}

var resources = map[string]schema.GroupVersionResource{
	"ServiceAccount":     {Version: "v1", Resource: "serviceaccounts"},
	"ClusterRole":        {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"},
	"ClusterRoleBinding": {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings"},
	"Role":               {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "roles"},
	"RoleBinding":        {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "rolebindings"},
	"APIService":         apiServiceGVR,
}

// kubecli returns a REST client configured as KubeVirt's kubecli configures its own (GroupVersion
// kubevirt.io/v1, APIPath /apis, JSON), acting as user ("" = the admin).
func (e *env) kubecli(t *testing.T, user string) *rest.RESTClient {
	t.Helper()
	cfg := rest.CopyConfig(e.cp.Config)
	cfg.GroupVersion = &v1.GroupVersion
	cfg.APIPath = "/apis"
	cfg.ContentType = "application/json"
	cfg.NegotiatedSerializer = serializer.WithoutConversionCodecFactory{CodecFactory: kvscheme.Codecs}
	if user != "" {
		cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	}
	c, err := rest.RESTClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func template() *v1.VirtualMachineInstanceTemplateSpec {
	return &v1.VirtualMachineInstanceTemplateSpec{Spec: v1.VirtualMachineInstanceSpec{Domain: v1.DomainSpec{
		Resources: v1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")}},
	}}}
}

func (e *env) createVM(t *testing.T, ns, name string, rs v1.VirtualMachineRunStrategy) *v1.VirtualMachine {
	t.Helper()
	vm := &v1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.VirtualMachineSpec{Template: template(), RunStrategy: &rs}}
	vm, err := e.kv.KubevirtV1().VirtualMachines(ns).Create(context.Background(), vm, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create VM %s: %v", name, err)
	}
	vm.Status.PrintableStatus = v1.VirtualMachineStatusStopped
	if vm, err = e.kv.KubevirtV1().VirtualMachines(ns).UpdateStatus(context.Background(), vm, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("VM %s status: %v", name, err)
	}
	return vm
}

func (e *env) getVM(t *testing.T, ns, name string) *v1.VirtualMachine {
	t.Helper()
	vm, err := e.kv.KubevirtV1().VirtualMachines(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get VM %s: %v", name, err)
	}
	return vm
}

// createVMI creates a VMI in phase (with Paused=True when paused), as the controllers would leave it.
func (e *env) createVMI(t *testing.T, ns, name string, phase v1.VirtualMachineInstancePhase, paused bool) *v1.VirtualMachineInstance {
	t.Helper()
	ctx := context.Background()
	vmi := &v1.VirtualMachineInstance{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: template().Spec}
	vmi, err := e.kv.KubevirtV1().VirtualMachineInstances(ns).Create(ctx, vmi, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create VMI %s: %v", name, err)
	}
	vmi.Status.Phase = phase
	if paused {
		vmi.Status.Conditions = []v1.VirtualMachineInstanceCondition{{Type: v1.VirtualMachineInstancePaused, Status: corev1.ConditionTrue, Reason: "PausedByUser"}}
	}
	if vmi, err = e.kv.KubevirtV1().VirtualMachineInstances(ns).UpdateStatus(ctx, vmi, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("VMI %s status: %v", name, err)
	}
	return vmi
}

// createLauncherPod creates vmi's running launcher pod (bound to a node no kubelet serves) and, when
// guest is set, a real launcher control API for it that the test's exec reaches.
func (e *env) createLauncherPod(t *testing.T, vmi *v1.VirtualMachineInstance, guest *fakeGuest) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "virt-launcher-" + vmi.Name + "-", Labels: map[string]string{
			v1.AppLabel: v1.VirtLauncherValue, v1.CreatedByLabel: string(vmi.UID)}},
		Spec: corev1.PodSpec{NodeName: "no-such-node", Containers: []corev1.Container{{Name: lifecycle.LauncherContainer, Image: "kvirt/virt-launcher"}}},
	}
	pod, err := e.kube.CoreV1().Pods(vmi.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create launcher pod: %v", err)
	}
	pod.Status.Phase = corev1.PodRunning
	if pod, err = e.kube.CoreV1().Pods(vmi.Namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("launcher pod running: %v", err)
	}
	if guest != nil {
		e.exec.serve(t, pod, guest)
	}
	return pod
}

// fakeGuest is the VMM side of a launcher's control API: it records pause and resume.
type fakeGuest struct {
	mu     sync.Mutex
	paused bool
}

func (g *fakeGuest) Pause() error           { g.mu.Lock(); defer g.mu.Unlock(); g.paused = true; return nil }
func (g *fakeGuest) Resume() error          { g.mu.Lock(); defer g.mu.Unlock(); g.paused = false; return nil }
func (g *fakeGuest) RequestShutdown() error { return nil }
func (g *fakeGuest) Stop() error            { return nil }
func (g *fakeGuest) Console() (io.ReadCloser, io.Writer, error) {
	return nil, nil, errors.New("no console in this test")
}
func (g *fakeGuest) isPaused() bool { g.mu.Lock(); defer g.mu.Unlock(); return g.paused }

// launcherExec stands in for the kubelet: an exec in a launcher pod runs the real `virt-launcher
// pause|unpause` code (launcher.Subcommand) against that pod's control API server in this process.
type launcherExec struct {
	mu      sync.Mutex
	sockets map[string]string // namespace/pod → control socket
	reqs    []lifecycle.ExecRequest
}

func (x *launcherExec) serve(t *testing.T, pod *corev1.Pod, guest *fakeGuest) {
	sock := filepath.Join(t.TempDir(), "launcher.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &control.Server{VM: guest, Board: control.NewBoard(control.Status{Phase: control.Running})}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(l, true) }()
	t.Cleanup(func() { srv.Close(); <-done })
	x.mu.Lock()
	x.sockets[pod.Namespace+"/"+pod.Name] = sock
	x.mu.Unlock()
}

func (x *launcherExec) Exec(ctx context.Context, r lifecycle.ExecRequest) error {
	x.mu.Lock()
	x.reqs = append(x.reqs, r)
	sock, ok := x.sockets[r.Namespace+"/"+r.Pod]
	x.mu.Unlock()
	if !ok {
		return fmt.Errorf("pod %s/%s: no launcher listens (error dialing backend)", r.Namespace, r.Pod)
	}
	if r.Container != lifecycle.LauncherContainer || len(r.Command) != 2 || r.Command[0] != lifecycle.LauncherBinary {
		return fmt.Errorf("exec %q in container %q: not a launcher subcommand", r.Command, r.Container)
	}
	stderr := r.Stderr
	if stderr == nil {
		stderr = io.Discard
	}
	if code := launcher.Subcommand(ctx, sock, r.Command[1], nil, io.Discard, stderr); code != 0 {
		return fmt.Errorf("command terminated with exit code %d", code)
	}
	return nil
}

func (x *launcherExec) requests(pod string) []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out []string
	for _, r := range x.reqs {
		if r.Pod == pod {
			out = append(out, strings.Join(r.Command, " "))
		}
	}
	return out
}
