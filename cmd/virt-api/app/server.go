package app

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/apiserver/pkg/server/options"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/component-base/compatibility"

	"github.com/kvirt/kvirt/api/client/clientset/versioned"
	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/lifecycle"
)

// Options configure virt-api. The zero value of every field but Namespace means the default.
type Options struct {
	// Kubeconfig is the file to reach the apiserver with; "" means in-cluster (the pod's service account).
	// virt-api acts with it and delegates authentication and authorization to that apiserver.
	Kubeconfig string
	// Namespace holds virt-api's Secret and Service.
	Namespace string
	// Listener, when set, is served instead of BindAddress:Port.
	Listener    net.Listener
	BindAddress net.IP
	Port        int // default 8443
	// ServiceName is the Service the APIService names (default virt-api); the certificate is for its names.
	ServiceName string
	// CertSecret is the Secret holding the CA and serving certificate (default virt-api-certs).
	CertSecret string
	// APIService is the APIService whose caBundle virt-api keeps (default v1.subresources.kubevirt.io);
	// "-" leaves it alone.
	APIService string
	// CertCheckInterval is how often each replica re-reads the Secret and the APIService (default 1m).
	CertCheckInterval time.Duration
	// Exec runs commands in launcher pods; nil means pod exec through the apiserver.
	Exec lifecycle.Executor
	Log  *slog.Logger
}

func (o *Options) defaults() {
	if o.Port == 0 {
		o.Port = 8443
	}
	if o.BindAddress == nil {
		o.BindAddress = net.IPv4zero
	}
	if o.ServiceName == "" {
		o.ServiceName = "virt-api"
	}
	if o.CertSecret == "" {
		o.CertSecret = "virt-api-certs"
	}
	if o.APIService == "" {
		o.APIService = "v1." + v1.SubresourceGroupName
	} else if o.APIService == "-" {
		o.APIService = ""
	}
	if o.CertCheckInterval == 0 {
		o.CertCheckInterval = time.Minute
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
}

// Run serves virt-api until ctx ends: an aggregated API server (k8s.io/apiserver) that authenticates
// callers through the apiserver's front proxy headers and client certificates (the
// kube-system/extension-apiserver-authentication ConfigMap) and authorises each request with a
// SubjectAccessReview, then answers KubeVirt's subresources.kubevirt.io/v1 (Handler).
func Run(ctx context.Context, o Options) error {
	o.defaults()
	if o.Namespace == "" {
		return fmt.Errorf("virt-api: no namespace (set --namespace or POD_NAMESPACE)")
	}
	cfg, err := restConfig(o.Kubeconfig)
	if err != nil {
		return err
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("virt-api: kubernetes client: %w", err)
	}
	kv, err := versioned.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("virt-api: kubevirt client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("virt-api: dynamic client: %w", err)
	}
	if o.Exec == nil {
		o.Exec = lifecycle.NewSPDYExecutor(cfg, kube)
	}

	cert := &servingCert{kube: kube, dyn: dyn, namespace: o.Namespace, secret: o.CertSecret, apiService: o.APIService,
		hosts: serviceHosts(o.ServiceName, o.Namespace), interval: o.CertCheckInterval, now: time.Now, log: o.Log}
	if err := cert.RunOnce(ctx); err != nil {
		return fmt.Errorf("virt-api: serving certificate: %w", err)
	}

	scheme := runtime.NewScheme()
	metav1.AddToGroupVersion(scheme, schema.GroupVersion{Version: "v1"})
	codecs := serializer.NewCodecFactory(scheme)
	sc := genericapiserver.NewRecommendedConfig(codecs)
	sc.EffectiveVersion = compatibility.NewEffectiveVersionFromString("1.33", "", "")

	serving := options.NewSecureServingOptions().WithLoopback()
	serving.Listener, serving.BindAddress, serving.BindPort = o.Listener, o.BindAddress, o.Port
	serving.ServerCert.GeneratedCert = cert
	if err := serving.ApplyTo(&sc.SecureServing, &sc.LoopbackClientConfig); err != nil {
		return fmt.Errorf("virt-api: serving: %w", err)
	}
	authn := options.NewDelegatingAuthenticationOptions()
	authn.RemoteKubeConfigFile = o.Kubeconfig
	if err := authn.ApplyTo(&sc.Authentication, sc.SecureServing, nil); err != nil {
		return fmt.Errorf("virt-api: delegated authentication: %w", err)
	}
	authz := options.NewDelegatingAuthorizationOptions()
	authz.RemoteKubeConfigFile = o.Kubeconfig
	// As KubeVirt's virt-api: discovery, version and healthz need no SubjectAccessReview of their own
	// (the apiserver authorised the user; the aggregator fetches discovery as itself, with no groups).
	authz.AlwaysAllowPaths = append(authz.AlwaysAllowPaths, "/", "/apis", GroupPath, VersionPath,
		VersionPath+"/version", VersionPath+"/healthz", "/openapi/v2", "/openapi/v3")
	if err := authz.ApplyTo(&sc.Authorization); err != nil {
		return fmt.Errorf("virt-api: delegated authorization: %w", err)
	}

	srv, err := sc.Complete().New("virt-api", genericapiserver.NewEmptyDelegate())
	if err != nil {
		return fmt.Errorf("virt-api: %w", err)
	}
	h := &Handler{Clients: lifecycle.Clients{Kubevirt: kv, Kube: kube}, Exec: o.Exec, Log: o.Log}
	srv.Handler.NonGoRestfulMux.Handle(GroupPath, groupHandler{})
	srv.Handler.NonGoRestfulMux.HandlePrefix(GroupPath+"/", h)
	srv.DiscoveryGroupManager.AddGroup(apiGroup())
	srv.AggregatedDiscoveryGroupManager.AddGroupVersion(v1.SubresourceGroupName, aggregatedVersion())
	srv.AddPostStartHookOrDie("virt-api-serving-certificate", func(hc genericapiserver.PostStartHookContext) error {
		go cert.Run(hc, 1)
		return nil
	})
	o.Log.Info("virt-api serving", "group", GroupVersion, "namespace", o.Namespace)
	return srv.PrepareRun().RunWithContext(ctx)
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		cfg, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("virt-api: in-cluster config (or pass --kubeconfig): %w", err)
		}
		return cfg, nil
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("virt-api: kubeconfig %s: %w", kubeconfig, err)
	}
	return cfg, nil
}
