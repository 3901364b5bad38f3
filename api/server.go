// Package api is Fluxbase's HTTP edge: one chi router with the middleware
// every request passes (request ids, access logs, panic recovery, metrics,
// CORS, gzip), health and readiness, the key guard, and the error
// catalogue with the helpers every error response goes through.
//
// It serves no product itself. Each HTTP surface (api/rest,
// api/realtime, and auth, storage and CDC as they come) is a package of
// its own that hands the edge a Surface: a prefix and routes, each route
// declaring the Access it needs, NeedKey when it says nothing. The guard
// runs before every route and before the 404 and 405 of every API
// prefix, so a path no surface serves still needs a key to learn so.
// Surfaces import api, never each other; the domain packages (auth,
// broker, replication, pgrole) never import api.
package api

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/klauspost/compress/gzhttp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/fluxbase/fluxbase/auth"
)

// The API prefixes. Each answers behind the guard, with a surface's routes
// or, when no surface has it yet, 404 for every path once the key passes.
var apiPrefixes = []string{"/rest/v1", "/auth/v1", "/storage/v1", "/realtime/v1", "/cdc/v1"}

// Route is one endpoint of a surface: Method ("" for every method) and
// Pattern (chi's syntax, relative to the surface's prefix; the pattern
// labels the route's metrics), the Access it needs, and its handler.
type Route struct {
	Method  string
	Pattern string
	Access  Access
	Handler http.Handler
}

// Surface is an HTTP surface: the routes a package serves under Prefix
// ("/rest/v1", ...). A path under Prefix that no route matches answers
// 404, a method a matched path lacks 405, both after the guard.
type Surface struct {
	Prefix string
	Routes []Route
	// WriteError, when set, renders the edge's own errors on this prefix
	// (the guard's refusals, 404 and 405) in the surface's error shape,
	// for a client that decodes only its own; nil keeps the edge's.
	WriteError func(w http.ResponseWriter, e *Error)
}

// RevocationChecker says whether a session's tokens are revoked. It
// answers from memory: the guard asks it for every token with a
// session_id.
type RevocationChecker interface {
	Revoked(sessionID string) bool
}

// Check reports whether a dependency answers; nil means healthy.
type Check func(ctx context.Context) error

// NamedCheck is one part of readiness, reported under its name.
type NamedCheck struct {
	Name  string
	Check Check
}

// Config configures a Server; zero values mean defaults.
type Config struct {
	// NodeName, when set, is sent on every response as X-Fluxbase-Node,
	// so what a load balancer did can be seen from the client.
	NodeName string
	// Debug exposes /debug/pprof/ to the service key.
	Debug bool
	// DrainTimeout bounds how long shutdown waits for requests in flight.
	// Default 15 s.
	DrainTimeout time.Duration
	// ReadyTimeout bounds each readiness check. Default 2 s.
	ReadyTimeout time.Duration
	// BodyTimeout bounds how long a request's body may take to arrive,
	// from the end of its headers. Default 30 s; negative for none.
	BodyTimeout time.Duration
	// Checks decide readiness.
	Checks []NamedCheck
	// Surfaces are served under their prefixes, one surface a prefix. An
	// API prefix without one answers 404 after the guard.
	Surfaces []Surface
	// Revocations, when set, refuses the tokens of ended sessions on
	// every route that verifies credentials.
	Revocations RevocationChecker
}

// Server is the HTTP edge of one node.
type Server struct {
	cfg      Config
	log      *zap.Logger
	verifier *auth.Verifier
	gatherer prometheus.Gatherer
	metrics  *httpMetrics
	router   chi.Router
}

// New builds the router. reg receives the HTTP metrics and is served on
// /metrics.
func New(cfg Config, verifier *auth.Verifier, log *zap.Logger, reg *prometheus.Registry) *Server {
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = 15 * time.Second
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 2 * time.Second
	}
	if cfg.BodyTimeout == 0 {
		cfg.BodyTimeout = 30 * time.Second
	}
	s := &Server{cfg: cfg, log: log, verifier: verifier, gatherer: reg, metrics: newHTTPMetrics(reg)}
	s.router = s.routes()
	return s
}

