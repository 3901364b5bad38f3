// Package realtime is the /realtime/v1 surface: Supabase Realtime's
// websocket protocol (Phoenix channels, vsn 1.0.0 and 2.0.0, as
// @supabase/supabase-js speaks it) and its HTTP broadcast API, on the
// fan-out hub of broker/fanout, with the PostgreSQL authorizer that
// decides what each subscriber may receive (authorizer.go).
//
// It owns the protocol: frames, channels, joins, access-token refresh,
// the writers that send to clients. The hub, its bindings and queues are
// broker/fanout's; tokens on the HTTP request are verified by the edge's
// guard; SQL as a subscriber's role goes through pgrole. It imports no
// other surface. HTTP errors are the edge's api.Error; errors inside the
// websocket are Phoenix replies and system messages, as Supabase sends
// them.
package realtime

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/fluxbase/fluxbase/api"
	"github.com/fluxbase/fluxbase/auth"
	"github.com/fluxbase/fluxbase/broker/fanout"
)

// Prefix is where the surface is served.
const Prefix = "/realtime/v1"

// Beyond Supabase's protocol, Fluxbase adds two fields so a client can
// resume without gaps after a disconnect:
//
//   - every postgres_changes payload's data carries "log_seq", the
//     change's sequence in the change log (the same on every node);
//   - a phx_join may carry config.postgres_changes_resume: {"log_seq": N}
//     ("seq" is accepted too), the last log_seq the client saw. The
//     channel then replays the log after N to its bindings (filters and
//     authorization applied as live) and switches to live with no gap and
//     no duplicate. A position the log no longer holds, or more than
//     the hub's MaxResumeChanges behind its end, is refused in the
//     join's reply with "UnableToReplayMessages: ..." (the client reads
//     afresh); a replay that fails later closes the channel with a
//     system error of that name.
//
// Limits (limits.go) bound what a client may ask: websockets per node,
// channels per connection, bindings per join, presence size, joins and
// messages per second, with Supabase's reasons.
//
// Filters are those of realtime-js's filter builder: comma-separated,
// AND-combined "col=op.value" with eq, neq, lt, lte, gt, gte, in, like,
// ilike, is, match, imatch, isdistinct and the not. prefix. A DELETE is
// matched against its old row, so filters on other columns than the key
// need REPLICA IDENTITY FULL (FLUXBASE_REPLICA_IDENTITY_FULL); a DELETE
// whose old row lacks a filtered column does not match, and on a table
// under row-level security a DELETE matches only filters on the key.
//
// Authorization (docs/ARCHITECTURE.md, "Realtime authorization"): a
// binding on a table the role may not SELECT, or filtering on a column it
// may not read, refuses the join; a binding on every table or schema
// never matches through such a filter; columns the role may not read are
// left out of records and columns. Under row-level security a change is
// judged on the row it carries, with the subscriber's claims (one query
// per table, role and chunk of claims groups for a batch of changes): the
// new row of an insert or update, the old row of a delete when the replica
// identity logged what the policies read (else it carries only its key,
// as in Supabase); an update's old_record is its key unless its old row
// passes too.

// Config configures the realtime endpoint; zero values mean
// defaults.
type Config struct {
	// Verifier checks the access tokens sent in joins and refreshes.
	Verifier *auth.Verifier
	// Pool is the database the authorization checks run on: table and
	// column privileges, row-level security, private channel policies.
	// Nil lets every subscriber read everything (tests only).
	Pool *pgxpool.Pool
	// Source is the change log; nil serves no postgres_changes.
	Source fanout.Source
	// Bus carries broadcast and presence between nodes; nil keeps them
	// within this node.
	Bus fanout.Bus
	// Hub tunes the fan-out hub (queue bounds, node id, ...).
	Hub fanout.Config
	// IdleTimeout closes a connection that sent nothing, not even a
	// heartbeat, for this long. Default 60 s (the client beats every 25 s).
	IdleTimeout time.Duration
	// WriteTimeout bounds one burst of writes to a client. Default 10 s.
	WriteTimeout time.Duration
	// MaxMessageBytes bounds a client message. Default 1 MiB.
	MaxMessageBytes int64
	Log             *zap.Logger
	// Registerer receives the fluxbase_realtime_* metrics; nil skips them.
	Registerer prometheus.Registerer
	// Revocations refuses tokens of ended sessions in joins and refreshes,
	// and tells of each session that ends so its open channels close;
	// nil checks none.
	Revocations Revocations

	// Limits bound what one node and one client may ask (limits.go).
	Limits Limits
}

