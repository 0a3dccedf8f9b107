// Command virt-api serves KubeVirt's subresource API (subresources.kubevirt.io/v1: VM start, stop and
// restart, VMI pause and unpause, version, healthz) as an aggregated API server behind the APIService
// v1.subresources.kubevirt.io, so KubeVirt's own clients drive kvirt. See cmd/virt-api/app.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/kvirt/kvirt/cmd/virt-api/app"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "virt-api:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		kubeconfig = flag.String("kubeconfig", "", "kubeconfig file (default: in-cluster config)")
		namespace  = flag.String("namespace", os.Getenv("POD_NAMESPACE"), "namespace of virt-api's Service and certificate Secret (default $POD_NAMESPACE)")
		bind       = flag.String("bind-address", "0.0.0.0", "address to serve on")
		port       = flag.Int("secure-port", 8443, "HTTPS port")
		service    = flag.String("service-name", "virt-api", "the Service the APIService names; the serving certificate is for its DNS names")
		secret     = flag.String("cert-secret", "virt-api-certs", "Secret (in --namespace) holding the CA and the serving certificate all replicas share")
		apiService = flag.String("apiservice", "v1.subresources.kubevirt.io", `APIService whose caBundle virt-api keeps ("-": none)`)
		verbose    = flag.Bool("v", false, "debug logging")
	)
	flag.Parse()
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)
	ip := net.ParseIP(*bind)
	if ip == nil {
		return fmt.Errorf("--bind-address %q is not an IP address", *bind)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return app.Run(ctx, app.Options{
		Kubeconfig: *kubeconfig, Namespace: *namespace, BindAddress: ip, Port: *port,
		ServiceName: *service, CertSecret: *secret, APIService: *apiService, Log: log,
	})
}
