// Package replication turns the PostgreSQL write-ahead log into change
// events: it owns the publication and the logical replication slot, decodes
// pgoutput into change.Event events, and is the only writer of the change
// log.
//
// It does not own the log itself (the broker package runs the JetStream
// stream and decides where it lives and how it syncs), nor fan-out to
// clients, nor the HTTP surface. It reads the log only to learn its last
// event.
//
// # Stages
//
// One file per stage, in the order data flows:
//
//	slot.go        the publication, the slot, REPLICA IDENTITY FULL, the holder's chores
//	read.go        the replication connection: standby, START_REPLICATION, keepalives, deadlines
//	decode.go      pgoutput → encoded events, in commit order, with tx_index and tx_last
//	publish.go     pipelined publishing into the log, a bounded window in flight
//	checkpoint.go  the slot's confirmed LSN, advanced only past durable events
//
// The event, its encoding, its subjects and its message id are the
// contract of package change; here types.go converts column values to the
// contract's JSON, catalog.go does the catalog lookups, and jetstream.go is
// a Log on any JetStream stream.
//
// # Guarantees
//
// Every committed change is published exactly once, in commit order, across
// crashes and failover:
//
//   - One holder: every node calls Run; START_REPLICATION on a slot that
//     another connection streams fails with object_in_use, so PostgreSQL
//     itself elects the holder. The others retry every StandbyRetry; when
//     the holder dies its socket closes and the next try wins.
//   - Nothing lost: the slot's confirmed LSN moves only to the end of a
//     transaction whose every event the log has acknowledged and holds
//     durably (its sequence at or below Log.DurableSeq). The position
//     received from the server is reported separately, as the write
//     position.
//   - Nothing twice: a new holder reads the log's last event and skips
//     every event at or before its position (commit LSN, tx_index), whatever
//     the log's de-duplication window; PostgreSQL resends from the
//     confirmed LSN, so the skip covers exactly the redelivered part. The
//     log's stream must therefore only ever hold this database's changes:
//     pointing a slot of another cluster (or a restored one, whose LSNs went
//     back) at a non-empty stream would skip its changes.
//   - In order: events are published in WAL order, pipelined, each with the
//     previous event's id as a precondition (Nats-Expected-Last-Msg-Id), so
//     an event that failed is never overtaken by one that was stored; any
//     failure ends the session and the next one resumes from the log.
//
// A transaction is never held in memory: its events stream out as they are
// decoded (one event waits to learn whether it is tx_last), and at most
// Window unacknowledged events are in flight.
//
// # Events
//
// The events are those of the contract in package change: one message per
// row change on change.Subject (fluxbase.changes.<schema>.<table>.<op>),
// with header Nats-Msg-Id <commit_lsn>/<tx_index> (change.Position.MsgID)
// and the JSON of change.Event as its body, keys in the order that package
// documents, tx_last last.
//
// # Values
//
// Column values are converted (types.go) to the JSON that package change
// documents for each type. The replication connection fixes DateStyle,
// IntervalStyle, TimeZone, extra_float_digits and bytea_output, so role or
// database settings cannot change this.
//
// # Metrics
//
// fluxbase_replication_lag_bytes (pg_current_wal_lsn() minus the slot's
// confirmed_flush_lsn, measured by the holder), fluxbase_replication_events_total{op}
// (events durable in the log), fluxbase_replication_last_commit_timestamp
// (of the last durable transaction) and fluxbase_replication_holder (1 or 0).
package replication

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fluxbase/fluxbase/change"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Log is the change log the events go to: an ordered stream that
// de-duplicates by message id and tells how far it is durable. The broker
// package provides it; it is declared here, where it is used.
type Log interface {
	// PublishAsync hands one message to the log and returns before the log
	// has stored it; the Ack reports the outcome. Messages are stored in
	// the order of the calls.
	PublishAsync(msg Message) (Ack, error)
	// DurableSeq is the highest stream sequence the log holds durably (on
	// disk, or on a quorum of replicas).
	DurableSeq() uint64
	// LastChange returns the message id of the last message in the log;
	// ok is false when the log is empty.
	LastChange(ctx context.Context) (id string, ok bool, err error)
}

