// Command virt-controller runs kvirt's VirtualMachine and VirtualMachineInstance controllers.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/kvirt/kvirt/controller"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "virt-controller:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		kubeconfig    = flag.String("kubeconfig", "", "kubeconfig file (default: in-cluster config, then $KUBECONFIG)")
		launcherImage = flag.String("launcher-image", "", "virt-launcher image for launcher pods (required)")
		controlPort   = flag.Int("launcher-control-port", controller.DefaultControlPort, "TCP port of the launcher's control API")
		connect       = flag.String("launcher-connect", "portforward", "how to reach launchers' control API: portforward (pods/portforward through the apiserver; every binding) or pod-ip (direct; not with the bridge binding, whose pod IP is the guest's)")
		addr          = flag.String("metrics-addr", ":8443", "address serving /healthz, /readyz and /metrics")
		leaderElect   = flag.Bool("leader-elect", true, "hold a Lease so only one replica acts")
		leaseNS       = flag.String("leader-elect-namespace", "", "namespace of the Lease (default $POD_NAMESPACE, else kubevirt)")
		workers       = flag.Int("workers", 3, "workers per controller")
		qps           = flag.Float64("kube-api-qps", 100, "queries per second to the apiserver")
		burst         = flag.Int("kube-api-burst", 200, "burst of queries to the apiserver")
		verbose       = flag.Bool("v", false, "debug logging")
		hostDisks     = flag.Bool("host-disks", false, "allow hostDisk volumes (KubeVirt's HostDisk feature gate): whoever can create a VMI can then create and write files on the node")

		notReady = flag.Duration("node-not-ready-timeout", controller.DefaultNodeNotReadyTimeout, "how long a node may be NotReady (Ready condition False or Unknown) before the VMIs on it show phase Unknown")
	)
	flag.Parse()
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)
	if *notReady <= 0 {
		return fmt.Errorf("--node-not-ready-timeout %v: must be positive", *notReady)
	}
	if *launcherImage == "" {
		return fmt.Errorf("--launcher-image is required (the virt-launcher image launcher pods run)")
	}
	cfg, err := restConfig(*kubeconfig)
	if err != nil {
		return err
	}
	var status controller.StatusSource
	switch *connect {
	case "portforward":
		if status, err = controller.NewPortForwardStatusSource(cfg); err != nil {
			return err
		}
	case "pod-ip":
		status = controller.NewControlStatusSource()
	default:
		return fmt.Errorf("--launcher-connect %q: use portforward or pod-ip", *connect)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	metrics := controller.NewMetrics()
	c, err := controller.New(cfg, controller.Options{
		LauncherImage: *launcherImage,
		HostDisks:     *hostDisks,
		ControlPort:   *controlPort,
		Status:        status,
		Workers:       *workers,
		QPS:           float32(*qps),
		Burst:         *burst,
		Logger:        log,
		Metrics:       metrics,

		NodeNotReadyTimeout: *notReady,
	})
	if err != nil {
		return err
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- controller.ServeHTTP(ctx, *addr, metrics, c.Ready, log) }()

	runErr := make(chan error, 1)
	go func() {
		if !*leaderElect {
			runErr <- c.Run(ctx)
			return
		}
		kube, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			runErr <- err
			return
		}
		var inner error
		err = controller.RunWithLeaderElection(ctx, kube, controller.LeaderElection{Namespace: *leaseNS}, log, func(lctx context.Context) {
			inner = c.Run(lctx)
		})
		if err == nil {
			err = inner
		}
		runErr <- err
	}()
	select {
	case err := <-serveErr:
		stop()
		<-runErr
		return err
	case err := <-runErr:
		stop()
		<-serveErr
		return err
	}
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		if cfg, err := rest.InClusterConfig(); err == nil {
			return cfg, nil
		}
		kubeconfig = os.Getenv("KUBECONFIG")
	}
	if kubeconfig == "" {
		return nil, fmt.Errorf("no cluster config: not in a pod; pass --kubeconfig or set KUBECONFIG")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	return cfg, nil
}
