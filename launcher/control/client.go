package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Client talks to one launcher's control API, over TCP (the controller) or the in-pod Unix socket
// (exec'd subcommands).
type Client struct {
	network, addr string
	token         string
	dialer        func(context.Context) (net.Conn, error)
	hc            *http.Client
}

// NewClient returns a client for the launcher at addr ("10.244.0.7:8186") authenticating with token.
func NewClient(addr, token string) *Client { return newClient("tcp", addr, token) }

// NewUnixClient returns a client for the launcher's Unix socket (DefaultSocket inside the pod).
func NewUnixClient(path string) *Client { return newClient("unix", path, "") }

// NewDialClient returns a client that reaches the launcher through dial (e.g. a port-forward through the
// apiserver) and authenticates with token. Every request gets its own connection: a tunnel is never kept
// idle. name says where the launcher is, for errors.
func NewDialClient(name string, dial func(context.Context) (net.Conn, error), token string) *Client {
	c := &Client{addr: name, token: token, dialer: dial}
	c.hc = &http.Client{Transport: &http.Transport{
		DialContext:       func(ctx context.Context, _, _ string) (net.Conn, error) { return c.dial(ctx) },
		DisableKeepAlives: true,
	}}
	return c
}

func newClient(network, addr, token string) *Client {
	c := &Client{network: network, addr: addr, token: token}
	c.hc = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return c.dial(ctx) },
	}}
	return c
}

func (c *Client) dial(ctx context.Context) (net.Conn, error) {
	if c.dialer != nil {
		conn, err := c.dialer(ctx)
		if err != nil {
			return nil, fmt.Errorf("launcher control API at %s: %w", c.addr, err)
		}
		return conn, nil
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	conn, err := d.DialContext(ctx, c.network, c.addr)
	if err != nil {
		return nil, fmt.Errorf("launcher control API at %s: %w", c.addr, err)
	}
	return conn, nil
}

// APIError is an error answer of the API; Message is the launcher's text (KubeVirt's wording where one
// exists, e.g. "VMI is already paused").
type APIError struct {
	Code    int
	Message string
}

func (e *APIError) Error() string { return e.Message }

// IsConflict reports whether err is a 409 answer (the request does not fit the guest's state).
func IsConflict(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Code == http.StatusConflict
}

func (c *Client) do(ctx context.Context, method, path string, query url.Values) (*http.Response, error) {
	u := url.URL{Scheme: "http", Host: "launcher", Path: path, RawQuery: query.Encode()}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		var ae apiError
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, &ae) != nil || ae.Error == "" {
			ae.Error = fmt.Sprintf("launcher answered %s", resp.Status)
		}
		return nil, &APIError{Code: resp.StatusCode, Message: ae.Error}
	}
	return resp, nil
}

func (c *Client) call(ctx context.Context, method, path string, query url.Values) (Status, error) {
	resp, err := c.do(ctx, method, path, query)
	if err != nil {
		return Status{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxStatusBytes+1))
	if err != nil {
		return Status{}, fmt.Errorf("launcher status: %w", err)
	}
	if len(b) > MaxStatusBytes {
		return Status{}, fmt.Errorf("launcher status: the answer exceeds %d bytes: refused", MaxStatusBytes)
	}
	st, err := decodeStatus(b)
	if err != nil {
		return Status{}, fmt.Errorf("launcher status: %w", err)
	}
	return st, nil
}

// CloseIdleConnections closes the connections a finished request left open (a client used once).
func (c *Client) CloseIdleConnections() { c.hc.CloseIdleConnections() }

// Status returns the launcher's current status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	return c.call(ctx, "GET", "/v1/status", nil)
}

// Pause pauses the guest's vCPUs.
func (c *Client) Pause(ctx context.Context) error {
	_, err := c.call(ctx, "POST", "/v1/pause", nil)
	return err
}

// Unpause resumes them.
func (c *Client) Unpause(ctx context.Context) error {
	_, err := c.call(ctx, "POST", "/v1/unpause", nil)
	return err
}

// Shutdown starts a graceful shutdown; a negative grace uses the VMI's terminationGracePeriodSeconds.
func (c *Client) Shutdown(ctx context.Context, grace time.Duration) error {
	q := url.Values{}
	if grace >= 0 {
		q.Set("grace", strconv.FormatInt(int64(grace/time.Second), 10))
	}
	_, err := c.call(ctx, "POST", "/v1/shutdown", q)
	return err
}