// Message is one change event on its way to the log.
type Message struct {
	Subject string
	// ID is the de-duplication id (Nats-Msg-Id): Position.MsgID.
	ID string
	// ExpectLastID, when set, is a precondition: the log stores the message
	// only if the id of its last message is ExpectLastID
	// (Nats-Expected-Last-Msg-Id). Publishing is pipelined, so without it a
	// message that failed could be followed by one that was stored, and
	// the gap would never be filled.
	ExpectLastID string
	Data         []byte
}

// Ack is the outcome of one PublishAsync.
type Ack interface {
	// Done is closed when the outcome is known.
	Done() <-chan struct{}
	// Result is the stream sequence the message was stored at (or that
	// already held it, for a duplicate), or why it was not stored. It is
	// valid once Done is closed.
	Result() (seq uint64, err error)
}

// Config configures a Replicator. The zero value of every field but
// DatabaseURL means its default.
type Config struct {
	// DatabaseURL is the primary's connection URL. The role needs the
	// REPLICATION attribute (or superuser), and ownership of the published
	// tables for ReplicaIdentityFull.
	DatabaseURL string
	// SlotName is the logical replication slot; default "fluxbase". Every
	// node uses the same slot: PostgreSQL lets one connection stream it at a
	// time, which is what elects the holder.
	SlotName string
	// PublicationName is the publication; default "fluxbase".
	PublicationName string
	// Tables lists what to publish (FLUXBASE_REPLICATION_TABLES): "table"
	// (in public), "schema.table", or "schema.*" for every table of a
	// schema, present and future. Empty means every table of public (FOR
	// TABLES IN SCHEMA public, so new tables are included as they are
	// created) plus storage.objects when it exists.
	Tables []string
	// ReplicaIdentityFull sets REPLICA IDENTITY FULL on every published
	// table, now and as tables appear, so updates and deletes carry the
	// whole old row.
	ReplicaIdentityFull bool

	// StatusInterval is how often the slot's position is reported to the
	// server and a reply requested; default 1s.
	StatusInterval time.Duration
	// ReceiveTimeout is how long the server may stay silent before the
	// connection is given up. By default it is 2×StatusInterval, but never
	// less than half the server's wal_sender_timeout plus StatusInterval:
	// while it replays a long transaction of unpublished changes a
	// walsender only reports in every wal_sender_timeout/2, and giving up
	// sooner would restart that replay forever.
	ReceiveTimeout time.Duration
	// Window bounds the events published but not yet acknowledged by the
	// log (their data is held until then); default 4096. Acknowledged events
	// waiting to become durable are bounded separately, at 32 windows.
	Window int
	// AckTimeout is how long one publish may wait for the log; default 30s.
	AckTimeout time.Duration
	// HeartbeatInterval is how often the holder writes a tiny
	// non-transactional logical message into the WAL, so the slot advances
	// and liveness is visible even when nothing is published; default 10s,
	// negative to disable.
	HeartbeatInterval time.Duration
	// ReconcileInterval is how often the holder checks the publication
	// (storage.objects appearing, listed tables created) and the replica
	// identity of published tables; default 30s.
	ReconcileInterval time.Duration
	// StandbyRetry is how often a standby node tries to take the slot;
	// default 1s (plus up to a quarter of it at random, so nodes spread).
	StandbyRetry time.Duration
	// LagInterval is how often the holder measures the slot's lag; default 5s.
	LagInterval time.Duration
	// LagWarnBytes logs a warning while the slot lags more than this many
	// bytes of WAL; default 1 GiB, negative to disable.
	LagWarnBytes int64
	// ShutdownTimeout bounds how long Run waits, when its context ends, for
	// published events to become durable so the slot can confirm them;
	// default 5s.
	ShutdownTimeout time.Duration
	// MaxEventBytes is the largest event published; a bigger one leaves out
	// its largest column values and names them in omitted_columns. Default
	// 8 MiB less 64 KiB for headers, under the broker's maximum payload of
	// 8 MiB; negative disables the check.
	MaxEventBytes int
	// Subject names the subject of a change; default change.Subject.
	Subject func(schema, table, op string) string
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if c.SlotName == "" {
		c.SlotName = "fluxbase"
	}
	if c.PublicationName == "" {
		c.PublicationName = "fluxbase"
	}
	def(&c.StatusInterval, time.Second)
	if c.Window <= 0 {
		c.Window = 4096
	}
	def(&c.AckTimeout, 30*time.Second)
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = 10 * time.Second
	}
	def(&c.ReconcileInterval, 30*time.Second)
	def(&c.StandbyRetry, time.Second)
	def(&c.LagInterval, 5*time.Second)
	if c.LagWarnBytes == 0 {
		c.LagWarnBytes = 1 << 30
	}
	def(&c.ShutdownTimeout, 5*time.Second)
	if c.Subject == nil {
		c.Subject = change.Subject
	}
	if c.MaxEventBytes == 0 {
		c.MaxEventBytes = 8<<20 - 64<<10
	}
	return c
}