// Revocations is the node's set of ended sessions (auth.Revocations).
type Revocations interface {
	Revoked(sessionID string) bool
	OnRevoke(fn func(sessionID string))
}

// revokedReason closes a channel whose token's session has ended, in the
// words Supabase Realtime uses for a token that lost its validity.
const revokedReason = "InvalidJWTToken: Token has been revoked"

// sessionChannels finds the open channels of a session, to close them
// when it ends.
type sessionChannels struct {
	mu sync.Mutex
	m  map[string]map[*rtChannel]*rtConn
}

// track files rc under its claims' session; c.mu is not held.
func (rt *Endpoint) track(c *rtConn, rc *rtChannel, sessionID string) {
	rt.sessions.mu.Lock()
	defer rt.sessions.mu.Unlock()
	if rc.session == sessionID {
		return
	}
	rt.untrackLocked(rc)
	if sessionID == "" {
		return
	}
	set := rt.sessions.m[sessionID]
	if set == nil {
		set = map[*rtChannel]*rtConn{}
		rt.sessions.m[sessionID] = set
	}
	set[rc] = c
	rc.session = sessionID
}

func (rt *Endpoint) untrack(rc *rtChannel) {
	rt.sessions.mu.Lock()
	rt.untrackLocked(rc)
	rt.sessions.mu.Unlock()
}

func (rt *Endpoint) untrackLocked(rc *rtChannel) {
	if rc.session == "" {
		return
	}
	if set := rt.sessions.m[rc.session]; set != nil {
		delete(set, rc)
		if len(set) == 0 {
			delete(rt.sessions.m, rc.session)
		}
	}
	rc.session = ""
}

// sessionRevoked closes every open channel of the session.
func (rt *Endpoint) sessionRevoked(sessionID string) {
	rt.sessions.mu.Lock()
	set := rt.sessions.m[sessionID]
	open := make(map[*rtChannel]*rtConn, len(set))
	for rc, c := range set {
		open[rc] = c
	}
	rt.sessions.mu.Unlock()
	for rc, c := range open {
		c.shutdown(rc, revokedReason)
	}
}

// Endpoint serves /realtime/v1: the websocket endpoint speaking
// Supabase's Phoenix-channel protocol, and the HTTP broadcast API. Serve
// its Surface on the edge, run it with Run.
type Endpoint struct {
	cfg      Config
	log      *zap.Logger
	hub      *fanout.Hub
	authz    *pgAuthorizer // nil without a Pool
	upgrader websocket.Upgrader
	metrics  *realtimeMetrics
	writers  *writerPool

	// ctx ends when the endpoint closes; connections run under it.
	ctx    context.Context
	cancel context.CancelFunc
	conns  sync.WaitGroup // every connection until its socket is closed
	drain  drainState     // the open connections, for Drain
	closed sync.Once
	// connMu orders adding a connection to conns before Close's Wait:
	// once closing is set, no connection is added (WaitGroup's rule).
	connMu  sync.Mutex
	closing bool

	access tableAccess // authz, or nil: what joins ask of tables
	limits Limits
	// open counts the websockets from before their upgrade until their
	// socket is closed, against Limits.MaxConnections.
	open atomic.Int64

	sessions sessionChannels
}

type realtimeMetrics struct {
	sent prometheus.Counter
	slow prometheus.Counter
	// changes counts changes dispatched; deliveries the frames they made.
	changes    prometheus.Counter
	deliveries prometheus.Counter
	// refused counts upgrades past MaxConnections; limited the messages
	// refused by a per-client limit, by limit.
	refused prometheus.Counter
	limited *prometheus.CounterVec
}

