package control

import (
	"bufio"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/netutil"
)

// ConsoleUpgrade is the Upgrade protocol token of the console endpoint.
const ConsoleUpgrade = "kvirt-console"

// Server serves the control API for one VM.
type Server struct {
	VM       VM
	Board    *Board
	Shutdown Shutdowner
	// Token is required (as a bearer token) on the TCP listener; empty refuses every TCP request.
	Token string
	Log   *slog.Logger
	// Limits bound what clients can hold open on each listener; zero fields take the defaults.
	Limits Limits

	mu       sync.Mutex // serialises pause/unpause
	wg       sync.WaitGroup
	servers  []*http.Server
	stopping chan struct{}
	once     sync.Once
}

func (s *Server) init() {
	s.once.Do(func() {
		s.stopping = make(chan struct{})
		if s.Log == nil {
			s.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
		}
	})
}

// Limits bound the connections of one listener. Whoever reaches the TCP listener can open connections
// before it authenticates, so everything a connection holds is bounded: a request must arrive within
// ReadHeaderTimeout and be read within ReadTimeout, a keep-alive connection idle for IdleTimeout is
// closed, headers are at most MaxHeaderBytes, at most MaxConns connections are open (further ones wait in
// the kernel's accept queue), and a connection that failed to authenticate is closed after its 401.
// Watch and console streams are exempt from ReadTimeout once authorized.
type Limits struct {
	MaxConns          int
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
}

// DefaultLimits are the limits of a Server whose Limits fields are zero. The controller holds one watch
// per VMI and makes a request now and then; exec'd subcommands use the Unix socket, one each.
var DefaultLimits = Limits{
	MaxConns:          32,
	ReadHeaderTimeout: 5 * time.Second,
	ReadTimeout:       10 * time.Second,
	IdleTimeout:       30 * time.Second,
	MaxHeaderBytes:    8 << 10,
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	if l.MaxConns > 0 {
		d.MaxConns = l.MaxConns
	}
	if l.ReadHeaderTimeout > 0 {
		d.ReadHeaderTimeout = l.ReadHeaderTimeout
	}
	if l.ReadTimeout > 0 {
		d.ReadTimeout = l.ReadTimeout
	}
	if l.IdleTimeout > 0 {
		d.IdleTimeout = l.IdleTimeout
	}
	if l.MaxHeaderBytes > 0 {
		d.MaxHeaderBytes = l.MaxHeaderBytes
	}
	return d
}

