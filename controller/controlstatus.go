package controller

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/launcher/control"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
)

// controlStatusSource is the real StatusSource: the launcher's control API (launcher/control), reached on
// the pod IP (direct) or through the apiserver's pods/portforward subresource (pf set).
type controlStatusSource struct {
	pf *podPortForwarder
}

// NewControlStatusSource returns the StatusSource that dials the launcher's control API on the pod IP.
// Only for pods whose IP the launcher keeps: with the bridge binding the pod IP belongs to the guest and
// the connection (with the token) would reach the guest; use NewPortForwardStatusSource.
func NewControlStatusSource() StatusSource { return controlStatusSource{} }

// NewPortForwardStatusSource returns the StatusSource that reaches every launcher's control API through
// the apiserver's pods/portforward subresource (kubelet → 127.0.0.1:port inside the pod's network
// namespace), as `kubectl port-forward` does. It works for every interface binding (with bridge the pod IP
// is the guest's) and needs no route from the controller to the pod network, only RBAC `create` on
// pods/portforward. The bearer token still authenticates the controller to the launcher.
func NewPortForwardStatusSource(cfg *rest.Config) (StatusSource, error) {
	pf, err := newPodPortForwarder(cfg)
	if err != nil {
		return nil, err
	}
	return controlStatusSource{pf: pf}, nil
}

// NeedsPodIP: only the direct mode dials the pod IP; port-forward names the pod.
func (s controlStatusSource) NeedsPodIP() bool { return s.pf == nil }

// client returns a control API client for ep; last, with port-forward, holds the latest connection.
func (s controlStatusSource) client(ep LauncherEndpoint) (cl *control.Client, last *atomic.Pointer[pfConn]) {
	port := ep.Port
	if port == 0 {
		port = control.DefaultPort
	}
	if s.pf == nil {
		return control.NewClient(net.JoinHostPort(ep.PodIP, strconv.Itoa(port)), ep.Token), nil
	}
	last = &atomic.Pointer[pfConn]{}
	name := fmt.Sprintf("pod %s/%s port %d (port-forward)", ep.Namespace, ep.PodName, port)
	return control.NewDialClient(name, func(ctx context.Context) (net.Conn, error) {
		c, err := s.pf.Dial(ctx, ep.Namespace, ep.PodName, port)
		if err != nil {
			return nil, err
		}
		last.Store(c)
		return c, nil
	}, ep.Token), last
}

// launcherCommandTimeout bounds one request to a launcher (a port-forward included).
const launcherCommandTimeout = 15 * time.Second

// Command sends cmd to the launcher at ep.
func (s controlStatusSource) Command(ctx context.Context, ep LauncherEndpoint, cmd LauncherCommand) error {
	ctx, cancel := context.WithTimeout(ctx, launcherCommandTimeout)
	defer cancel()
	cl, _ := s.client(ep)
	defer cl.CloseIdleConnections()
	switch cmd.Op {
	case OpShutdown:
		return cl.Shutdown(ctx, cmd.Grace)
	case OpSetGrace:
		return cl.SetGrace(ctx, cmd.Grace)
	case OpStop:
		return cl.Stop(ctx)
	}
	return fmt.Errorf("unknown launcher request %q", cmd.Op)
}

func (s controlStatusSource) Watch(ctx context.Context, ep LauncherEndpoint, report func(LauncherState)) error {
	cl, last := s.client(ep)
	err := cl.Watch(ctx, func(s control.Status) { report(fromControlStatus(s)) })
	if last == nil {
		return err
	}
	// When the kubelet refuses the forward, it closes the data stream and says why on the error stream;
	// the HTTP client may fail first on the closed stream (a write error, an EOF). The kubelet's reason
	// is the one that tells the user what to do.
	if err != nil && ctx.Err() == nil {
		if c := last.Load(); c != nil {
			if kerr := c.errFromKubelet(); kerr != nil {
				return kerr
			}
		}
	}
	return err
}

// podPortForwarder opens connections to a TCP port inside a pod through the apiserver (SPDY, the
// portforward.k8s.io protocol: per connection one error stream and one data stream).
type podPortForwarder struct {
	rest     rest.Interface
	rt       http.RoundTripper
	upgrader spdy.Upgrader
}

func newPodPortForwarder(cfg *rest.Config) (*podPortForwarder, error) {
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("port-forward client: %w", err)
	}
	rt, up, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("port-forward transport: %w", err)
	}
	return &podPortForwarder{rest: kube.CoreV1().RESTClient(), rt: rt, upgrader: up}, nil
}

// pfDialTimeout bounds the upgrade handshake with the apiserver (not the forwarded connection: the
// timer stops when the handshake ends). A variable for tests.
var pfDialTimeout = 30 * time.Second