// Option sets a collaborator of the Replicator.
type Option func(*Replicator)

// WithLogger sets the logger; default zap.NewNop.
func WithLogger(l *zap.Logger) Option { return func(r *Replicator) { r.log = l } }

// WithRegisterer registers the metrics on reg; by default they are not
// registered.
func WithRegisterer(reg prometheus.Registerer) Option { return func(r *Replicator) { r.reg = reg } }

// Replicator streams the slot into the log while it holds the slot, and
// stands by otherwise. Run it on every node.
type Replicator struct {
	cfg     Config
	sink    Log
	log     *zap.Logger
	reg     prometheus.Registerer
	metrics *metrics
	types   *typeCache
	tables  tableSpec
	replCfg *pgconn.Config

	holder  atomic.Bool
	status  atomic.Pointer[status]
	running atomic.Bool

	mu      sync.Mutex // guards the fields below
	pool    *pgxpool.Pool
	stop    chan struct{}
	done    chan struct{} // closed when Run returns; nil when not running
	closed  bool
	missing string // configured tables last found missing, for the warning
}

// status is what Ready reports.
type status struct {
	state string // "holder", "standby", "starting" or "failing"
	err   error
}

// New checks cfg and returns a Replicator; it connects to nothing until Run.
func New(cfg Config, sink Log, opts ...Option) (*Replicator, error) {
	if sink == nil {
		return nil, errors.New("replication: no log to publish to")
	}
	if cfg.DatabaseURL == "" {
		return nil, errors.New("replication: no database URL")
	}
	cfg = cfg.withDefaults()
	if !validSlotName(cfg.SlotName) {
		return nil, fmt.Errorf("replication: slot name %q: PostgreSQL allows 1 to 63 lower-case letters, digits and underscores", cfg.SlotName)
	}
	tables, err := parseTables(cfg.Tables)
	if err != nil {
		return nil, err
	}
	replCfg, err := replicationConfig(cfg.DatabaseURL)
	if err != nil {
		return nil, err
	}
	r := &Replicator{cfg: cfg, sink: sink, log: zap.NewNop(), tables: tables, replCfg: replCfg, stop: make(chan struct{})}
	for _, o := range opts {
		o(r)
	}
	if r.metrics, err = newMetrics(r.reg); err != nil {
		return nil, err
	}
	r.setStatus("starting", nil)
	return r, nil
}

// IsHolder reports whether this node holds the slot now.
func (r *Replicator) IsHolder() bool { return r.holder.Load() }

// Ready reports whether replication is healthy on this node: nil while it
// holds the slot or stands by behind another holder, an error naming what
// fails otherwise.
func (r *Replicator) Ready() error {
	if !r.running.Load() {
		return errors.New("replication is not running")
	}
	st := r.status.Load()
	switch st.state {
	case "holder", "standby":
		return nil
	case "starting":
		return errors.New("replication is starting")
	}
	return fmt.Errorf("replication: %w", st.err)
}

func (r *Replicator) setStatus(state string, err error) {
	r.status.Store(&status{state: state, err: err})
}

func (r *Replicator) setHolder(h bool) {
	r.holder.Store(h)
	if h {
		r.metrics.holder.Set(1)
		r.setStatus("holder", nil)
	} else {
		r.metrics.holder.Set(0)
		r.metrics.lag.Set(0) // only the holder measures lag
	}
}

// Close stops Run, waits for it to return and releases the connections. It
// is safe to call more than once.
func (r *Replicator) Close() error {
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		close(r.stop)
	}
	done := r.done
	r.mu.Unlock()
	if done != nil {
		<-done
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pool != nil {
		r.pool.Close()
		r.pool = nil
	}
	return nil
}

// errPermanent marks errors that retrying cannot fix.
var errPermanent = errors.New("permanent")

