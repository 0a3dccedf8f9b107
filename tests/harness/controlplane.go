package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// ErrNoBinary means the multi-call kube binary has not been built.
var ErrNoBinary = errors.New("kube binary missing: run `just cluster-build`")

// Options configures a control plane.
type Options struct {
	// ControllerManager also starts kube-controller-manager: garbage collection (ownerReference cascade
	// and orphan deletion), namespace deletion, service-account tokens.
	ControllerManager bool
	// Binary is the multi-call kube binary; default $KVIRT_KUBE_BINARY, else build/cluster/bin/kube
	// in the repository.
	Binary string
	// Dir holds the PKI, etcd data and logs; default a new temporary directory that Stop removes.
	Dir string
	// StartTimeout bounds the wait for readiness; default 90s.
	StartTimeout time.Duration
	// APIServerArgs are extra kube-apiserver flags (--feature-gates=..., --runtime-config=...).
	APIServerArgs []string
	// Progress, when set, receives one line per step.
	Progress io.Writer
}

// ControlPlane is a running etcd + kube-apiserver (+ kube-controller-manager).
type ControlPlane struct {
	// Config is an admin (system:masters) client configuration.
	Config *rest.Config
	// Kubeconfig is the path of an admin kubeconfig file for kubectl.
	Kubeconfig string
	// URL is the apiserver's address, https://127.0.0.1:PORT.
	URL string
	// Dir holds pki/, etcd/, and one <component>.log per process.
	Dir string
	PKI *PKI

	processes []*Process
	removeDir bool
	stopOnce  sync.Once
}

// KubeBinary returns the path of the multi-call kube binary or ErrNoBinary (wrapped with the path).
func KubeBinary(override string) (string, error) {
	p := override
	if p == "" {
		p = os.Getenv("KVIRT_KUBE_BINARY")
	}
	if p == "" {
		root, err := repoRoot()
		if err != nil {
			return "", fmt.Errorf("%w (%v)", ErrNoBinary, err)
		}
		p = filepath.Join(root, "build", "cluster", "bin", "kube")
	}
	if st, err := os.Stat(p); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("%w (%s not an executable file)", ErrNoBinary, p)
	}
	return p, nil
}

// RequireKubeBinary returns the kube binary's path (override as for KubeBinary), skipping the test
// when it is missing, or failing it under KVIRT_REQUIRE_CLUSTER=1.
func RequireKubeBinary(t testing.TB, override string) string {
	t.Helper()
	p, err := KubeBinary(override)
	if err != nil {
		if ClusterRequired() {
			t.Fatalf("%v", err)
		}
		t.Skipf("%v", err)
	}
	return p
}

// ClusterRequired reports whether a missing kube binary must fail tests (KVIRT_REQUIRE_CLUSTER=1, set in CI)
// instead of skipping them.
func ClusterRequired() bool { return os.Getenv("KVIRT_REQUIRE_CLUSTER") == "1" }

// StartControlPlane starts a control plane for one test and stops it (removing its directory) when the
// test ends. Component logs are printed if the test failed. Without the kube binary the test is skipped,
// or fails under KVIRT_REQUIRE_CLUSTER=1.
func StartControlPlane(t testing.TB, opts Options) *ControlPlane {
	t.Helper()
	opts.Binary = RequireKubeBinary(t, opts.Binary)
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	cp, err := Start(opts)
	if err != nil {
		t.Fatalf("control plane: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("control plane logs (%s):\n%s", cp.Dir, cp.LogTails(40))
		}
		cp.Stop()
	})
	return cp
}

// Start starts etcd, kube-apiserver and, if asked, kube-controller-manager on free 127.0.0.1 ports and
// waits until the apiserver's /readyz answers ok. On error everything started is stopped again and the
// error carries the tail of the failing component's log.
func Start(opts Options) (*ControlPlane, error) {
	// Free ports are picked before the components bind them; another process may take one in between.
	for attempt := 1; ; attempt++ {
		cp, err := start(opts)
		if err == nil || attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			return cp, err
		}
		if opts.Progress != nil {
			fmt.Fprintf(opts.Progress, "[control-plane] a port was taken meanwhile; starting again\n")
		}
		if opts.Dir != "" {
			os.RemoveAll(filepath.Join(opts.Dir, "etcd")) // a new member on new ports
		}
	}
}

