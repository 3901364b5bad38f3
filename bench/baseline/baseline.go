// Package baseline is the bare broadcaster the fanout scenario measures
// beside Fluxbase: a websocket server with no protocol that writes one
// prepared frame (websocket.PreparedMessage, encoded once) to every
// connection from a few writer goroutines. It shows what this machine and
// the load generator can do at all, so Fluxbase's numbers can be read as a
// share of that limit.
//
// It keeps no per-client queue, filter or authorization: that is the point.
// Clients may send anything (joins, heartbeats); it is read and dropped.
package baseline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/fluxbase/fluxbase/bench"
)

// Config sets up a Server; zero values mean defaults.
type Config struct {
	// Writers is the number of writer goroutines, each owning a share of
	// the connections. Default 4.
	Writers int
	// WriteTimeout drops a connection whose write blocks this long.
	// Default 10 s.
	WriteTimeout time.Duration
	// Queue is how many frames may wait for each writer before publishing
	// blocks. Default 4096.
	Queue int
}

// Server accepts websockets on /ws and broadcasts on POST /publish.
type Server struct {
	cfg      Config
	upgrader websocket.Upgrader
	shards   []*shard
	next     atomic.Uint64
	conns    atomic.Int64
	dropped  atomic.Int64

	publishMu sync.Mutex // one publish run at a time

	closing chan struct{}
	closed  sync.Once
	wg      sync.WaitGroup // writers and per-connection readers
}

// shard is one writer's connections. mu guards conns only; the writer
// copies the set before writing so readers can remove while it writes.
type shard struct {
	mu    sync.Mutex
	conns map[*websocket.Conn]struct{}
	queue chan *websocket.PreparedMessage
}

// New starts the writers; Close stops them.
func New(cfg Config) *Server {
	if cfg.Writers <= 0 {
		cfg.Writers = 4
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 4096
	}
	s := &Server{
		cfg:      cfg,
		upgrader: websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 1024, CheckOrigin: func(*http.Request) bool { return true }},
		closing:  make(chan struct{}),
	}
	for range cfg.Writers {
		sh := &shard{conns: map[*websocket.Conn]struct{}{}, queue: make(chan *websocket.PreparedMessage, cfg.Queue)}
		s.shards = append(s.shards, sh)
		s.wg.Add(1)
		go s.write(sh)
	}
	return s
}

// Connections is the number of open websockets.
func (s *Server) Connections() int64 { return s.conns.Load() }

// ServeHTTP routes /ws, /publish and /stats.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/ws" || strings.HasSuffix(r.URL.Path, "/websocket"):
		s.accept(w, r)
	case r.URL.Path == "/publish" && r.Method == http.MethodPost:
		s.handlePublish(w, r)
	case r.URL.Path == "/stats":
		writeJSON(w, http.StatusOK, map[string]int64{"connections": s.conns.Load(), "dropped": s.dropped.Load()})
	default:
		http.NotFound(w, r)
	}
}

func (s *Server) accept(w http.ResponseWriter, r *http.Request) {
	select {
	case <-s.closing:
		http.Error(w, "closing", http.StatusServiceUnavailable)
		return
	default:
	}
	c, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered
	}
	sh := s.shards[s.next.Add(1)%uint64(len(s.shards))]
	sh.mu.Lock()
	sh.conns[c] = struct{}{}
	sh.mu.Unlock()
	s.conns.Add(1)
	s.wg.Add(1)
	go s.read(sh, c)
}

// read drains what the client sends until the connection ends, then
// removes it.
func (s *Server) read(sh *shard, c *websocket.Conn) {
	defer s.wg.Done()
	for {
		if _, _, err := c.NextReader(); err != nil {
			break
		}
	}
	s.remove(sh, c)
}

func (s *Server) remove(sh *shard, c *websocket.Conn) {
	sh.mu.Lock()
	_, ok := sh.conns[c]
	delete(sh.conns, c)
	sh.mu.Unlock()
	if ok {
		s.conns.Add(-1)
		c.Close()
	}
}

func (s *Server) write(sh *shard) {
	defer s.wg.Done()
	var batch []*websocket.Conn
	for {
		var pm *websocket.PreparedMessage
		select {
		case pm = <-sh.queue:
		case <-s.closing:
			return
		}
		batch = batch[:0]
		sh.mu.Lock()
		for c := range sh.conns {
			batch = append(batch, c)
		}
		sh.mu.Unlock()
		deadline := time.Now().Add(s.cfg.WriteTimeout)
		for _, c := range batch {
			_ = c.SetWriteDeadline(deadline)
			if err := c.WritePreparedMessage(pm); err != nil {
				s.dropped.Add(1)
				s.remove(sh, c)
			}
		}
	}
}