// Run replicates until ctx ends or Close is called, and then returns nil.
// It returns an error only for what retrying cannot fix (wal_level is not
// logical, the slot belongs to another plugin or database). Every other
// failure — the database or the log unreachable, the slot held by another
// node — is retried.
func (r *Replicator) Run(ctx context.Context) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	if r.done != nil {
		r.mu.Unlock()
		return errors.New("replication: Run called twice")
	}
	done := make(chan struct{})
	r.done = done
	r.mu.Unlock()
	defer close(done)
	r.running.Store(true)
	defer r.running.Store(false)

	// Close ends Run through its context; this goroutine relays it and is
	// waited for before Run returns.
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-r.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	defer wg.Wait()
	defer cancel()

	backoff := time.Second
	prepared := false
	for {
		var err error
		if !prepared {
			err = r.prepare(ctx)
			prepared = err == nil
		}
		if err == nil {
			var held time.Duration
			held, err = r.session(ctx)
			if held > time.Minute {
				backoff = time.Second
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		var wait time.Duration
		switch {
		case errors.Is(err, errSlotInUse):
			r.setStatus("standby", nil)
			wait = r.cfg.StandbyRetry + time.Duration(rand.Int64N(int64(r.cfg.StandbyRetry/4)+1))
		case errors.Is(err, errPermanent):
			r.setStatus("failing", err)
			r.log.Error("replication stopped", zap.Error(err))
			return fmt.Errorf("replication: %w", err)
		default:
			r.setStatus("failing", err)
			r.log.Warn("replication interrupted; retrying", zap.Error(err), zap.Duration("in", backoff))
			if errors.Is(err, errSlotMissing) || errors.Is(err, errPublicationMissing) {
				prepared = false
			}
			wait, backoff = backoff, min(backoff*2, 10*time.Second)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// sidePool is the ordinary connection pool for catalog queries, heartbeats
// and lag; it is made on first use.
func (r *Replicator) sidePool(ctx context.Context) (*pgxpool.Pool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pool != nil {
		return r.pool, nil
	}
	cfg, err := pgxpool.ParseConfig(r.cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("%w: database URL: %v", errPermanent, err)
	}
	cfg.MaxConns = 3
	cfg.MinConns = 0
	cfg.ConnConfig.RuntimeParams["application_name"] = "fluxbase-replication"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	r.pool = pool
	r.types = newTypeCache(catalogTypeLookup(pool))
	return pool, nil
}

// prepare checks the server and makes sure the publication and the slot
// exist, so that START_REPLICATION can succeed.
func (r *Replicator) prepare(ctx context.Context) error {
	pool, err := r.sidePool(ctx)
	if err != nil {
		return err
	}
	var level string
	if err := pool.QueryRow(ctx, "show wal_level").Scan(&level); err != nil {
		return fmt.Errorf("check wal_level: %w", err)
	}
	if level != "logical" {
		return fmt.Errorf("%w: wal_level is %s; logical replication needs wal_level=logical (and a server restart)", errPermanent, level)
	}
	if err := r.ensurePublication(ctx, pool); err != nil {
		return err
	}
	return ensureSlot(ctx, pool, r.cfg.SlotName)
}

// replicationConfig is the connection config of the replication
// connection. The settings fix how the walsender prints values, whatever
// the role's or database's defaults: types.go relies on them.
func replicationConfig(url string) (*pgconn.Config, error) {
	cfg, err := pgconn.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("replication: database URL: %w", err)
	}
	for k, v := range replicationParams {
		cfg.RuntimeParams[k] = v
	}
	if _, ok := cfg.RuntimeParams["application_name"]; !ok {
		// Shown in pg_stat_replication; a URL may name the node instead.
		cfg.RuntimeParams["application_name"] = "fluxbase-replication"
	}
	return cfg, nil
}

var replicationParams = map[string]string{
	"replication":        "database",
	"client_encoding":    "UTF8",
	"DateStyle":          "ISO, MDY",
	"IntervalStyle":      "postgres",
	"TimeZone":           "UTC",
	"extra_float_digits": "3",
	"bytea_output":       "hex",
}

func validSlotName(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// quoteLiteral quotes s as an SQL string literal for the replication
// protocol's commands, which take no parameters.
func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// pgCode is the SQLSTATE of err, or "".
func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}