func start(opts Options) (*ControlPlane, error) {
	bin, err := KubeBinary(opts.Binary)
	if err != nil {
		return nil, err
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 90 * time.Second
	}
	progress := func(format string, args ...any) {
		if opts.Progress != nil {
			fmt.Fprintf(opts.Progress, "[control-plane] "+format+"\n", args...)
		}
	}
	cp := &ControlPlane{Dir: opts.Dir}
	if cp.Dir == "" {
		sweepStaleDirs()
		d, err := os.MkdirTemp("", tempDirPrefix)
		if err != nil {
			return nil, fmt.Errorf("control plane: %w", err)
		}
		cp.Dir, cp.removeDir = d, true
		if err := os.WriteFile(filepath.Join(d, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			return nil, fmt.Errorf("control plane: %w", err)
		}
	}
	ok := false
	defer func() {
		if !ok {
			cp.Stop()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), opts.StartTimeout)
	defer cancel()

	progress("generating PKI in %s", cp.Dir)
	if cp.PKI, err = NewPKI(filepath.Join(cp.Dir, "pki")); err != nil {
		return nil, err
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	cp.URL = "https://127.0.0.1:" + strconv.Itoa(ports[2])

	progress("starting etcd on %s", etcdURL)
	etcd, err := cp.start(bin, "etcd", EtcdArgs(filepath.Join(cp.Dir, "etcd"), ports[0], ports[1]), false)
	if err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, etcd, etcdURL+"/health", nil); err != nil {
		return nil, err
	}

	progress("starting kube-apiserver on %s", cp.URL)
	apiArgs, err := APIServerArgs(cp.PKI, etcdURL, ports[2], filepath.Join(cp.Dir, "apiserver"))
	if err != nil {
		return nil, err
	}
	apiserver, err := cp.start(bin, "kube-apiserver", append(apiArgs, opts.APIServerArgs...), false)
	if err != nil {
		return nil, err
	}
	cp.Config, cp.Kubeconfig, err = cp.PKI.UserKubeconfig(cp.URL, "admin", "kubernetes-admin", []string{"system:masters"}, filepath.Join(cp.Dir, "kubeconfig"))
	if err != nil {
		return nil, err
	}
	if err := waitReadyz(ctx, apiserver, cp.Config); err != nil {
		return nil, err
	}

	if opts.ControllerManager {
		progress("starting kube-controller-manager")
		_, kcmKubeconfig, err := cp.PKI.UserKubeconfig(cp.URL, "controller-manager", "system:kube-controller-manager", nil, filepath.Join(cp.Dir, "controller-manager.kubeconfig"))
		if err != nil {
			return nil, err
		}
		kcm, err := cp.start(bin, "kube-controller-manager", ControllerManagerArgs(cp.PKI, kcmKubeconfig, 0, filepath.Join(cp.Dir, "controller-manager")), false)
		if err != nil {
			return nil, err
		}
		// The service-account controller creating default/default shows the controllers are running.
		if err := waitServiceAccount(ctx, kcm, cp.Config, "default"); err != nil {
			return nil, err
		}
	}
	progress("ready: %s (kubeconfig %s)", cp.URL, cp.Kubeconfig)
	ok = true
	return cp, nil
}

func (cp *ControlPlane) start(bin, name string, args []string, detach bool) (*Process, error) {
	p, err := startProcess(name, bin, append([]string{name}, args...), nil, filepath.Join(cp.Dir, name+".log"), detach)
	if err != nil {
		return nil, err
	}
	cp.processes = append(cp.processes, p)
	return p, nil
}

// Stop stops every process (newest first: SIGTERM, then SIGKILL after 10s) and removes the directory
// if Start created it. It is safe to call more than once.
func (cp *ControlPlane) Stop() {
	cp.stopOnce.Do(func() {
		for i := len(cp.processes) - 1; i >= 0; i-- {
			cp.processes[i].Stop(10 * time.Second)
		}
		if cp.removeDir {
			os.RemoveAll(cp.Dir)
		}
	})
}

// Processes returns the running components, oldest first.
func (cp *ControlPlane) Processes() []*Process { return append([]*Process(nil), cp.processes...) }

// LogTails returns the last n lines of every component's log.
func (cp *ControlPlane) LogTails(n int) string {
	var b strings.Builder
	for _, p := range cp.processes {
		fmt.Fprintf(&b, "----- %s (pid %d, %s) -----\n%s\n", p.Name, p.PID(), p.LogPath, p.Tail(n))
	}
	return b.String()
}

// Clientset returns a typed admin client.
func (cp *ControlPlane) Clientset(t testing.TB) kubernetes.Interface {
	t.Helper()
	c, err := kubernetes.NewForConfig(cp.Config)
	if err != nil {
		t.Fatalf("clientset: %v", err)
	}
	return c
}

// Namespace creates a namespace with a unique name for the test (and its "default" service account,
// which pods need when no controller-manager runs) and deletes it when the test ends.
func (cp *ControlPlane) Namespace(t testing.TB) string {
	t.Helper()
	c := cp.Clientset(t)
	ctx := context.Background()
	name := strings.ToLower(t.Name())
	name = strings.Map(func(r rune) rune {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			return r
		}
		return '-'
	}, name)
	if len(name) > 40 {
		name = name[:40]
	}
	ns, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: strings.Trim(name, "-") + "-"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	_, err = c.CoreV1().ServiceAccounts(ns.Name).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create service account %s/default: %v", ns.Name, err)
	}
	t.Cleanup(func() {
		_ = c.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{})
	})
	return ns.Name
}

