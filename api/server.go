// Package api is Fluxbase's HTTP edge: one chi router with the middleware
// every request passes (request ids, access logs, panic recovery, metrics,
// CORS, gzip), health and readiness, and the guarded API prefixes under
// which the REST, auth, storage, realtime and CDC handlers are mounted.
//
// It owns HTTP concerns only: the domain packages (auth, broker,
// replication, storage) never import it.
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

// The API prefixes; each is guarded by token verification.
var apiPrefixes = []string{"/rest/v1", "/auth/v1", "/storage/v1", "/realtime/v1", "/cdc/v1"}

// Check reports whether a dependency answers; nil means healthy.
type Check func(ctx context.Context) error

// NamedCheck is one part of readiness, reported under its name.
type NamedCheck struct {
	Name  string
	Check Check
}

// Config configures a Server; zero values mean defaults.
type Config struct {
	// Debug exposes /debug/pprof/ to the service key.
	Debug bool
	// DrainTimeout bounds how long shutdown waits for requests in flight.
	// Default 15 s.
	DrainTimeout time.Duration
	// ReadyTimeout bounds each readiness check. Default 2 s.
	ReadyTimeout time.Duration
	// Checks decide readiness.
	Checks []NamedCheck
	// Mounts are the handlers under the guarded prefixes, by prefix
	// ("/rest/v1", ...). A prefix without one answers 404 after the guard.
	Mounts map[string]http.Handler
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
	s := &Server{cfg: cfg, log: log, verifier: verifier, gatherer: reg, metrics: newHTTPMetrics(reg)}
	s.router = s.routes()
	return s
}

func (s *Server) routes() chi.Router {
	r := chi.NewRouter()
	r.Use(requestID, s.observe, s.recoverer, cors)
	r.NotFound(func(w http.ResponseWriter, _ *http.Request) { writeError(w, ErrNotFound) })
	r.MethodNotAllowed(func(w http.ResponseWriter, _ *http.Request) { writeError(w, ErrMethodNotAllow) })

	r.Get("/health", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	r.Get("/ready", s.ready)
	r.Method(http.MethodGet, "/metrics", promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{}))

	// JSON responses of a kilobyte or more are gzipped for clients that
	// accept it; websocket upgrades pass through untouched.
	gzip, err := gzhttp.NewWrapper(gzhttp.MinSize(1024))
	if err != nil {
		panic(err) // only for invalid options
	}
	for _, prefix := range apiPrefixes {
		h := s.cfg.Mounts[prefix]
		if h == nil {
			h = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { writeError(w, ErrNotFound) })
		}
		r.With(s.guard).Mount(prefix, gzip(h))
	}
	if s.cfg.Debug {
		r.Route("/debug/pprof", func(r chi.Router) {
			r.Use(s.guard, requireServiceRole)
			r.HandleFunc("/*", pprof.Index)
			r.HandleFunc("/cmdline", pprof.Cmdline)
			r.HandleFunc("/profile", pprof.Profile)
			r.HandleFunc("/symbol", pprof.Symbol)
			r.HandleFunc("/trace", pprof.Trace)
		})
	}
	return r
}

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
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{
			"status": "unavailable", "failing": failing, "checks": checks,
		})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "checks": checks})
}

// Serve serves on ln until ctx ends, then shuts down gracefully: it first
// cancels the base context of every request, so long-lived ones such as
// websockets end, then waits up to DrainTimeout for the rest.
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
	cancelBase()
	drain, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout)
	defer cancel()
	err := srv.Shutdown(drain)
	if errors.Is(err, context.DeadlineExceeded) {
		s.log.Warn("drain timeout passed; closing the remaining connections", zap.Duration("timeout", s.cfg.DrainTimeout))
		err = srv.Close()
	}
	if serveErr := <-errc; !errors.Is(serveErr, http.ErrServerClosed) && err == nil {
		err = serveErr
	}
	return err
}
