package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"sort"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// The node has no kube-proxy (it would rewrite the host's netfilter tables and sysctls). Instead a small
// userspace service proxy (ServeServices, run by Up as run/service-proxy) gives Services their meaning on
// this machine only:
//
//   - the whole service range ServiceCIDR is a local route on the pod bridge (`ip route add local
//     10.96.0.0/16 dev kvirt0`, gone with the bridge), and pods get a route to it via BridgeAddress
//     (CNI host-local `routes`), so a ClusterIP is reached from the host and from every pod;
//   - the proxy listens on ClusterIP:port of every TCP Service port, on 127.0.0.1:nodePort and
//     BridgeAddress:nodePort of NodePort Services, and copies each connection to a ready endpoint
//     (EndpointSlices) picked at random;
//   - the apiserver stays on 127.0.0.1; the proxy also listens on BridgeAddress:APIServerPort and
//     forwards to it, and Up points the `kubernetes` Service's EndpointSlice there, so in-cluster
//     clients (KUBERNETES_SERVICE_HOST=10.96.0.1) reach the API without hostNetwork.
const (
	ServiceCIDR = "10.96.0.0/16"
	// KubernetesServiceIP is the ClusterIP the apiserver gives the `kubernetes` Service (first of ServiceCIDR).
	KubernetesServiceIP = "10.96.0.1"
	serviceProxyName    = "service-proxy"
)

// kubernetesEndpointSlice is the `kubernetes` Service's endpoint: the proxy's bridge listener in front
// of the apiserver (--endpoint-reconciler-type=none leaves it to us; EndpointSlices cannot name
// 127.0.0.1).
func kubernetesEndpointSlice() *discoveryv1.EndpointSlice {
	port, name, proto := int32(APIServerPort), "https", corev1.ProtocolTCP
	ready := true
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: metav1.NamespaceDefault, Labels: map[string]string{
			discoveryv1.LabelServiceName: "kubernetes",
			discoveryv1.LabelManagedBy:   "kvirt-cluster-up",
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{BridgeAddress}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}},
	}
}

// ensureKubernetesEndpoints creates (or replaces) the `kubernetes` Service's EndpointSlice and Endpoints.
func ensureKubernetesEndpoints(ctx context.Context, client kubernetes.Interface) error {
	es := kubernetesEndpointSlice()
	slices := client.DiscoveryV1().EndpointSlices(metav1.NamespaceDefault)
	if _, err := slices.Create(ctx, es, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
		old, gerr := slices.Get(ctx, es.Name, metav1.GetOptions{})
		if gerr != nil {
			return fmt.Errorf("EndpointSlice default/kubernetes: %w", gerr)
		}
		es.ResourceVersion = old.ResourceVersion
		_, err = slices.Update(ctx, es, metav1.UpdateOptions{})
		if err != nil {
			return fmt.Errorf("EndpointSlice default/kubernetes: %w", err)
		}
	} else if err != nil {
		return fmt.Errorf("EndpointSlice default/kubernetes: %w", err)
	}
	return nil
}

// target is what a listener forwards to: a Service port, or a fixed address.
type target struct {
	ns, svc, portName string
	fixed             string // host:port, when set
}

// proxy is the state of ServeServices.
type proxy struct {
	slices    cache.Indexer
	mu        sync.Mutex
	listeners map[string]*proxyListener
	log       *log.Logger
	dial      func(ctx context.Context, network, addr string) (net.Conn, error)
}

type proxyListener struct {
	ln     net.Listener
	target target
}

// ServeServices runs the service proxy until ctx ends (see ServiceCIDR). apiserver is where the bridge
// listener BridgeAddress:APIServerPort forwards (127.0.0.1:APIServerPort for the node of Up).
func ServeServices(ctx context.Context, client kubernetes.Interface, apiserver string, logw io.Writer) error {
	p := &proxy{listeners: map[string]*proxyListener{}, log: log.New(logw, "[service-proxy] ", log.LstdFlags)}
	d := &net.Dialer{Timeout: 5 * time.Second}
	p.dial = d.DialContext
	factory := informers.NewSharedInformerFactory(client, 10*time.Minute)
	svcInf := factory.Core().V1().Services().Informer()
	esInf := factory.Discovery().V1().EndpointSlices().Informer()
	if err := esInf.AddIndexers(cache.Indexers{"service": func(obj any) ([]string, error) {
		es, ok := obj.(*discoveryv1.EndpointSlice)
		if !ok {
			return nil, nil
		}
		return []string{es.Namespace + "/" + es.Labels[discoveryv1.LabelServiceName]}, nil
	}}); err != nil {
		return err
	}
	p.slices = esInf.GetIndexer()
	resync := make(chan struct{}, 1)
	kick := func(any) {
		select {
		case resync <- struct{}{}:
		default:
		}
	}
	handler := cache.ResourceEventHandlerFuncs{AddFunc: kick, UpdateFunc: func(_, o any) { kick(o) }, DeleteFunc: kick}
	if _, err := svcInf.AddEventHandler(handler); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("service proxy: %v cache did not sync", typ)
		}
	}
	fixed := map[string]target{net.JoinHostPort(BridgeAddress, strconv.Itoa(APIServerPort)): {fixed: apiserver}}
	p.log.Printf("watching Services and EndpointSlices; apiserver %s also on %s:%d", apiserver, BridgeAddress, APIServerPort)
	for {
		p.sync(svcInf.GetStore().List(), fixed)
		select {
		case <-ctx.Done():
			p.closeAll()
			return nil
		case <-resync:
		case <-time.After(30 * time.Second): // retry listeners that failed
		}
	}
}