// UserKubeconfig issues a client certificate for user (CommonName) in groups and writes a kubeconfig
// for server to path. It returns the matching rest.Config too.
func (p *PKI) UserKubeconfig(server, name, user string, groups []string, path string) (*rest.Config, string, error) {
	certPEM, keyPEM, err := p.Issue(CertSpec{Name: name, CommonName: user, Organization: groups, Client: true})
	if err != nil {
		return nil, "", err
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["kvirt"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: p.CAPEM}
	kc.AuthInfos[name] = &clientcmdapi.AuthInfo{ClientCertificateData: certPEM, ClientKeyData: keyPEM}
	kc.Contexts["kvirt"] = &clientcmdapi.Context{Cluster: "kvirt", AuthInfo: name}
	kc.CurrentContext = "kvirt"
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return nil, "", fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	cfg := &rest.Config{
		Host:            server,
		TLSClientConfig: rest.TLSClientConfig{CAData: p.CAPEM, CertData: certPEM, KeyData: keyPEM},
		QPS:             200,
		Burst:           400,
	}
	return cfg, path, nil
}

// EtcdArgs are the flags of a single-member etcd on 127.0.0.1 storing in dataDir. fsync is off: the
// data of a test cluster is not worth the time.
func EtcdArgs(dataDir string, clientPort, peerPort int) []string {
	client := "http://127.0.0.1:" + strconv.Itoa(clientPort)
	peer := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	return []string{
		"--name=default",
		"--data-dir=" + dataDir,
		"--listen-client-urls=" + client,
		"--advertise-client-urls=" + client,
		"--listen-peer-urls=" + peer,
		"--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=default=" + peer,
		"--unsafe-no-fsync=true",
		"--log-level=warn",
	}
}

// FrontProxyClient is the common name of the apiserver's client certificate towards aggregated API
// servers (--proxy-client-cert-file, --requestheader-allowed-names).
const FrontProxyClient = "front-proxy-client"

// APIServerArgs are the flags of a kube-apiserver on 127.0.0.1:port backed by etcdURL. A serving
// certificate for 127.0.0.1, localhost and the in-cluster names is issued into the PKI, and the
// aggregation layer is configured (front-proxy client certificate and requestheader flags), so API
// servers behind an APIService (virt-api) authenticate the users the apiserver forwards.
func APIServerArgs(p *PKI, etcdURL string, port int, certDir string) ([]string, error) {
	if _, _, err := p.Issue(CertSpec{Name: "apiserver", CommonName: "kube-apiserver", Server: true, Hosts: []string{
		"127.0.0.1", "localhost", KubernetesServiceIP, BridgeAddress, "kubernetes", "kubernetes.default", "kubernetes.default.svc",
		"kubernetes.default.svc.cluster.local",
	}}); err != nil {
		return nil, err
	}
	if _, _, err := p.Issue(CertSpec{Name: "apiserver-kubelet-client", CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}, Client: true}); err != nil {
		return nil, err
	}
	// The aggregator's client certificate towards aggregated API servers (virt-api): they trust the user
	// named in its X-Remote-* headers because the certificate is from the requestheader CA and named
	// FrontProxyClient.
	if _, _, err := p.Issue(CertSpec{Name: "front-proxy-client", CommonName: FrontProxyClient, Client: true}); err != nil {
		return nil, err
	}
	return []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + certDir,
		"--tls-cert-file=" + p.Path("apiserver.crt"),
		"--tls-private-key-file=" + p.Path("apiserver.key"),
		"--client-ca-file=" + p.Path(caCertFile),
		"--kubelet-client-certificate=" + p.Path("apiserver-kubelet-client.crt"),
		"--kubelet-client-key=" + p.Path("apiserver-kubelet-client.key"),
		"--proxy-client-cert-file=" + p.Path("front-proxy-client.crt"),
		"--proxy-client-key-file=" + p.Path("front-proxy-client.key"),
		"--requestheader-client-ca-file=" + p.Path(caCertFile),
		"--requestheader-allowed-names=" + FrontProxyClient,
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + p.Path(saPubFile),
		"--service-account-signing-key-file=" + p.Path(saKeyFile),
		"--service-cluster-ip-range=10.96.0.0/16",
		"--authorization-mode=Node,RBAC",
		"--endpoint-reconciler-type=none",
		"--allow-privileged=true",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
	}, nil
}

