package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	kvclient "github.com/kvirt/kvirt/api/client/clientset/versioned"
	kvinformers "github.com/kvirt/kvirt/api/client/informers/externalversions"
	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"
)

// Options configure a virt-controller.
type Options struct {
	// LauncherImage is the virt-launcher image of launcher pods.
	LauncherImage string
	// ControlPort of the launcher's control API (default DefaultControlPort).
	ControlPort int
	// HostDisks allows hostDisk volumes (KubeVirt's HostDisk feature gate; off by default).
	HostDisks bool
	// Status is where launcher state comes from (the control-API client; a fake in tests).
	Status StatusSource
	// NodeNotReadyTimeout is how long a node may be NotReady (Ready condition False or Unknown) before
	// the VMIs on it show phase Unknown (default DefaultNodeNotReadyTimeout).
	NodeNotReadyTimeout time.Duration
	// Workers per controller (default 3).
	Workers int
	// ResyncPeriod of the informers (default 10 min).
	ResyncPeriod time.Duration
	// QPS and Burst of the controller's API clients (default 100 and 200; client-go's 5/10 would make a
	// thousand VMs crawl).
	QPS   float32
	Burst int
	// Logger (default slog.Default()).
	Logger *slog.Logger
	// Metrics (default: a fresh set).
	Metrics *Metrics
}

// Controller bundles the VM and VMI controllers and their informers.
type Controller struct {
	opts      Options
	kube      kubernetes.Interface
	kvFactory kvinformers.SharedInformerFactory
	podInf    cache.SharedIndexInformer
	secretInf cache.SharedIndexInformer
	nodeInf   cache.SharedIndexInformer
	kubeFacts []informers.SharedInformerFactory
	vm        *VMController
	vmi       *VMIController
	broadcast record.EventBroadcaster
	log       *slog.Logger
	synced    atomic.Bool
	Metrics   *Metrics
}

// Scheme knows Kubernetes' built-in types and kubevirt.io/v1 (for events).
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = v1.AddToScheme(s)
	return s
}

// New wires the controllers to a cluster.
func New(cfg *rest.Config, opts Options) (*Controller, error) {
	if opts.Workers <= 0 {
		opts.Workers = 3
	}
	if opts.ResyncPeriod <= 0 {
		opts.ResyncPeriod = 10 * time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics()
	}
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = opts.QPS, opts.Burst
	if cfg.QPS <= 0 {
		cfg.QPS = 100
	}
	if cfg.Burst <= 0 {
		cfg.Burst = 200
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	kv, err := kvclient.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubevirt client: %w", err)
	}
	return NewWithClients(kube, kv, opts)
}

// NewWithClients wires the controllers to the given clients (fake ones in unit tests).
func NewWithClients(kube kubernetes.Interface, kv kvclient.Interface, opts Options) (*Controller, error) {
	if opts.Workers <= 0 {
		opts.Workers = 3
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics()
	}
	if opts.NodeNotReadyTimeout <= 0 {
		opts.NodeNotReadyTimeout = DefaultNodeNotReadyTimeout
	}
	c := &Controller{opts: opts, kube: kube, log: opts.Logger, Metrics: opts.Metrics}
	c.kvFactory = kvinformers.NewSharedInformerFactory(kv, opts.ResyncPeriod)
	launcherPods := informers.NewSharedInformerFactoryWithOptions(kube, opts.ResyncPeriod, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.LabelSelector = labels.Set{v1.AppLabel: v1.VirtLauncherValue}.String()
	}))
	tokenSecrets := informers.NewSharedInformerFactoryWithOptions(kube, opts.ResyncPeriod, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.LabelSelector = labels.Set{v1.AppLabel: TokenSecretLabelValue}.String()
	}))
	// PVCs: all of them (a VM's template and a VMI name their claims), for WaitingForVolumeBinding, the
	// launcher pod's volumes and ErrorPvcNotFound. Nodes: all of them, to notice a lost node (node.go).
	claims := informers.NewSharedInformerFactory(kube, opts.ResyncPeriod)
	c.kubeFacts = []informers.SharedInformerFactory{launcherPods, tokenSecrets, claims}
	pvcInf := claims.Core().V1().PersistentVolumeClaims().Informer()
	c.nodeInf = claims.Core().V1().Nodes().Informer()
	c.podInf = launcherPods.Core().V1().Pods().Informer()
	c.secretInf = tokenSecrets.Core().V1().Secrets().Informer()
	vmInf := c.kvFactory.Kubevirt().V1().VirtualMachines().Informer()
	vmiInf := c.kvFactory.Kubevirt().V1().VirtualMachineInstances().Informer()

	c.broadcast = record.NewBroadcaster()
	recorder := c.broadcast.NewRecorder(Scheme(), corev1.EventSource{Component: "virtualmachine-controller"})
	var err error
	if c.vm, err = newVMController(kv, vmInf, vmiInf, pvcInf, recorder, opts.Logger, opts.Metrics); err != nil {
		return nil, err
	}
	if rc, ok := kv.KubevirtV1().RESTClient().(*rest.RESTClient); ok && rc != nil {
		c.vm.raw = rc // fake clientsets have none: VMIs are then created from the typed template
	}
	pc := PodConfig{Image: opts.LauncherImage, ControlPort: opts.ControlPort, HostDisks: opts.HostDisks,
		ControlLoopback: !needsPodIP(opts.Status)}
	if c.vmi, err = newVMIController(kube, kv, vmiInf, c.podInf, c.secretInf, pvcInf, c.nodeInf, recorder, opts.Status, pc, opts.NodeNotReadyTimeout, opts.Logger, opts.Metrics); err != nil {
		return nil, err
	}
	if err := opts.Metrics.registry.Register(newPhaseCollector(c.vmi.vmis)); err != nil {
		return nil, err
	}
	return c, nil
}