// desiredListeners maps the Services to the addresses the proxy serves: ClusterIP:port for every TCP
// port of a ClusterIP/NodePort/LoadBalancer Service with a ClusterIP, and 127.0.0.1:nodePort plus
// BridgeAddress:nodePort for node ports.
func desiredListeners(svcs []any) map[string]target {
	out := map[string]target{}
	for _, o := range svcs {
		s, ok := o.(*corev1.Service)
		if !ok || s.Spec.Type == corev1.ServiceTypeExternalName {
			continue
		}
		for _, sp := range s.Spec.Ports {
			if sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP {
				continue
			}
			t := target{ns: s.Namespace, svc: s.Name, portName: sp.Name}
			if ip := net.ParseIP(s.Spec.ClusterIP); ip != nil && ip.To4() != nil {
				out[net.JoinHostPort(s.Spec.ClusterIP, strconv.Itoa(int(sp.Port)))] = t
			}
			if sp.NodePort != 0 {
				for _, host := range []string{NodeName, BridgeAddress} {
					out[net.JoinHostPort(host, strconv.Itoa(int(sp.NodePort)))] = t
				}
			}
		}
	}
	return out
}

func (p *proxy) sync(svcs []any, fixed map[string]target) {
	want := desiredListeners(svcs)
	for k, t := range fixed {
		want[k] = t
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, l := range p.listeners {
		if t, ok := want[k]; !ok || t != l.target {
			l.ln.Close()
			delete(p.listeners, k)
			p.log.Printf("stopped %s", k)
		}
	}
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if _, ok := p.listeners[k]; ok {
			continue
		}
		ln, err := net.Listen("tcp4", k)
		if err != nil {
			p.log.Printf("listen %s: %v (retrying in 30s)", k, err)
			continue
		}
		l := &proxyListener{ln: ln, target: want[k]}
		p.listeners[k] = l
		p.log.Printf("serving %s -> %s", k, l.target)
		go p.accept(l)
	}
}

func (t target) String() string {
	if t.fixed != "" {
		return t.fixed
	}
	return fmt.Sprintf("service %s/%s port %q", t.ns, t.svc, t.portName)
}

func (p *proxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, l := range p.listeners {
		l.ln.Close()
		delete(p.listeners, k)
	}
}

func (p *proxy) accept(l *proxyListener) {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				p.log.Printf("accept on %s: %v", l.ln.Addr(), err)
			}
			return
		}
		go p.forward(c, l.target)
	}
}

// endpoints returns the ready addresses (ip:port) of a Service port from its EndpointSlices.
func (p *proxy) endpoints(t target) []string {
	if t.fixed != "" {
		return []string{t.fixed}
	}
	objs, _ := p.slices.ByIndex("service", t.ns+"/"+t.svc)
	return readyEndpoints(objs, t.portName)
}

func readyEndpoints(objs []any, portName string) []string {
	var out []string
	for _, o := range objs {
		es, ok := o.(*discoveryv1.EndpointSlice)
		if !ok || es.AddressType != discoveryv1.AddressTypeIPv4 {
			continue
		}
		var port int32
		for _, ep := range es.Ports {
			name := ""
			if ep.Name != nil {
				name = *ep.Name
			}
			if name == portName && ep.Port != nil && (ep.Protocol == nil || *ep.Protocol == corev1.ProtocolTCP) {
				port = *ep.Port
			}
		}
		if port == 0 {
			continue
		}
		for _, e := range es.Endpoints {
			if e.Conditions.Ready != nil && !*e.Conditions.Ready {
				continue
			}
			for _, a := range e.Addresses {
				out = append(out, net.JoinHostPort(a, strconv.Itoa(int(port))))
			}
		}
	}
	sort.Strings(out)
	return out
}

// forward copies c to and from a random ready endpoint; with none it closes c (the client sees the
// connection reset as it would with kube-proxy's reject rule).
func (p *proxy) forward(c net.Conn, t target) {
	defer c.Close()
	eps := p.endpoints(t)
	if len(eps) == 0 {
		p.log.Printf("%s: no ready endpoint for %s", c.LocalAddr(), t)
		return
	}
	ep := eps[rand.IntN(len(eps))]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	up, err := p.dial(ctx, "tcp", ep)
	cancel()
	if err != nil {
		p.log.Printf("%s -> %s: %v", c.LocalAddr(), ep, err)
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	<-done
}

// apiReachableAt reports whether the apiserver answers /readyz at server (another address of it),
// with cfg's credentials.
func apiReachableAt(ctx context.Context, cfg *rest.Config, server string) (bool, error) {
	c := rest.CopyConfig(cfg)
	c.Host = server
	c.Timeout = 3 * time.Second
	client, err := kubernetes.NewForConfig(c)
	if err != nil {
		return false, err
	}
	body, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	if err != nil {
		return false, fmt.Errorf("%s/readyz: %v", server, err)
	}
	return string(body) == "ok", fmt.Errorf("%s/readyz: %s", server, body)
}