func (s *Server) routes() chi.Router {
	r := chi.NewRouter()
	if s.cfg.NodeName != "" {
		r.Use(s.nodeHeader)
	}
	r.Use(s.bodyDeadline, requestID, s.observe, s.recoverer, cors)
	r.NotFound(notFound)
	r.MethodNotAllowed(methodNotAllowed)

	r.Get("/health", func(w http.ResponseWriter, _ *http.Request) {
		WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	r.Get("/ready", s.ready)
	r.Method(http.MethodGet, "/metrics", promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{}))

	// JSON responses of a kilobyte or more are gzipped for clients that
	// accept it; websocket upgrades pass through untouched.
	gzip, err := gzhttp.NewWrapper(gzhttp.MinSize(1024))
	if err != nil {
		panic(err) // only for invalid options
	}
	compress := func(h http.Handler) http.Handler { return gzip(h) }
	served := map[string]bool{}
	for _, sf := range s.cfg.Surfaces {
		s.mount(r, sf, compress)
		served[sf.Prefix] = true
	}
	for _, prefix := range apiPrefixes {
		if !served[prefix] {
			s.mount(r, Surface{Prefix: prefix}, compress)
		}
	}
	if s.cfg.Debug {
		s.mount(r, Surface{Prefix: "/debug/pprof", Routes: []Route{
			{Pattern: "/*", Access: NeedService, Handler: http.HandlerFunc(pprof.Index)},
			{Pattern: "/cmdline", Access: NeedService, Handler: http.HandlerFunc(pprof.Cmdline)},
			{Pattern: "/profile", Access: NeedService, Handler: http.HandlerFunc(pprof.Profile)},
			{Pattern: "/symbol", Access: NeedService, Handler: http.HandlerFunc(pprof.Symbol)},
			{Pattern: "/trace", Access: NeedService, Handler: http.HandlerFunc(pprof.Trace)},
		}}, func(h http.Handler) http.Handler { return h })
	}
	return r
}

// mount serves sf's routes under its prefix, each behind the guard for
// its access and wrapped by wrap. What no route matches gets 404 or 405
// behind the default guard, so it reveals nothing to a request without a
// key.
func (s *Server) mount(r chi.Router, sf Surface, wrap func(http.Handler) http.Handler) {
	writeErr := sf.WriteError
	if writeErr == nil {
		writeErr = WriteError
	}
	r.Route(sf.Prefix, func(sr chi.Router) {
		keyed := s.guard(NeedKey, writeErr)
		sr.NotFound(keyed(wrap(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { writeErr(w, ErrNotFound) }))).ServeHTTP)
		sr.MethodNotAllowed(keyed(wrap(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { writeErr(w, ErrMethodNotAllow) }))).ServeHTTP)
		for _, rt := range sf.Routes {
			h := s.guard(rt.Access, writeErr)(wrap(rt.Handler))
			if rt.Method == "" {
				sr.Handle(rt.Pattern, h)
			} else {
				sr.Method(rt.Method, rt.Pattern, h)
			}
		}
	})
}

// nodeHeader names the node on the response (a websocket's upgrade
// response included).
func (s *Server) nodeHeader(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(nodeHeader, s.cfg.NodeName)
		next.ServeHTTP(w, r)
	})
}

const nodeHeader = "X-Fluxbase-Node"

func notFound(w http.ResponseWriter, _ *http.Request) { WriteError(w, ErrNotFound) }

func methodNotAllowed(w http.ResponseWriter, _ *http.Request) { WriteError(w, ErrMethodNotAllow) }

// ServeHTTP makes the Server an http.Handler, for tests.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.router.ServeHTTP(w, r) }

// ready answers 200 when every check passes, else 503 naming the failing
// parts. Checks run in parallel, each bounded by ReadyTimeout.
func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	type result struct {
		name string
		err  error
	}
	results := make(chan result, len(s.cfg.Checks))
	for _, c := range s.cfg.Checks {
		go func() {
			ctx, cancel := context.WithTimeout(r.Context(), s.cfg.ReadyTimeout)
			defer cancel()
			results <- result{c.Name, c.Check(ctx)}
		}()
	}
	checks := make(map[string]string, len(s.cfg.Checks))
	var failing []string
	for range s.cfg.Checks {
		res := <-results
		if res.err != nil {
			checks[res.name] = res.err.Error()
			failing = append(failing, res.name)
			continue
		}
		checks[res.name] = "ok"
	}
	if len(failing) > 0 {
		WriteJSON(w, http.StatusServiceUnavailable, map[string]any{
			"status": "unavailable", "failing": failing, "checks": checks,
		})
		return
	}
	WriteJSON(w, http.StatusOK, map[string]any{"status": "ok", "checks": checks})
}

// Serve serves on ln until ctx ends, then shuts down gracefully: it stops
// listening and waits up to DrainTimeout for the requests in flight to
// finish; then it cancels the contexts of those still running and closes
// their connections. Websockets are not among them: their surface ends
// them (realtime's Drain and Close).
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	base, cancelBase := context.WithCancel(context.Background())
	defer cancelBase()
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		BaseContext:       func(net.Listener) context.Context { return base },
		ConnState: func(_ net.Conn, state http.ConnState) {
			switch state {
			case http.StateNew:
				s.metrics.active.Inc()
			case http.StateClosed, http.StateHijacked:
				s.metrics.active.Dec()
			}
		},
		ErrorLog: zap.NewStdLog(s.log.Named("http")),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	select {
	case err := <-errc:
		return fmt.Errorf("serve http: %w", err)
	case <-ctx.Done():
	}
	drain, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout)
	defer cancel()
	err := srv.Shutdown(drain)
	if errors.Is(err, context.DeadlineExceeded) {
		s.log.Warn("shutdown timeout passed; closing the remaining connections", zap.Duration("timeout", s.cfg.DrainTimeout))
		cancelBase()
		err = srv.Close()
	}
	if serveErr := <-errc; !errors.Is(serveErr, http.ErrServerClosed) && err == nil {
		err = serveErr
	}
	return err
}