// Handler returns the API; trusted listeners (the Unix socket) skip the token check.
func (s *Server) Handler(trusted bool) http.Handler {
	s.init()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, s.Board.Get()) })
	mux.HandleFunc("GET /v1/watch", s.watch)
	mux.HandleFunc("POST /v1/pause", func(w http.ResponseWriter, r *http.Request) { s.pause(w, true) })
	mux.HandleFunc("POST /v1/unpause", func(w http.ResponseWriter, r *http.Request) { s.pause(w, false) })
	mux.HandleFunc("POST /v1/shutdown", s.shutdown)
	mux.HandleFunc("POST /v1/grace", s.setGrace)
	mux.HandleFunc("POST /v1/stop", s.stop)
	mux.HandleFunc("GET /v1/console", s.console)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !trusted && !s.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="kvirt-launcher"`)
			w.Header().Set("Connection", "close") // an unauthenticated client keeps nothing open
			writeError(w, http.StatusUnauthorized, "missing or wrong bearer token: use the token of the VMI's launcher-token secret")
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func (s *Server) authorized(r *http.Request) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && s.Token != "" && subtle.ConstantTimeCompare([]byte(got), []byte(s.Token)) == 1
}

// Serve serves on l until Close, within s.Limits; trusted is true for the in-pod Unix socket.
func (s *Server) Serve(l net.Listener, trusted bool) error {
	s.init()
	lim := s.Limits.withDefaults()
	hs := &http.Server{
		Handler:           s.Handler(trusted),
		ReadHeaderTimeout: lim.ReadHeaderTimeout,
		ReadTimeout:       lim.ReadTimeout,
		IdleTimeout:       lim.IdleTimeout,
		MaxHeaderBytes:    lim.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.Log.Handler(), slog.LevelDebug), // clients' broken requests
	}
	l = netutil.LimitListener(l, lim.MaxConns)
	s.mu.Lock()
	select {
	case <-s.stopping: // Close came first: it could not close this server
		s.mu.Unlock()
		l.Close()
		return nil
	default:
	}
	s.servers = append(s.servers, hs)
	s.mu.Unlock()
	err := hs.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Close stops every listener and ends watches and console sessions.
func (s *Server) Close() error {
	s.init()
	s.mu.Lock()
	select {
	case <-s.stopping:
	default:
		close(s.stopping)
	}
	servers := s.servers
	s.mu.Unlock()
	var errs []error
	for _, hs := range servers {
		errs = append(errs, hs.Close())
	}
	s.wg.Wait()
	return errors.Join(errs...)
}

type apiError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, apiError{Error: msg})
}

func (s *Server) watch(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "streaming unsupported")
		return
	}
	// A stream: ReadTimeout bounded the request; the connection now lives as long as the watch.
	http.NewResponseController(w).SetReadDeadline(time.Time{})
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	var last uint64
	first := true
	for {
		st, v, ch := s.Board.next()
		if first || v != last {
			if err := enc.Encode(st); err != nil {
				return
			}
			fl.Flush()
			first, last = false, v
		}
		select {
		case <-ch:
		case <-r.Context().Done():
			return
		case <-s.stopping:
			return
		}
	}
}

func (s *Server) pause(w http.ResponseWriter, pause bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.Board.Get()
	switch {
	case st.Phase != Running:
		writeError(w, http.StatusConflict, "VM is not running")
		return
	case pause && st.Paused:
		writeError(w, http.StatusConflict, "VMI is already paused")
		return
	case !pause && !st.Paused:
		writeError(w, http.StatusConflict, "VMI is not paused")
		return
	}
	op, err := s.VM.Pause, error(nil)
	if !pause {
		op = s.VM.Resume
	}
	if err = op(); err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	s.Board.Update(func(st *Status) { st.Paused = pause })
	s.Log.Info("guest paused state changed", "paused", pause)
	writeJSON(w, http.StatusOK, s.Board.Get())
}

// seconds parses query parameter name as a number of seconds >= 0 (missing: -1).
func seconds(r *http.Request, name string) (time.Duration, error) {
	g := r.URL.Query().Get(name)
	if g == "" {
		return -1, nil
	}
	n, err := strconv.ParseInt(g, 10, 64)
	if err != nil || n < 0 || n > 1<<31 {
		return 0, fmt.Errorf("%s %q: want a number of seconds >= 0", name, g)
	}
	return time.Duration(n) * time.Second, nil
}

// canShutdown answers the request itself and reports false when the guest is already final or this
// launcher has no graceful-shutdown manager.
func (s *Server) canShutdown(w http.ResponseWriter) bool {
	if s.Board.Get().Phase.Final() {
		writeError(w, http.StatusConflict, "VM is not running")
		return false
	}
	if s.Shutdown == nil {
		writeError(w, http.StatusNotImplemented, "graceful shutdown is not wired in this launcher")
		return false
	}
	return true
}

func (s *Server) shutdown(w http.ResponseWriter, r *http.Request) {
	grace, err := seconds(r, "grace")
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if !s.canShutdown(w) {
		return
	}
	s.Shutdown.Shutdown(grace)
	writeJSON(w, http.StatusAccepted, s.Board.Get())
}

func (s *Server) setGrace(w http.ResponseWriter, r *http.Request) {
	grace, err := seconds(r, "seconds")
	if err == nil && grace < 0 {
		err = errors.New("seconds: missing")
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if !s.canShutdown(w) {
		return
	}
	s.Shutdown.SetGrace(grace)
	writeJSON(w, http.StatusOK, s.Board.Get())
}

func (s *Server) stop(w http.ResponseWriter, r *http.Request) {
	if s.Board.Get().Phase.Final() {
		writeError(w, http.StatusConflict, "VM is not running")
		return
	}
	// Through the grace logic when there is one, so the outcome says the stop was asked for.
	if s.Shutdown != nil {
		s.Shutdown.Shutdown(0)
	} else if err := s.VM.Stop(); err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, http.StatusAccepted, s.Board.Get())
}

func (s *Server) console(w http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), ConsoleUpgrade) {
		writeError(w, http.StatusUpgradeRequired, "send Connection: Upgrade and Upgrade: "+ConsoleUpgrade)
		return
	}
	if s.Board.Get().Phase.Final() {
		writeError(w, http.StatusConflict, "VM is not running")
		return
	}
	out, in, err := s.VM.Console()
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		out.Close()
		writeError(w, http.StatusInternalServerError, "connection cannot be hijacked")
		return
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		out.Close()
		return
	}
	conn.SetDeadline(time.Time{}) // a session lasts as long as the client keeps it (ReadTimeout was the request's)
	brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + ConsoleUpgrade + "\r\n\r\n")
	brw.Flush()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.pipeConsole(conn, brw.Reader, out, in)
	}()
}

// pipeConsole copies guest output to conn and conn's input to the guest until either side ends or the
// server closes.
func (s *Server) pipeConsole(conn net.Conn, br *bufio.Reader, out io.ReadCloser, in io.Writer) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-ctx.Done():
		case <-s.stopping:
		}
		conn.Close()
		out.Close()
	}()
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(conn, out)
		conn.Close()
	}()
	io.Copy(in, br) // until the client closes its side
	out.Close()
	<-done
}