// New builds the realtime endpoint and its fan-out hub.
func New(cfg Config) *Endpoint {
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 60 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = 1 << 20
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	rt := &Endpoint{cfg: cfg, log: cfg.Log.Named("realtime"), limits: cfg.Limits.withDefaults(),
		sessions: sessionChannels{m: map[string]map[*rtChannel]*rtConn{}}}
	if cfg.Revocations != nil {
		// Shutting a channel down only queues frames: it never blocks
		// the revocations' watcher.
		cfg.Revocations.OnRevoke(rt.sessionRevoked)
	}
	rt.ctx, rt.cancel = context.WithCancel(context.Background())
	rt.metrics = &realtimeMetrics{
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fluxbase_realtime_messages_sent_total",
			Help: "Websocket messages written to realtime clients.",
		}),
		slow: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fluxbase_realtime_slow_consumer_disconnects_total",
			Help: "Realtime clients disconnected because their outbound queue overflowed.",
		}),
		changes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fluxbase_realtime_changes_total",
			Help: "Changes of the log dispatched to this node's realtime clients.",
		}),
		deliveries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fluxbase_realtime_change_deliveries_total",
			Help: "postgres_changes messages queued to realtime clients.",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fluxbase_realtime_connections_refused_total",
			Help: "Websocket upgrades refused because the node holds its limit of connections.",
		}),
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fluxbase_realtime_limited_total",
			Help: "Client messages refused by a per-client limit, by limit (channels, bindings, presence, joins, events, resume).",
		}, []string{"limit"}),
	}
	hc := cfg.Hub
	onSlow, onChange := hc.OnSlowConsumer, hc.OnChange
	hc.OnSlowConsumer = func() {
		rt.metrics.slow.Inc()
		if onSlow != nil {
			onSlow()
		}
	}
	hc.OnChange = func(n int) {
		rt.metrics.changes.Inc()
		rt.metrics.deliveries.Add(float64(n))
		if onChange != nil {
			onChange(n)
		}
	}
	var authz fanout.Authorizer
	if cfg.Pool != nil {
		rt.authz = &pgAuthorizer{pool: cfg.Pool}
		rt.access = rt.authz
		authz = rt.authz
	}
	bus := cfg.Bus
	if bus == nil {
		bus = fanout.NewLocalBus()
	}
	rt.hub = fanout.New(hc, cfg.Source, bus, authz, rt.log)
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(
			rt.metrics.sent, rt.metrics.slow, rt.metrics.changes, rt.metrics.deliveries,
			rt.metrics.refused, rt.metrics.limited,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "fluxbase_realtime_websockets",
				Help: "Websocket connections held, from their upgrade until their socket is closed.",
			}, func() float64 { return float64(rt.open.Load()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "fluxbase_realtime_max_connections",
				Help: "The node's limit of websocket connections; 0 for none.",
			}, func() float64 { return float64(rt.limits.MaxConnections) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "fluxbase_realtime_connections",
				Help: "Open realtime websocket connections.",
			}, func() float64 { return float64(rt.hub.Clients()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "fluxbase_realtime_channels",
				Help: "Joined realtime channels.",
			}, func() float64 { return float64(rt.hub.Channels()) }),
		)
	}
	rt.writers = newWriterPool(0)
	rt.upgrader = websocket.Upgrader{
		// Client messages are small; a larger one is read in pieces.
		ReadBufferSize: 1024,
		// The writers encode frames themselves; the library writes only
		// the rare close frame, from a pooled buffer.
		WriteBufferPool: &sync.Pool{},
		// Access is governed by keys and tokens, not origins, as for the
		// rest of the API.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	return rt
}