// SetGrace lowers the launcher's grace period to grace (whole seconds); a shutdown under way ends at its
// start plus grace if that is earlier, and grace 0 stops the guest now.
func (c *Client) SetGrace(ctx context.Context, grace time.Duration) error {
	q := url.Values{}
	q.Set("seconds", strconv.FormatInt(int64(grace/time.Second), 10))
	_, err := c.call(ctx, "POST", "/v1/grace", q)
	return err
}

// Stop stops the guest hard, now.
func (c *Client) Stop(ctx context.Context) error {
	_, err := c.call(ctx, "POST", "/v1/stop", nil)
	return err
}

// Watch calls report with the current status and then with every change, until ctx ends (returns
// ctx.Err()) or the connection breaks (returns the error; io.ErrUnexpectedEOF when the launcher went away).
func (c *Client) Watch(ctx context.Context, report func(Status)) error {
	resp, err := c.do(ctx, "GET", "/v1/watch", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	err = decodeStream(resp.Body, report)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// Bounds of what a client accepts from a launcher, which may be hostile (a guest that took over its VMM,
// or the guest itself if the address reaches it): a launcher's status is well under 1 KiB, and decoding
// more would let one launcher make the controller, shared by every VM, buffer without limit.
const (
	// MaxStatusBytes bounds one status message: one line of a watch stream, or a whole answer.
	MaxStatusBytes = 64 << 10
	// MaxInterfaces bounds Status.Interfaces (the launcher reports the VMI's interfaces, at most one today).
	MaxInterfaces = 16
	// MaxInterfaceIPs bounds each interface's IPs.
	MaxInterfaceIPs = 16
)

// decodeStream reads newline-delimited Status messages from r, each within the bounds, and reports them
// in order. It returns io.ErrUnexpectedEOF when the stream ends (a watch ends only when the launcher
// goes away) and an error naming the bound for a message that exceeds one, without reading it further.
func decodeStream(r io.Reader, report func(Status)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4<<10), MaxStatusBytes)
	for sc.Scan() {
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		st, err := decodeStatus(line)
		if err != nil {
			return fmt.Errorf("launcher watch: %w", err)
		}
		report(st)
	}
	switch err := sc.Err(); {
	case errors.Is(err, bufio.ErrTooLong):
		return fmt.Errorf("launcher watch: a status message exceeds %d bytes: refused unread", MaxStatusBytes)
	case err != nil:
		return fmt.Errorf("launcher watch: %w", err)
	}
	return io.ErrUnexpectedEOF
}

// decodeStatus decodes one status message and checks its bounds.
func decodeStatus(b []byte) (Status, error) {
	var st Status
	if err := json.Unmarshal(b, &st); err != nil {
		return Status{}, err
	}
	if n := len(st.Interfaces); n > MaxInterfaces {
		return Status{}, fmt.Errorf("status lists %d interfaces, more than %d: refused", n, MaxInterfaces)
	}
	for i, in := range st.Interfaces {
		if n := len(in.IPs); n > MaxInterfaceIPs {
			return Status{}, fmt.Errorf("status interface %d lists %d IPs, more than %d: refused", i, n, MaxInterfaceIPs)
		}
	}
	return st, nil
}

// Console attaches to the guest's serial console: reads return guest output, writes go to its input.
// Close the connection to detach.
func (c *Client) Console(ctx context.Context) (io.ReadWriteCloser, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	req, _ := http.NewRequest("GET", "http://launcher/v1/console", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", ConsoleUpgrade)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if err := req.Write(conn); err != nil {
		conn.Close()
		return nil, fmt.Errorf("console: %w", err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("console: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer conn.Close()
		var ae apiError
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, &ae) != nil || ae.Error == "" {
			ae.Error = "console: launcher answered " + resp.Status
		}
		return nil, &APIError{Code: resp.StatusCode, Message: ae.Error}
	}
	conn.SetDeadline(time.Time{})
	return &consoleConn{Conn: conn, r: br}, nil
}

type consoleConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *consoleConn) Read(p []byte) (int, error) { return c.r.Read(p) }
