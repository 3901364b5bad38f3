package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

const requestIDHeader = "X-Request-Id"

type ctxKey int

const (
	requestIDKey ctxKey = iota
	claimsKey
)

// requestID takes a sane incoming X-Request-Id or makes one, and echoes it.
func requestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(requestIDHeader)
		if !validRequestID(id) {
			var b [12]byte
			_, _ = rand.Read(b[:])
			id = hex.EncodeToString(b[:])
		}
		w.Header().Set(requestIDHeader, id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey, id)))
	})
}

func validRequestID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if c < '!' || c > '~' {
			return false
		}
	}
	return true
}

// RequestID returns the request's id.
func RequestID(r *http.Request) string {
	id, _ := r.Context().Value(requestIDKey).(string)
	return id
}

// httpMetrics are the edge's request metrics.
type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	active   prometheus.Gauge
}

func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "http_requests_total",
			Help: "HTTP requests served, by method, route pattern and status.",
		}, []string{"method", "route", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "http_request_duration_seconds",
			Help:    "Time to serve HTTP requests, by method and route pattern.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"method", "route"}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fluxbase_active_connections",
			Help: "Open HTTP client connections (a websocket leaves this count when upgraded).",
		}),
	}
	reg.MustRegister(m.requests, m.duration, m.active)
	return m
}

// observe wraps the router: it measures and logs each request once the
// router has resolved its route pattern.
func (s *Server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		next.ServeHTTP(ww, r)
		elapsed := time.Since(start)

		status := ww.Status()
		if status == 0 {
			status = http.StatusOK // nothing written; a hijacked connection, say
		}
		route := "unmatched"
		if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePattern() != "" {
			route = rc.RoutePattern()
		}
		s.metrics.requests.WithLabelValues(r.Method, route, strconv.Itoa(status)).Inc()
		s.metrics.duration.WithLabelValues(r.Method, route).Observe(elapsed.Seconds())

		level := zap.InfoLevel
		switch {
		case status >= 500:
			level = zap.ErrorLevel
		case route == "/health" || route == "/ready" || route == "/metrics":
			level = zap.DebugLevel
		}
		if ce := s.log.Check(level, "request"); ce != nil {
			ce.Write(
				zap.String("method", r.Method),
				zap.String("path", r.URL.Path),
				zap.String("route", route),
				zap.Int("status", status),
				zap.Int("bytes", ww.BytesWritten()),
				zap.Duration("duration", elapsed),
				zap.String("remote", r.RemoteAddr),
				zap.String("request_id", RequestID(r)),
			)
		}
	})
}

// recoverer turns a handler's panic into a logged 500 and keeps serving.
func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if err, ok := v.(error); ok && errors.Is(err, http.ErrAbortHandler) {
				panic(v) // the server's own way to abort a response
			}
			s.log.Error("panic serving request",
				zap.Any("panic", v),
				zap.String("path", r.URL.Path),
				zap.String("request_id", RequestID(r)),
				zap.ByteString("stack", debug.Stack()))
			WriteError(w, ErrInternal)
		}()
		next.ServeHTTP(w, r)
	})
}

// Headers supabase-js and PostgREST clients send, allowed cross-origin.
var corsAllowHeaders = strings.Join([]string{
	"authorization", "apikey", "x-api-key", "content-type", "x-client-info", "prefer", "range",
	"accept-profile", "content-profile", "x-upsert", "cache-control", "x-request-id", "x-supabase-api-version",
}, ", ")

// cors allows browser apps on any origin, as Supabase does: access is
// governed by keys and tokens, not origins.
func cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Expose-Headers", "Content-Range, Content-Location, X-Request-Id, Range, X-Total-Count, Link, X-Supabase-Api-Version")
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			h.Set("Access-Control-Allow-Methods", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
			h.Set("Access-Control-Allow-Headers", corsAllowHeaders)
			h.Set("Access-Control-Max-Age", "86400")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// bodyDeadline gives a request's body BodyTimeout to arrive, so that a
// client trickling one in cannot hold a connection (and whatever the
// handler holds while it reads) for ever: past it, reading the body
// fails with ErrBodyTimeout, which the handler answers (408), and the
// connection is closed. Requests without a body, websocket upgrades
// among them, get no deadline, and once the body is read to its end
// net/http lifts it (before it starts reading ahead for the next
// request), so what follows, a long statement say, is not cut by it.
func (s *Server) bodyDeadline(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.BodyTimeout < 0 || r.Body == nil || r.Body == http.NoBody {
			next.ServeHTTP(w, r)
			return
		}
		if err := http.NewResponseController(w).SetReadDeadline(time.Now().Add(s.cfg.BodyTimeout)); err != nil {
			next.ServeHTTP(w, r) // a writer without deadlines: a test recorder
			return
		}
		r.Body = deadlineBody{r.Body}
		next.ServeHTTP(w, r)
	})
}

// deadlineBody is a body read under the connection's read deadline; it
// tells a read past the deadline by ErrBodyTimeout.
type deadlineBody struct{ io.ReadCloser }

func (b deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		return n, ErrBodyTimeout
	}
	return n, err
}