// Surface is the endpoint's routes, each needing a key (api.NeedKey):
// the websocket's role is its key's until a join or an access_token
// message brings a user's token.
func (rt *Endpoint) Surface() api.Surface {
	return api.Surface{Prefix: Prefix, Routes: []api.Route{
		{Method: http.MethodGet, Pattern: "/websocket", Access: api.NeedKey, Handler: http.HandlerFunc(rt.serveWebsocket)},
		{Method: http.MethodPost, Pattern: "/api/broadcast", Access: api.NeedKey, Handler: http.HandlerFunc(rt.serveBroadcast)},
		{Method: http.MethodPost, Pattern: "/api/broadcast/{name}/events/{event}", Access: api.NeedKey, Handler: http.HandlerFunc(rt.serveBroadcastEvent)},
	}}
}

// Hub is the endpoint's fan-out hub.
func (rt *Endpoint) Hub() *fanout.Hub { return rt.hub }

// Run runs the hub until ctx ends, then closes every connection and
// waits for them. It returns nil on a clean stop.
func (rt *Endpoint) Run(ctx context.Context) error {
	err := rt.hub.Run(ctx)
	rt.Close()
	return err
}

// Close disconnects every client and waits until their sockets are
// closed. Idempotent.
func (rt *Endpoint) Close() error {
	rt.cancel()
	err := rt.hub.Close()
	rt.connMu.Lock()
	rt.closing = true
	rt.connMu.Unlock()
	rt.conns.Wait()
	rt.closed.Do(rt.writers.close)
	return err
}

// register counts a connection about to be upgraded in conns, unless the
// endpoint is closing: a connection that arrives then is refused.
func (rt *Endpoint) register() bool {
	rt.connMu.Lock()
	defer rt.connMu.Unlock()
	if rt.closing {
		return false
	}
	rt.conns.Add(1)
	return true
}

// Errors of the realtime HTTP API (see docs/ERRORS.md).
var (
	errBadBroadcast = &api.Error{Status: http.StatusBadRequest, Code: "FB020", Message: "Invalid broadcast request"}
	errBadWebsocket = &api.Error{Status: http.StatusBadRequest, Code: "FB021", Message: "Invalid websocket request"}
)

func (rt *Endpoint) serveWebsocket(w http.ResponseWriter, r *http.Request) {
	vsn, err := fanout.ParseVsn(r.URL.Query().Get("vsn"))
	if err != nil {
		api.WriteError(w, errBadWebsocket.With(err.Error()))
		return
	}
	claims := api.Claims(r)
	if claims == nil {
		api.WriteError(w, api.ErrNoAPIKey)
		return
	}
	if rt.drain.refusing() {
		w.Header().Set("Connection", "close")
		api.WriteError(w, errDraining)
		return
	}
	// Counted before the upgrade, so that no more than the limit are
	// ever held, and refused before it: a refused connection never joins
	// the hub, and its descriptor is freed at once.
	if n := rt.open.Add(1); rt.limits.MaxConnections > 0 && n > int64(rt.limits.MaxConnections) {
		rt.open.Add(-1)
		rt.metrics.refused.Inc()
		refuseConnection(w, rt.limits.MaxConnections)
		return
	}
	if !rt.register() {
		rt.open.Add(-1)
		api.WriteError(w, api.ErrUnavailable)
		return
	}
	// The upgrade writes its own response: carry the edge's headers that
	// name the request and the node over.
	upgraded := http.Header{}
	for _, h := range []string{"X-Request-Id", "X-Fluxbase-Node"} {
		if v := w.Header().Get(h); v != "" {
			upgraded.Set(h, v)
		}
	}
	ws, err := rt.upgrader.Upgrade(w, r, upgraded)
	if err != nil {
		rt.open.Add(-1)
		rt.conns.Done()
		return // the upgrader answered already
	}
	c := newRTConn(rt, ws, vsn, claims)
	rt.drain.add(c)
	// The handler returns at once, releasing the request and the HTTP
	// server's state for this connection; the reader lives on in a
	// goroutine of its own, which starts with a small stack.
	go c.readLoop(rt.ctx)
}