// ControllerManagerArgs are the flags of a kube-controller-manager using kubeconfig. securePort 0
// serves nothing.
func ControllerManagerArgs(p *PKI, kubeconfig string, securePort int, certDir string) []string {
	return []string{
		"--kubeconfig=" + kubeconfig,
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(securePort),
		"--cert-dir=" + certDir,
		"--leader-elect=false",
		"--service-account-private-key-file=" + p.Path(saKeyFile),
		"--root-ca-file=" + p.Path(caCertFile),
		"--cluster-signing-cert-file=" + p.Path(caCertFile),
		"--cluster-signing-key-file=" + p.Path(caKeyFile),
		"--use-service-account-credentials=true", // each controller acts as its own kube-system service account (bootstrap RBAC roles)
		"--profiling=false",
	}
}

const (
	tempDirPrefix = "kvirt-controlplane-"
	ownerFile     = "owner.pid"
)

// sweepStaleDirs removes the temporary directories of control planes whose test process died without
// stopping them (killed by a timeout or ^C; the components themselves died with it): the owner PID
// is gone, or, for a directory without an owner file, it is over an hour old.
func sweepStaleDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), tempDirPrefix+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, ownerFile))
		if err != nil {
			if st, err := os.Stat(d); err == nil && time.Since(st.ModTime()) > time.Hour {
				os.RemoveAll(d)
			}
			continue
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 && !pidAlive(pid) {
			os.RemoveAll(d)
		}
	}
}

// freePorts returns n distinct TCP ports free on 127.0.0.1 at the time of the call.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// failed describes a component that exited or did not become ready, with its log tail.
func failed(p *Process, what string, err error) error {
	return fmt.Errorf("%s %s: %v\n----- last lines of %s -----\n%s", p.Name, what, err, p.LogPath, p.Tail(30))
}

// poll calls check every 100ms until it returns true, p exits, or ctx ends.
func poll(ctx context.Context, p *Process, what string, check func() (bool, error)) error {
	var last error
	for {
		if exited, err := p.Exited(); exited {
			return failed(p, "exited", err)
		}
		done, err := check()
		if done {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last == nil {
				last = ctx.Err()
			}
			return failed(p, "not ready ("+what+")", last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func waitHTTP(ctx context.Context, p *Process, url string, client *http.Client) error {
	if client == nil {
		client = &http.Client{Timeout: 2 * time.Second}
	}
	return poll(ctx, p, url, func() (bool, error) {
		resp, err := client.Get(url)
		if err != nil {
			return false, err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false, fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
		}
		return true, nil
	})
}

func waitReadyz(ctx context.Context, p *Process, cfg *rest.Config) error {
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	return poll(ctx, p, "/readyz", func() (bool, error) {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		body, err := c.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(rctx)
		if err != nil {
			return false, fmt.Errorf("/readyz: %v: %s", err, body)
		}
		return strings.TrimSpace(string(body)) == "ok", fmt.Errorf("/readyz: %s", body)
	})
}

func waitServiceAccount(ctx context.Context, p *Process, cfg *rest.Config, ns string) error {
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	return poll(ctx, p, "service account "+ns+"/default", func() (bool, error) {
		_, err := c.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, err
	})
}

// repoRoot walks up from the working directory to the go.mod of github.com/kvirt/kvirt.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.HasPrefix(string(b), "module github.com/kvirt/kvirt\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("repository root (go.mod of github.com/kvirt/kvirt) not found above the working directory")
		}
		dir = parent
	}
}