// Dial returns a connection to 127.0.0.1:port in pod namespace/name's network namespace. Closing it
// closes the port-forward session. An error the kubelet reports (nothing listens there, pod gone) is
// returned by the connection's next Read.
func (p *podPortForwarder) Dial(ctx context.Context, namespace, name string, port int) (*pfConn, error) {
	u := p.rest.Post().Namespace(namespace).Resource("pods").Name(name).SubResource("portforward").URL()
	d := spdy.NewDialer(p.upgrader, &http.Client{Transport: p.rt, Timeout: pfDialTimeout}, http.MethodPost, u)
	type result struct {
		conn httpstream.Connection
		err  error
	}
	done := make(chan result, 1)
	go func() {
		c, _, err := d.Dial(portforward.PortForwardProtocolV1Name)
		done <- result{c, err}
	}()
	var conn httpstream.Connection
	select {
	case r := <-done:
		if r.err != nil {
			return nil, fmt.Errorf("port-forward to pod %s/%s: %w (the controller needs RBAC create on pods/portforward; the pod must be running)", namespace, name, r.err)
		}
		conn = r.conn
	case <-ctx.Done():
		go func() {
			if r := <-done; r.conn != nil {
				r.conn.Close()
			}
		}()
		return nil, ctx.Err()
	}
	h := http.Header{}
	h.Set(corev1.StreamType, corev1.StreamTypeError)
	h.Set(corev1.PortHeader, strconv.Itoa(port))
	h.Set(corev1.PortForwardRequestIDHeader, "0")
	errStream, err := conn.CreateStream(h)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("port-forward to pod %s/%s: error stream: %w", namespace, name, err)
	}
	errStream.Close() // only the kubelet writes on it
	h.Set(corev1.StreamType, corev1.StreamTypeData)
	data, err := conn.CreateStream(h)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("port-forward to pod %s/%s: data stream: %w", namespace, name, err)
	}
	pc := &pfConn{conn: conn, data: data, addr: pfAddr(fmt.Sprintf("%s/%s:%d", namespace, name, port)), errDone: make(chan struct{})}
	go func() {
		defer close(pc.errDone)
		msg, _ := io.ReadAll(io.LimitReader(errStream, 64<<10))
		if len(msg) > 0 {
			pc.mu.Lock()
			pc.remoteErr = fmt.Errorf("port-forward to pod %s/%s port %d: %s", namespace, name, port, msg)
			pc.mu.Unlock()
			conn.Close() // unblocks a Read on the data stream
		}
	}()
	return pc, nil
}

// pfConn is one port-forwarded connection as a net.Conn (deadlines are not supported: the HTTP client
// bounds requests with their context).
type pfConn struct {
	conn    httpstream.Connection
	data    httpstream.Stream
	addr    pfAddr
	errDone chan struct{}

	mu        sync.Mutex
	remoteErr error
	closeOnce sync.Once
}

func (c *pfConn) Read(b []byte) (int, error) {
	n, err := c.data.Read(b)
	if err != nil {
		if rerr := c.errFromKubelet(); rerr != nil {
			return n, rerr
		}
	}
	return n, err
}

// errFromKubelet returns the error the kubelet sent, waiting briefly for it: when the data stream ends
// because the port-forward failed, the message on the error stream may still be in flight.
func (c *pfConn) errFromKubelet() error {
	select {
	case <-c.errDone:
	case <-time.After(time.Second):
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.remoteErr
}

func (c *pfConn) Write(b []byte) (int, error) { return c.data.Write(b) }

func (c *pfConn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		c.data.Reset()
		err = c.conn.Close()
	})
	return err
}

func (c *pfConn) LocalAddr() net.Addr              { return pfAddr("controller") }
func (c *pfConn) RemoteAddr() net.Addr             { return c.addr }
func (c *pfConn) SetDeadline(time.Time) error      { return nil }
func (c *pfConn) SetReadDeadline(time.Time) error  { return nil }
func (c *pfConn) SetWriteDeadline(time.Time) error { return nil }
func (a pfAddr) Network() string                   { return "portforward" }
func (a pfAddr) String() string                    { return string(a) }

type pfAddr string

func fromControlStatus(s control.Status) LauncherState {
	out := LauncherState{Paused: s.Paused, Reason: s.Reason, Message: s.Message, Boot: s.Boot,
		ShuttingDown: s.ShuttingDown, GracePeriodSeconds: s.GracePeriodSeconds}
	switch s.Phase {
	case control.Running:
		out.Phase = GuestRunning
	case control.Succeeded:
		out.Phase = GuestSucceeded
	case control.Failed:
		out.Phase = GuestFailed
	default:
		out.Phase = GuestStarting
	}
	for _, i := range s.Interfaces {
		ips := append([]string(nil), i.IPs...)
		if len(ips) == 0 && i.IP != "" {
			ips = []string{i.IP}
		}
		out.Interfaces = append(out.Interfaces, v1.VirtualMachineInstanceNetworkInterface{
			Name: i.Name, MAC: i.MAC, IP: i.IP, IPs: ips, InfoSource: "domain",
		})
	}
	return out
}
