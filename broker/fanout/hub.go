// Package fanout is the realtime fan-out hub of a node: the websocket
// clients' subscriptions (postgres_changes bindings, broadcast and presence
// channels), the index that matches each change against them, the
// per-client bounded queues, and the cluster-wide routing of broadcast and
// presence over the broker's plain messaging.
//
// Each change of the log reaches the hub once per node, is decoded once,
// matched by an index (schema.table → event → the eq condition of the
// filter, scanning only bindings with nothing to index on), authorized by
// group of subscribers that share claims (one row-level check per table,
// role and chunk of groups for a whole batch of changes, not one per
// subscriber or group) on the row the change carries, never on the row
// as the table holds it later, live and replayed alike; encoded once per
// distinct payload and queued to each matching client. A client whose queue overflows is
// disconnected with a reason; it never stalls the others.
//
// It does not speak HTTP or websockets (api/realtime does), read the database
// (an Authorizer does, supplied by the caller), or own the change log or
// the NATS connection (a Source and a Bus, supplied by the caller).
package fanout

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// This file holds the Hub and its lifecycle: New, Run and the change
// dispatcher's reading of the log, Ready, Close.

// Config configures a Hub; zero values mean defaults.
type Config struct {
	// NodeID names this node on the bus (FLUXBASE_NODE_NAME, say); a
	// random suffix is always added, so two nodes given the same name, or
	// a node restarted, never take each other's messages for their own.
	NodeID string
	// QueueFrames and QueueBytes bound each client's queue.
	QueueFrames int
	QueueBytes  int
	// BatchSize bounds how many changes are dispatched together (and so
	// authorized together). Default 256.
	BatchSize int
	// AuthChunk bounds how many claims groups one row-level check asks
	// about. Default 1000.
	AuthChunk int
	// AuthParallel bounds how many row-level checks of a batch run at
	// once. Default 4.
	AuthParallel int
	// AccessTTL is how long a role's table access (its privileges and the
	// rule of its row-level policies) is cached, so a changed grant or
	// policy holds from at most this long after. Default 10 s.
	AccessTTL time.Duration
	// PresenceInterval is how often a node re-announces its presences;
	// a node silent for three intervals has its presences dropped.
	// Default 10 s.
	PresenceInterval time.Duration
	// SubjectPrefix starts the bus subjects; default "fluxbase.realtime.".
	SubjectPrefix string
	// MaxResumeChanges bounds how far back a resume may start: a position
	// more changes than this behind the end of the log is refused (the
	// client reads afresh instead), and a replay reads at most twice as
	// many changes before it gives up. Default 10,000.
	MaxResumeChanges int
	// ResumeParallel bounds the replays running at once on the node;
	// the others wait, not yet live. Default 2.
	ResumeParallel int
	// OnSlowConsumer runs when a client is disconnected for overflowing.
	OnSlowConsumer func()
	// OnChange runs for every change dispatched, with the number of
	// clients it was queued to.
	OnChange func(clients int)
}

// Hub is one node's fan-out hub. Create it with New, run it with Run,
// release it with Close.
type Hub struct {
	cfg    Config
	log    *zap.Logger
	source Source
	bus    Bus
	authz  Authorizer

	ctx    context.Context // ends at Close; parent of replays
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the hub starts

	// mu guards the index, the topics and their presence state, and every
	// Channel's membership in them. Dispatch holds it for reading while it
	// matches; joins, leaves and presence changes hold it for writing. It
	// is never held while calling the Authorizer, the Bus or the Source.
	mu      sync.RWMutex
	tables  map[tableKey]*tableIndex
	topics  map[topicKey]*topicState
	clients map[*Client]struct{}
	closed  bool // set by Close: no new clients

	// seqMu is held by the change dispatcher for the whole of one batch,
	// and by a resuming channel while it switches from replay to live, so
	// the switch happens between two batches: no change is missed or
	// delivered twice. lastSeq is the last sequence dispatched.
	seqMu   sync.Mutex
	lastSeq uint64
	epoch   uint64 // marks the channels of one grouping; guarded by seqMu

	// live is set once the dispatcher has fixed where it reads the log
	// from: every change stored after that reaches the bindings.
	live atomic.Bool

	accessMu sync.Mutex // guards access
	access   map[accessKey]accessEntry

	// presMu orders this node's presence messages on the bus: it is held
	// from a change of the local presences (or a snapshot of them) until
	// its message is published, so a full state announced never overtakes
	// a diff made after its snapshot. Taken before mu, never inside it.
	presMu sync.Mutex

	// subMu guards subs, the bus subscriptions by topic with the number
	// of local channels that need each. It is held across Bus.Subscribe
	// and never together with mu.
	subMu sync.Mutex
	subs  map[topicKey]*topicSub

	// reapMu guards reap, the clients to disconnect for overflowing; the
	// reaper goroutine closes them, since an overflow is detected where
	// locks are held that closing takes.
	reapMu sync.Mutex
	reap   []*Client
	reapCh chan struct{} // capacity 1: wakes the reaper

	// replaySlots holds a token for each replay running (ResumeParallel).
	replaySlots chan struct{}

	nextID    atomic.Uint64
	closeOnce sync.Once
}