// broadcastRequest is the body of POST /realtime/v1/api/broadcast.
type broadcastRequest struct {
	Messages []struct {
		Topic   string          `json:"topic"`
		Event   string          `json:"event"`
		Payload json.RawMessage `json:"payload"`
		Private bool            `json:"private"`
	} `json:"messages"`
}

func (rt *Endpoint) serveBroadcast(w http.ResponseWriter, r *http.Request) {
	var req broadcastRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, rt.cfg.MaxMessageBytes))
	if err := dec.Decode(&req); err != nil {
		api.WriteError(w, errBadBroadcast.With("body must be JSON {\"messages\":[{topic, event, payload, private}]}: "+err.Error()))
		return
	}
	if len(req.Messages) == 0 {
		api.WriteError(w, errBadBroadcast.With("messages is empty"))
		return
	}
	for i, m := range req.Messages {
		if m.Topic == "" || m.Event == "" {
			api.WriteError(w, errBadBroadcast.With("every message needs a topic and an event"))
			return
		}
		if len(m.Payload) == 0 || string(m.Payload) == "null" {
			req.Messages[i].Payload = json.RawMessage("{}")
		}
	}
	claims := api.Claims(r)
	// Authorize every message before sending any, so a refusal sends none.
	for _, m := range req.Messages {
		if e := rt.authorizeHTTPBroadcast(r.Context(), claims, m.Topic, m.Private); e != nil {
			api.WriteError(w, e)
			return
		}
	}
	for _, m := range req.Messages {
		topic := "realtime:" + strings.TrimPrefix(m.Topic, "realtime:")
		if err := rt.hub.Broadcast(topic, m.Private, m.Event, fanout.EncodingJSON, m.Payload); err != nil {
			api.WriteError(w, errBadBroadcast.With(err.Error()))
			return
		}
	}
	w.WriteHeader(http.StatusAccepted)
}

func (rt *Endpoint) serveBroadcastEvent(w http.ResponseWriter, r *http.Request) {
	name, event := chi.URLParam(r, "name"), chi.URLParam(r, "event")
	private := r.URL.Query().Get("private") == "true"
	body, err := io.ReadAll(io.LimitReader(r.Body, rt.cfg.MaxMessageBytes+1))
	if err != nil {
		api.WriteError(w, errBadBroadcast.With(err.Error()))
		return
	}
	if int64(len(body)) > rt.cfg.MaxMessageBytes {
		api.WriteError(w, errBadBroadcast.With("body too large"))
		return
	}
	encoding := fanout.EncodingJSON
	if ct := r.Header.Get("Content-Type"); strings.HasPrefix(ct, "application/octet-stream") {
		encoding = fanout.EncodingBinary
	} else if !json.Valid(body) {
		api.WriteError(w, errBadBroadcast.With("body must be JSON, or sent as application/octet-stream"))
		return
	}
	if e := rt.authorizeHTTPBroadcast(r.Context(), api.Claims(r), name, private); e != nil {
		api.WriteError(w, e)
		return
	}
	if err := rt.hub.Broadcast("realtime:"+strings.TrimPrefix(name, "realtime:"), private, event, encoding, body); err != nil {
		api.WriteError(w, errBadBroadcast.With(err.Error()))
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

func (rt *Endpoint) authorizeHTTPBroadcast(ctx context.Context, claims *auth.Claims, topic string, private bool) *api.Error {
	if !private || claims.IsServiceRole() || rt.authz == nil {
		return nil
	}
	p, err := rt.authz.policies(ctx, claims, strings.TrimPrefix(topic, "realtime:"))
	if err != nil {
		rt.log.Warn("private channel policy check failed", zap.Error(err))
		return api.ErrUnavailable.With("could not check the channel's policies")
	}
	if !p.writeBroadcast {
		return api.ErrForbidden.With("You do not have permissions to write to this Channel topic: " + topic)
	}
	return nil
}

// revoked reports whether the claims' session has ended.
func (rt *Endpoint) revoked(cl *auth.Claims) bool {
	return cl != nil && cl.SessionID != "" && rt.cfg.Revocations != nil && rt.cfg.Revocations.Revoked(cl.SessionID)
}