// Run starts informers and workers and blocks until ctx ends; on return every goroutine it started
// has stopped.
func (c *Controller) Run(ctx context.Context) error {
	stopEvents := c.broadcast.StartStructuredLogging(0)
	sink := &typedcorev1.EventSinkImpl{Interface: c.kube.CoreV1().Events("")}
	watcher := c.broadcast.StartRecordingToSink(sink)
	defer func() {
		watcher.Stop()
		stopEvents.Stop()
		c.broadcast.Shutdown()
	}()

	c.kvFactory.Start(ctx.Done())
	for _, f := range c.kubeFacts {
		f.Start(ctx.Done())
	}
	defer func() {
		c.kvFactory.Shutdown()
		for _, f := range c.kubeFacts {
			f.Shutdown()
		}
	}()
	c.log.Info("waiting for informer caches")
	for typ, ok := range c.kvFactory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("cache of %v did not sync", typ)
		}
	}
	for _, f := range c.kubeFacts {
		for typ, ok := range f.WaitForCacheSync(ctx.Done()) {
			if !ok {
				return fmt.Errorf("cache of %v did not sync", typ)
			}
		}
	}
	c.synced.Store(true)
	c.log.Info("caches synced; controllers running", "workers", c.opts.Workers)
	done := make(chan struct{}, 2)
	go func() { c.vm.Run(ctx, c.opts.Workers); done <- struct{}{} }()
	go func() { c.vmi.Run(ctx, c.opts.Workers); done <- struct{}{} }()
	<-done
	<-done
	c.synced.Store(false)
	return nil
}

// Ready reports whether the caches synced and the workers run (for /readyz).
func (c *Controller) Ready() bool { return c.synced.Load() }

// ServeHTTP serves /healthz, /readyz (ready once leading with synced caches, or always when ready is
// nil) and /metrics on addr until ctx ends.
func ServeHTTP(ctx context.Context, addr string, metrics *Metrics, ready func() bool, log *slog.Logger) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ready != nil && !ready() {
			http.Error(w, "not ready: not leading or caches not synced", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	mux.Handle("/metrics", promhttp.HandlerFor(metrics.Registry(), promhttp.HandlerOpts{}))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s for health and metrics: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("serving health and metrics", "addr", ln.Addr().String())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// LeaderElection configures RunWithLeaderElection.
type LeaderElection struct {
	Namespace string // of the Lease (default: POD_NAMESPACE or "kubevirt")
	Name      string // of the Lease (default "virt-controller")
	Identity  string // default: hostname
}

// RunWithLeaderElection runs run once this process holds the Lease. Losing the Lease cancels run's
// context and returns an error (the process should exit and start over); ctx ending returns nil.
func RunWithLeaderElection(ctx context.Context, kube kubernetes.Interface, le LeaderElection, log *slog.Logger, run func(context.Context)) error {
	if le.Namespace == "" {
		le.Namespace = os.Getenv("POD_NAMESPACE")
	}
	if le.Namespace == "" {
		le.Namespace = "kubevirt"
	}
	if le.Name == "" {
		le.Name = "virt-controller"
	}
	if le.Identity == "" {
		h, _ := os.Hostname()
		le.Identity = fmt.Sprintf("%s_%d", h, os.Getpid())
	}
	ectx, stopElector := context.WithCancel(ctx)
	defer stopElector()
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: le.Namespace, Name: le.Name},
		Client:     kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: le.Identity},
	}
	elector, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   15 * time.Second,
		RenewDeadline:   10 * time.Second,
		RetryPeriod:     2 * time.Second,
		ReleaseOnCancel: true,
		Name:            le.Name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(lctx context.Context) {
				run(lctx)
				// The controller stopped by itself (not for a lost Lease): give the Lease up too.
				stopElector()
			},
			OnStoppedLeading: func() { log.Info("leadership lost or released", "identity", le.Identity) },
			OnNewLeader:      func(id string) { log.Info("leader", "identity", id) },
		},
	})
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	elector.Run(ectx)
	if ctx.Err() == nil {
		// Like Kubernetes' controllers: a controller that lost its Lease (or stopped) exits and is
		// restarted fresh.
		return errors.New("leader election lost, or the controller stopped while leading")
	}
	return nil
}