// New returns a hub reading changes from source and routing broadcast and
// presence over bus. authz may be nil.
func New(cfg Config, source Source, bus Bus, authz Authorizer, log *zap.Logger) *Hub {
	var rb [6]byte
	_, _ = rand.Read(rb[:])
	if cfg.NodeID == "" {
		cfg.NodeID = "node"
	}
	if len(cfg.NodeID) > 64 { // it travels with a one-byte length
		cfg.NodeID = cfg.NodeID[:64]
	}
	cfg.NodeID += "-" + hex.EncodeToString(rb[:])
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 256
	}
	if cfg.AuthChunk <= 0 {
		cfg.AuthChunk = 1000
	}
	if cfg.AuthParallel <= 0 {
		cfg.AuthParallel = 4
	}
	if cfg.AccessTTL <= 0 {
		cfg.AccessTTL = 10 * time.Second
	}
	if cfg.PresenceInterval <= 0 {
		cfg.PresenceInterval = 10 * time.Second
	}
	if cfg.SubjectPrefix == "" {
		cfg.SubjectPrefix = "fluxbase.realtime."
	}
	if cfg.MaxResumeChanges <= 0 {
		cfg.MaxResumeChanges = 10000
	}
	if cfg.ResumeParallel <= 0 {
		cfg.ResumeParallel = 2
	}
	if log == nil {
		log = zap.NewNop()
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &Hub{
		cfg: cfg, log: log, source: source, bus: bus, authz: authz,
		ctx: ctx, cancel: cancel,
		tables:  map[tableKey]*tableIndex{},
		topics:  map[topicKey]*topicState{},
		clients: map[*Client]struct{}{},
		access:  map[accessKey]accessEntry{},
		subs:    map[topicKey]*topicSub{},
		reapCh:  make(chan struct{}, 1),

		replaySlots: make(chan struct{}, cfg.ResumeParallel),
	}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		h.reaper()
	}()
	return h
}

// reaper disconnects the clients that overflowed, until Close.
func (h *Hub) reaper() {
	for {
		select {
		case <-h.ctx.Done():
			return
		case <-h.reapCh:
		}
		h.reapMu.Lock()
		batch := h.reap
		h.reap = nil
		h.reapMu.Unlock()
		for _, c := range batch {
			c.Close(SlowConsumerReason)
		}
	}
}

// ErrNotLive is Ready's answer while the dispatcher does not yet know
// where it reads the change log from.
var ErrNotLive = errors.New("change log not read yet")

// Ready reports whether a binding made now receives every change stored
// from now on: the dispatcher reads the log (or the hub has none).
func (h *Hub) Ready() error {
	if h.source == nil || h.live.Load() {
		return nil
	}
	return ErrNotLive
}

// NodeID is the hub's name on the bus: Config.NodeID and a random
// suffix.
func (h *Hub) NodeID() string { return h.cfg.NodeID }

// Run reads the change log from now on and dispatches it, and keeps the
// cluster's presence fresh, until ctx ends or Close is called; then it
// returns nil. A failing log is retried, not returned.
func (h *Hub) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-h.ctx.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	h.wg.Add(1)
	defer h.wg.Done()

	var pwg sync.WaitGroup
	pwg.Add(1)
	go func() {
		defer pwg.Done()
		h.presenceLoop(ctx)
	}()
	defer pwg.Wait()
	if h.source == nil {
		<-ctx.Done()
		return nil
	}
	return h.consume(ctx)
}

// consume is the change dispatcher: a reader goroutine feeds msgs, and
// this loop dispatches whatever has gathered, up to BatchSize at a time.
// What arrives while a batch is being authorized makes the next batch, so
// the authorization cost follows the number of batches, not of changes.
// The reader resumes after the last sequence it passed on when the log
// fails, so a broken connection costs latency, not changes.
func (h *Hub) consume(ctx context.Context) error {
	msgs := make(chan Msg, h.cfg.BatchSize)
	var rwg sync.WaitGroup
	rwg.Add(1)
	go func() {
		defer rwg.Done()
		defer close(msgs)
		// Read from the sequence after the log's last message, fixed
		// once: a consumer that takes a while to exist (a cluster still
		// forming) or fails and is re-created misses nothing stored
		// after this point.
		var next uint64
		for next == 0 {
			_, last, err := h.source.Bounds(ctx)
			if err == nil {
				next = last + 1
				h.live.Store(true)
				break
			}
			h.log.Warn("change log not readable yet; retrying", zap.Error(err))
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
		for {
			err := h.source.Consume(ctx, next, func(m Msg) error {
				select {
				case msgs <- m:
					next = m.Seq + 1
					return nil
				case <-ctx.Done():
					return ErrStop
				}
			})
			if ctx.Err() != nil {
				return
			}
			h.log.Warn("change log consumer ended; resuming", zap.Uint64("next", next), zap.Error(err))
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}()
	defer rwg.Wait()
	batch := make([]Msg, 0, h.cfg.BatchSize)
	for {
		m, ok := <-msgs
		if !ok {
			return nil
		}
		batch = append(batch[:0], m)
	drain:
		for len(batch) < h.cfg.BatchSize {
			select {
			case m, ok := <-msgs:
				if !ok {
					break drain
				}
				batch = append(batch, m)
			default:
				break drain
			}
		}
		h.Dispatch(ctx, batch)
	}
}

// Close stops the hub: replays end, every client is closed, and Close
// waits for the hub's goroutines. Idempotent.
func (h *Hub) Close() error {
	h.closeOnce.Do(func() {
		h.cancel()
		h.mu.Lock()
		h.closed = true
		clients := make([]*Client, 0, len(h.clients))
		for c := range h.clients {
			clients = append(clients, c)
		}
		h.mu.Unlock()
		for _, c := range clients {
			c.Close("server shutting down")
		}
		h.wg.Wait()
	})
	return nil
}