// PublishSpec is one publish run: Count frames at Rate per second, each
// carrying its sequence number (First..First+Count-1) and its send time in
// Unix nanoseconds, padded to about PayloadBytes.
type PublishSpec struct {
	First        int64   `json:"first"`
	Count        int     `json:"count"`
	Rate         float64 `json:"rate"`
	PayloadBytes int     `json:"payload_bytes"`
	Topic        string  `json:"topic"`
	Event        string  `json:"event"`
}

// PublishResult says how the run went.
type PublishResult struct {
	Sent        int     `json:"sent"`
	Seconds     float64 `json:"seconds"`
	MaxLagMs    float64 `json:"max_lag_ms"` // worst delay behind schedule
	Connections int64   `json:"connections"`
}

// Frame is the frame a broadcast server sends for seq: Supabase's text
// form of a broadcast, so its size and shape match a real delivery.
func Frame(topic, event string, seq int, ts int64, pad string) []byte {
	b := make([]byte, 0, 128+len(pad))
	b = append(b, `[null,null,`...)
	b = strconv.AppendQuote(b, topic)
	b = append(b, `,"broadcast",{"type":"broadcast","event":`...)
	b = strconv.AppendQuote(b, event)
	b = append(b, `,"payload":{"bench_seq":`...)
	b = strconv.AppendInt(b, int64(seq), 10)
	b = append(b, `,"bench_ts":`...)
	b = strconv.AppendInt(b, ts, 10)
	b = append(b, `,"pad":"`...)
	b = append(b, pad...)
	b = append(b, `"}}]`...)
	return b
}

// Publish runs spec: frames are stamped just before they are queued to the
// writers, so latency measured from the stamp includes the fan-out.
func (s *Server) Publish(ctx context.Context, spec PublishSpec) (PublishResult, error) {
	s.publishMu.Lock()
	defer s.publishMu.Unlock()
	if spec.Rate <= 0 {
		return PublishResult{}, errors.New("publish: rate must be positive")
	}
	if spec.Topic == "" {
		spec.Topic = "realtime:bench"
	}
	if spec.Event == "" {
		spec.Event = "tick"
	}
	pad := strings.Repeat("x", max(spec.PayloadBytes-40, 0))
	errClosing := errors.New("publish: server closing")
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case <-s.closing:
			cancel(errClosing)
		case <-ctx.Done():
		}
	}()
	start := time.Now()
	res := PublishResult{Connections: s.conns.Load()}
	maxLag, err := bench.Pace(ctx, spec.Count, spec.Rate, func(i int) error {
		now := time.Now()
		pm, err := websocket.NewPreparedMessage(websocket.TextMessage, Frame(spec.Topic, spec.Event, int(spec.First)+i, now.UnixNano(), pad))
		if err != nil {
			return fmt.Errorf("prepare frame: %w", err)
		}
		for _, sh := range s.shards {
			select {
			case sh.queue <- pm:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		res.Sent++
		return nil
	})
	if err != nil {
		if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil {
			err = cause // the caller's cancellation, or the server closing
		}
		return res, err
	}
	res.Seconds = time.Since(start).Seconds()
	res.MaxLagMs = float64(maxLag) / float64(time.Millisecond)
	return res, nil
}

func (s *Server) handlePublish(w http.ResponseWriter, r *http.Request) {
	var spec PublishSpec
	if err := json.NewDecoder(r.Body).Decode(&spec); err != nil {
		http.Error(w, "bad publish spec: "+err.Error(), http.StatusBadRequest)
		return
	}
	res, err := s.Publish(r.Context(), spec)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]any{"error": err.Error(), "result": res})
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Close stops the writers, closes every connection and waits for the
// server's goroutines. It is safe to call more than once.
func (s *Server) Close() {
	s.closed.Do(func() {
		close(s.closing)
		for _, sh := range s.shards {
			sh.mu.Lock()
			for c := range sh.conns {
				c.Close()
			}
			sh.mu.Unlock()
		}
	})
	s.wg.Wait()
}

// ListenAndServe serves a new Server on addr until ctx ends; ready is
// called with the bound address once it accepts connections.
func ListenAndServe(ctx context.Context, addr string, cfg Config, ready func(net.Addr)) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("baseline server: listen: %w", err)
	}
	s := New(cfg)
	hs := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	if ready != nil {
		ready(ln.Addr())
	}
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	// Websockets are hijacked: Shutdown does not wait for them, Close does.
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = hs.Shutdown(sctx)
	cancel()
	s.Close()
	if err == nil {
		err = <-errc
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}
