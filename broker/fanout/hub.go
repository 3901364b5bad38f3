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
// subscriber or group), encoded once per distinct payload and queued to
// each matching client. A client whose queue overflows is
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
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/bits"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/fluxbase/fluxbase/replication"
)

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
	// AccessTTL is how long a role's table access is cached. Default 10 s.
	AccessTTL time.Duration
	// PresenceInterval is how often a node re-announces its presences;
	// a node silent for three intervals has its presences dropped.
	// Default 10 s.
	PresenceInterval time.Duration
	// SubjectPrefix starts the bus subjects; default "fluxbase.realtime.".
	SubjectPrefix string
	// OnSlowConsumer runs when a client is disconnected for overflowing.
	OnSlowConsumer func()
	// OnChange runs for every change dispatched, with the number of
	// clients it was queued to.
	OnChange func(clients int)
}

// Access is what a role may read of a table.
type Access struct {
	// Columns the role may SELECT; empty means the table is not readable.
	Columns map[string]bool
	// RLS is whether row-level security filters the role's reads.
	RLS bool
}

// Authorizer answers the hub's authorization questions, normally from the
// database. A nil Authorizer lets every subscriber read everything.
type Authorizer interface {
	// Access returns what role may read of schema.table.
	Access(ctx context.Context, role, schema, table string) (*Access, error)
	// VisibleMany reports, for each of claims and each primary key (a
	// JSON object of the key columns), whether a SELECT on schema.table as
	// role with those claims returns that row: the answer for claims[c]
	// and keys[k] is [c][k].
	VisibleMany(ctx context.Context, role string, claims []json.RawMessage, schema, table string, keys []json.RawMessage) ([][]bool, error)
}

// Auth is the identity a channel reads as.
type Auth struct {
	Role   string
	Claims json.RawMessage
	// Bypass skips every check (the service role).
	Bypass bool

	k string // key, made once when a channel takes the Auth on
}

// key groups channels that may read the same rows: those with the same
// role and claims. The whole claims are the key, not a digest of them,
// so two users can never share answers by a collision.
func (a *Auth) key() string {
	if a.k == "" {
		return a.makeKey()
	}
	return a.k
}

func (a *Auth) makeKey() string { return a.Role + "\x00" + string(a.Claims) }

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

	nextID    atomic.Uint64
	closeOnce sync.Once
}

type tableKey struct{ schema, table string }

type accessKey struct{ role, schema, table string }

type accessEntry struct {
	a       *Access
	err     error
	expires time.Time
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

// Client is one connection's side of the hub: its queue and channels.
type Client struct {
	hub   *Hub
	Queue *Queue
	Vsn   Vsn

	mu       sync.Mutex // guards channels and closed
	channels map[string]*Channel
	closed   bool
}

// NewClient registers a connection speaking vsn.
func (h *Hub) NewClient(vsn Vsn) *Client {
	c := &Client{hub: h, Vsn: vsn, channels: map[string]*Channel{}}
	c.Queue = NewQueue(h.cfg.QueueFrames, h.cfg.QueueBytes, func() {
		if h.cfg.OnSlowConsumer != nil {
			h.cfg.OnSlowConsumer()
		}
		// Leave the hub now, not when the connection notices: the
		// dispatcher must stop matching a client that gets nothing.
		h.reapMu.Lock()
		h.reap = append(h.reap, c)
		h.reapMu.Unlock()
		select {
		case h.reapCh <- struct{}{}:
		default:
		}
	})
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		c.Queue.Close("server shutting down")
		c.closed = true
		return c
	}
	h.clients[c] = struct{}{}
	h.mu.Unlock()
	return c
}

// Clients is the number of open clients.
func (h *Hub) Clients() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.clients)
}

// Channels is the number of joined channels.
func (h *Hub) Channels() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	n := 0
	for _, ts := range h.topics {
		n += len(ts.channels)
	}
	return n
}

// Close leaves every channel and closes the queue with reason.
// Idempotent.
func (c *Client) Close(reason string) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	chans := make([]*Channel, 0, len(c.channels))
	for _, ch := range c.channels {
		chans = append(chans, ch)
	}
	c.channels = map[string]*Channel{}
	c.mu.Unlock()
	for _, ch := range chans {
		ch.leave()
	}
	c.Queue.Close(reason)
	c.hub.mu.Lock()
	delete(c.hub.clients, c)
	c.hub.mu.Unlock()
}

// Channel returns the joined channel on topic, or nil.
func (c *Client) Channel(topic string) *Channel {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.channels[topic]
}

// Push queues a frame for the client.
func (c *Client) Push(f Frame) bool { return c.Queue.Push(f) }

// Binding is one postgres_changes subscription of a channel.
type Binding struct {
	ID     uint32
	Event  string // "*", "INSERT", "UPDATE" or "DELETE"
	Schema string // "*" or "" means every schema
	Table  string // "*" or "" means every table of Schema
	Filter Filter
}

// BindingID is the id of a binding: a hash of what it subscribes to, so
// every channel with the same binding gets the same id and the frames of a
// change can be shared between them.
func BindingID(event, schema, table, filter string) uint32 {
	h := fnv.New32a()
	for _, s := range []string{event, schema, table, filter} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	id := h.Sum32() & 0x7fffffff
	if id == 0 {
		id = 1
	}
	return id
}

// JoinSpec is what a channel subscribes to.
type JoinSpec struct {
	Topic   string // the full topic, "realtime:<name>"
	Private bool
	JoinRef Ref
	Auth    Auth
	// Changes are the postgres_changes bindings.
	Changes []Binding
	// Self delivers the channel's own broadcasts back to it.
	Self bool
	// ReadBroadcast and ReadPresence gate what a private channel receives;
	// public channels receive both.
	ReadBroadcast, ReadPresence bool
	// Presence enables presence_state and presence_diff; PresenceKey is
	// this channel's key (a random one when empty).
	Presence    bool
	PresenceKey string
	// Replies are queued to the client once the channel is live, before
	// anything else of the channel (the join reply, say).
	Replies []Frame
	// Resume, when non-zero, replays the log after this sequence before
	// going live.
	Resume uint64
	// OnResumeError reports a replay that failed; the channel stays
	// joined but is not live.
	OnResumeError func(error)
}

// Channel is a joined channel of one client.
type Channel struct {
	hub    *Hub
	client *Client
	id     uint64
	spec   JoinSpec
	topic  topicKey
	binds  []*binding

	auth atomic.Pointer[Auth]

	// liveFrom is the first sequence the dispatcher delivers to this
	// channel; MaxUint64 while it replays. Guarded by hub.seqMu.
	liveFrom uint64

	// scratchEpoch and scratchIdx let the dispatcher group a change's
	// bindings by channel without a map; guarded by hub.seqMu.
	scratchEpoch uint64
	scratchIdx   int

	closed   atomic.Bool
	cancel   context.CancelFunc // ends a replay
	presence string             // this channel's presence key
}

// ErrClosed is returned for operations on a closed client or channel.
var ErrClosed = errors.New("realtime client closed")

// Join subscribes the client to a channel. Its bindings are live when Join
// returns (or replaying, with Resume), so a join reply sent afterwards
// never precedes a change the client should have had. A join on a topic
// the client already joined replaces that channel.
func (c *Client) Join(spec JoinSpec) (*Channel, error) {
	h := c.hub
	if old := c.Channel(spec.Topic); old != nil {
		c.Leave(spec.Topic)
	}
	auth := spec.Auth
	auth.k = auth.makeKey()
	ch := &Channel{hub: h, client: c, id: h.nextID.Add(1), spec: spec,
		topic: topicKey{name: spec.Topic, private: spec.Private}}
	ch.auth.Store(&auth)
	ch.presence = spec.PresenceKey
	if ch.presence == "" {
		var b [16]byte
		_, _ = rand.Read(b[:])
		ch.presence = fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
	}
	for i := range spec.Changes {
		b := &spec.Changes[i]
		ch.binds = append(ch.binds, &binding{ch: ch, Binding: *b, eqCol: b.Filter.eqIndexCond()})
	}

	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	c.channels[spec.Topic] = ch
	c.mu.Unlock()

	h.seqMu.Lock()
	if spec.Resume > 0 {
		ch.liveFrom = math.MaxUint64
	} else {
		ch.liveFrom = h.lastSeq + 1
	}
	h.seqMu.Unlock()

	// Subscribe to the topic on the bus before the channel is live (and
	// its join reply queued), so a broadcast sent after the reply reaches
	// it.
	h.retainTopic(ch.topic)
	isNew, err := h.addChannel(ch)
	if err != nil {
		c.Leave(spec.Topic)
		return nil, err
	}
	if isNew {
		// Ask the other nodes for their presences on the topic.
		h.publishPresenceMsg(ch.topic, presenceMsg{Node: h.cfg.NodeID, Type: "sync"})
	}
	if spec.Resume > 0 {
		ctx, cancel := context.WithCancel(h.ctx)
		ch.cancel = cancel
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			defer cancel()
			if err := h.replay(ctx, ch, spec.Resume); err != nil && ctx.Err() == nil && spec.OnResumeError != nil {
				spec.OnResumeError(err)
			}
		}()
	}
	return ch, nil
}

// Leave leaves the channel on topic, if joined.
func (c *Client) Leave(topic string) {
	c.mu.Lock()
	ch := c.channels[topic]
	delete(c.channels, topic)
	c.mu.Unlock()
	if ch != nil {
		ch.leave()
	}
}

// LeaveChannel leaves ch if it is still the client's channel on its topic.
func (c *Client) LeaveChannel(ch *Channel) {
	c.mu.Lock()
	if c.channels[ch.spec.Topic] == ch {
		delete(c.channels, ch.spec.Topic)
	}
	c.mu.Unlock()
	ch.leave()
}

func (ch *Channel) leave() {
	if ch.closed.Swap(true) {
		return
	}
	if ch.cancel != nil {
		ch.cancel()
	}
	h := ch.hub
	h.presMu.Lock()
	diff := h.removeChannel(ch)
	if diff != nil {
		h.publishPresence(ch.topic, diff)
	}
	h.presMu.Unlock()
	h.releaseTopic(ch.topic)
}

// Topic is the channel's topic.
func (ch *Channel) Topic() string { return ch.spec.Topic }

// JoinRef is the join_ref the channel was joined with.
func (ch *Channel) JoinRef() Ref { return ch.spec.JoinRef }

// Spec is what the channel was joined with.
func (ch *Channel) Spec() JoinSpec { return ch.spec }

// SetAuth changes the identity the channel reads as, from the next
// change on.
func (ch *Channel) SetAuth(a Auth) {
	a.k = a.makeKey()
	ch.auth.Store(&a)
}

// Closed reports whether the channel left.
func (ch *Channel) Closed() bool { return ch.closed.Load() }

// binding is a Binding in the index.
type binding struct {
	Binding
	ch    *Channel
	eqCol int // the filter condition the index keys on, or -1
}

func (b *binding) matchesEvent(ev string) bool { return b.Event == "*" || b.Event == ev }

// tableIndex holds the bindings of one schema.table (or schema-wide, or
// everything) by event.
type tableIndex struct {
	events map[string]*eventIndex // "INSERT", "UPDATE", "DELETE"
	n      int
}

// eventIndex files bindings by the column and canonical value of an eq
// condition; those without one are scanned.
type eventIndex struct {
	scan map[*binding]struct{}
	eq   map[string]map[string]map[*binding]struct{}
}

var allEvents = []string{"INSERT", "UPDATE", "DELETE"}

func normName(s string) string {
	if s == "*" {
		return ""
	}
	return s
}

// addBinding files b; h.mu must be held for writing.
func (h *Hub) addBinding(b *binding) {
	k := tableKey{normName(b.Schema), normName(b.Table)}
	ti := h.tables[k]
	if ti == nil {
		ti = &tableIndex{events: map[string]*eventIndex{}}
		h.tables[k] = ti
	}
	ti.n++
	for _, ev := range allEvents {
		if !b.matchesEvent(ev) {
			continue
		}
		ei := ti.events[ev]
		if ei == nil {
			ei = &eventIndex{scan: map[*binding]struct{}{}, eq: map[string]map[string]map[*binding]struct{}{}}
			ti.events[ev] = ei
		}
		if b.eqCol < 0 {
			ei.scan[b] = struct{}{}
			continue
		}
		c := b.Filter[b.eqCol]
		byVal := ei.eq[c.Column]
		if byVal == nil {
			byVal = map[string]map[*binding]struct{}{}
			ei.eq[c.Column] = byVal
		}
		key := canonKey(c.value)
		set := byVal[key]
		if set == nil {
			set = map[*binding]struct{}{}
			byVal[key] = set
		}
		set[b] = struct{}{}
	}
}

// removeBinding undoes addBinding; h.mu must be held for writing.
func (h *Hub) removeBinding(b *binding) {
	k := tableKey{normName(b.Schema), normName(b.Table)}
	ti := h.tables[k]
	if ti == nil {
		return
	}
	for _, ev := range allEvents {
		ei := ti.events[ev]
		if ei == nil || !b.matchesEvent(ev) {
			continue
		}
		if b.eqCol < 0 {
			delete(ei.scan, b)
			continue
		}
		c := b.Filter[b.eqCol]
		key := canonKey(c.value)
		if set := ei.eq[c.Column][key]; set != nil {
			delete(set, b)
			if len(set) == 0 {
				delete(ei.eq[c.Column], key)
				if len(ei.eq[c.Column]) == 0 {
					delete(ei.eq, c.Column)
				}
			}
		}
	}
	if ti.n--; ti.n == 0 {
		delete(h.tables, k)
	}
}

// match appends to out the bindings that c satisfies; h.mu must be held.
func (h *Hub) match(c *Change, ev string, out []*binding) []*binding {
	look := c.lookup
	for _, k := range [...]tableKey{{c.Schema, c.Table}, {c.Schema, ""}, {"", ""}} {
		ti := h.tables[k]
		if ti == nil {
			continue
		}
		ei := ti.events[ev]
		if ei == nil {
			continue
		}
		for b := range ei.scan {
			if b.Filter.Match(look) {
				out = append(out, b)
			}
		}
		for col, byVal := range ei.eq {
			v, ok := look(col)
			if !ok {
				continue
			}
			raw := v.Raw
			if len(raw) == 0 || string(raw) == "null" {
				continue
			}
			for b := range byVal[canonKey(v.text())] {
				if b.Filter.Match(look) {
					out = append(out, b)
				}
			}
		}
		if k.table == "" && k.schema == "" {
			break
		}
	}
	return out
}

// delivery is one change bound for one channel, with the binding ids it
// matched.
type delivery struct {
	ch  *Channel
	ids []uint32
}

// Dispatch delivers a batch of change messages to the matching channels.
// The dispatcher calls it; tests and benchmarks may call it directly, but
// not concurrently with a running dispatcher.
func (h *Hub) Dispatch(ctx context.Context, msgs []Msg) {
	h.seqMu.Lock()
	defer h.seqMu.Unlock()
	changes := make([]*Change, 0, len(msgs))
	for _, m := range msgs {
		if m.Seq > h.lastSeq {
			h.lastSeq = m.Seq
		}
		if !h.wants(m.Subject) {
			continue // nobody here follows its table: not even decoded
		}
		c, err := DecodeChange(m.Seq, m.Data)
		if err != nil {
			h.log.Warn("skipping an undecodable change", zap.Uint64("seq", m.Seq), zap.Error(err))
			continue
		}
		if c.event() == "" {
			continue
		}
		changes = append(changes, c)
	}
	if len(changes) == 0 {
		return
	}
	perChange := make([][]delivery, len(changes))
	var scratch []*binding
	h.mu.RLock()
	for i, c := range changes {
		scratch = h.match(c, c.event(), scratch[:0])
		perChange[i] = h.groupDeliveries(scratch, c.Seq)
	}
	h.mu.RUnlock()
	h.deliver(ctx, changes, perChange)
}

// wants reports whether a change on subject may match a binding of this
// hub: one on its table, on every table of its schema, or on everything.
// An empty or unparsable subject is wanted (decoded and matched).
func (h *Hub) wants(subject string) bool {
	if subject == "" {
		return true
	}
	schema, table, _, ok := replication.ParseChangeSubject(subject)
	if !ok {
		return true
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, k := range [...]tableKey{{schema, table}, {schema, ""}, {"", ""}} {
		if h.tables[k] != nil {
			return true
		}
	}
	return false
}

// groupDeliveries turns matched bindings into one delivery per channel,
// each with its sorted, distinct binding ids. Only the dispatcher calls
// it (under seqMu), which makes the channels' scratch fields safe.
func (h *Hub) groupDeliveries(bs []*binding, seq uint64) []delivery {
	if len(bs) == 0 {
		return nil
	}
	h.epoch++
	out := make([]delivery, 0, len(bs))
	idBuf := make([]uint32, len(bs)) // one id each, sliced with no spare capacity
	multi := false
	for _, b := range bs {
		ch := b.ch
		if ch.closed.Load() || ch.liveFrom > seq {
			continue
		}
		if ch.scratchEpoch == h.epoch {
			d := &out[ch.scratchIdx]
			d.ids = append(d.ids, b.ID)
			multi = true
			continue
		}
		ch.scratchEpoch, ch.scratchIdx = h.epoch, len(out)
		k := len(out)
		idBuf[k] = b.ID
		out = append(out, delivery{ch: ch, ids: idBuf[k : k+1 : k+1]})
	}
	if multi {
		for i := range out {
			out[i].ids = sortedIDs(out[i].ids)
		}
	}
	return out
}

func sortedIDs(ids []uint32) []uint32 {
	if len(ids) < 2 {
		return ids
	}
	sort.Slice(ids, func(a, b int) bool { return ids[a] < ids[b] })
	j := 1
	for k := 1; k < len(ids); k++ {
		if ids[k] != ids[j-1] {
			ids[j] = ids[k]
			j++
		}
	}
	return ids[:j]
}

// authGroup is the channels of one claims group reading one table in a
// batch: the changes that need a row-level check and their answers.
type authGroup struct {
	auth    *Auth
	access  *Access
	schema  string
	table   string
	changes []int  // ascending indexes into the batch needing a row check
	visible []bool // the answers, by position in changes; nil if unknown
}

// sees reports whether the row check let the group see change i.
func (g *authGroup) sees(i int) bool {
	n := sort.SearchInts(g.changes, i)
	return n < len(g.changes) && g.changes[n] == i && n < len(g.visible) && g.visible[n]
}

// deliver authorizes, encodes and queues the deliveries of a batch.
func (h *Hub) deliver(ctx context.Context, changes []*Change, perChange [][]delivery) {
	type gk struct {
		auth          string
		schema, table string
	}
	groups := map[gk]*authGroup{}
	var order []*authGroup // groups in the order they were made
	// verdicts[i][j] is how delivery j of change i may be seen.
	type verdict struct {
		g     *authGroup
		allow bool
	}
	verdicts := make([][]verdict, len(changes))
	for i, c := range changes {
		ds := perChange[i]
		verdicts[i] = make([]verdict, len(ds))
		for j, d := range ds {
			a := d.ch.auth.Load()
			if a.Bypass || h.authz == nil {
				verdicts[i][j] = verdict{allow: true}
				continue
			}
			k := gk{a.key(), c.Schema, c.Table}
			g := groups[k]
			if g == nil {
				acc, err := h.tableAccess(ctx, a.Role, c.Schema, c.Table)
				if err != nil {
					h.log.Warn("table access check failed; not delivering", zap.String("table", c.Schema+"."+c.Table), zap.String("role", a.Role), zap.Error(err))
				}
				g = &authGroup{auth: a, access: acc, schema: c.Schema, table: c.Table}
				groups[k] = g
				order = append(order, g)
			}
			verdicts[i][j] = verdict{g: g}
			if g.access == nil || len(g.access.Columns) == 0 {
				continue
			}
			if g.access.RLS && c.event() != "DELETE" {
				if len(g.changes) == 0 || g.changes[len(g.changes)-1] != i {
					g.changes = append(g.changes, i)
				}
			} else {
				verdicts[i][j].allow = true
			}
		}
	}
	h.checkRows(ctx, changes, order)
	for i, c := range changes {
		enc := newChangeEncoder(c)
		n := 0
		for j, d := range perChange[i] {
			v := verdicts[i][j]
			allow := v.allow
			var acc *Access
			if v.g != nil {
				acc = v.g.access
				if !allow {
					allow = v.g.sees(i)
				}
			}
			if !allow {
				continue
			}
			rlsDelete := acc != nil && acc.RLS && c.event() == "DELETE"
			f := enc.frame(d.ch.client.Vsn, d.ch.spec.Topic, d.ids, acc, rlsDelete)
			if d.ch.client.Push(f) {
				n++
			}
		}
		if h.cfg.OnChange != nil {
			h.cfg.OnChange(n)
		}
	}
}

// rowCheck is one VisibleMany call: claims groups of one role that need
// the same changes of one table checked.
type rowCheck struct {
	role, schema, table string
	keys                []json.RawMessage
	groups              []*authGroup
}

// checkRows answers the row-level checks of a batch: the groups of one
// role that need the same changes of one table checked are asked about
// together, AuthChunk groups a call, with up to AuthParallel calls at
// once. It returns when every answer is in.
func (h *Hub) checkRows(ctx context.Context, changes []*Change, groups []*authGroup) {
	type setKey struct{ role, schema, table, changes string }
	sets := map[setKey]*rowCheck{}
	var order []*rowCheck
	var buf []byte
	for _, g := range groups {
		if len(g.changes) == 0 {
			continue
		}
		buf = buf[:0]
		for _, i := range g.changes {
			buf = strconv.AppendInt(append(buf, ','), int64(i), 10)
		}
		k := setKey{g.auth.Role, g.schema, g.table, string(buf)}
		rc := sets[k]
		if rc == nil {
			rc = &rowCheck{role: g.auth.Role, schema: g.schema, table: g.table, keys: make([]json.RawMessage, len(g.changes))}
			for n, i := range g.changes {
				rc.keys[n] = changes[i].PK.AppendObject(nil, nil)
			}
			sets[k] = rc
			order = append(order, rc)
		}
		rc.groups = append(rc.groups, g)
	}
	var calls []rowCheck
	for _, rc := range order {
		for lo := 0; lo < len(rc.groups); lo += h.cfg.AuthChunk {
			c := *rc
			c.groups = rc.groups[lo:min(lo+h.cfg.AuthChunk, len(rc.groups))]
			calls = append(calls, c)
		}
	}
	if len(calls) == 1 {
		h.checkChunk(ctx, calls[0], splitBudget(len(calls[0].groups)))
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(h.cfg.AuthParallel, len(calls)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n := int(next.Add(1)) - 1
				if n >= len(calls) {
					return
				}
				h.checkChunk(ctx, calls[n], splitBudget(len(calls[n].groups)))
			}
		}()
	}
	wg.Wait()
}

// splitBudget is how many times a failing check of n groups may be split:
// enough to single out a couple of groups whose claims make the policy
// fail, few enough that a policy failing for everyone costs a few dozen
// calls, not one per group.
func splitBudget(n int) int { return 2 * bits.Len(uint(n)) }

// checkChunk makes one VisibleMany call and files its answers in the
// groups. A call that fails is split in halves and each retried, while
// the budget lasts, so one group whose claims make the policy fail (a sub
// that is not a uuid, say) does not cost the others their changes; the
// groups left without an answer see nothing.
func (h *Hub) checkChunk(ctx context.Context, c rowCheck, budget int) int {
	claims := make([]json.RawMessage, len(c.groups))
	for n, g := range c.groups {
		claims[n] = g.auth.Claims
	}
	vis, err := h.authz.VisibleMany(ctx, c.role, claims, c.schema, c.table, c.keys)
	if err == nil && len(vis) != len(claims) {
		err = fmt.Errorf("%d answers for %d claims", len(vis), len(claims))
	}
	if err == nil {
		for n, g := range c.groups {
			g.visible = vis[n]
		}
		return budget
	}
	if len(c.groups) > 1 && budget > 0 && ctx.Err() == nil {
		half := len(c.groups) / 2
		a, b := c, c
		a.groups, b.groups = c.groups[:half], c.groups[half:]
		budget = h.checkChunk(ctx, a, budget-1)
		return h.checkChunk(ctx, b, budget)
	}
	h.log.Warn("row-level check failed; not delivering", zap.String("table", c.schema+"."+c.table),
		zap.String("role", c.role), zap.Int("claims_groups", len(c.groups)), zap.Error(err))
	return budget
}

func (h *Hub) tableAccess(ctx context.Context, role, schema, table string) (*Access, error) {
	k := accessKey{role, schema, table}
	now := time.Now()
	h.accessMu.Lock()
	e, ok := h.access[k]
	h.accessMu.Unlock()
	if ok && now.Before(e.expires) {
		return e.a, e.err
	}
	a, err := h.authz.Access(ctx, role, schema, table)
	ttl := h.cfg.AccessTTL
	if err != nil {
		ttl = time.Second // retry soon
	}
	h.accessMu.Lock()
	h.access[k] = accessEntry{a: a, err: err, expires: now.Add(ttl)}
	h.accessMu.Unlock()
	return a, err
}

// InvalidateAccess drops every cached table access, so grants and
// revokes take effect at once.
func (h *Hub) InvalidateAccess() {
	h.accessMu.Lock()
	clear(h.access)
	h.accessMu.Unlock()
}

// changeEncoder encodes one change's postgres_changes frames, each
// distinct payload once: data objects by the column set the reader may
// see, payloads by binding ids, and frame heads by serializer and topic.
type changeEncoder struct {
	c        *Change
	last     frameKey // the frame built or found last, often asked again
	lastF    Frame
	hasLast  bool
	data     map[dataKey][]byte
	payloads map[payloadKey][]byte
	frames   map[frameKey]Frame
	idsBuf   []byte
}

type dataKey struct {
	acc       *Access
	rlsDelete bool
}

// payloadKey names a payload: one binding id (the common case, no
// allocation) or several, written out.
type payloadKey struct {
	id   uint32
	ids  string
	data dataKey
}

type frameKey struct {
	vsn   Vsn
	topic string
	p     payloadKey
}

func newChangeEncoder(c *Change) *changeEncoder {
	return &changeEncoder{c: c, data: map[dataKey][]byte{}, payloads: map[payloadKey][]byte{}, frames: map[frameKey]Frame{}}
}

func (e *changeEncoder) frame(vsn Vsn, topic string, ids []uint32, acc *Access, rlsDelete bool) Frame {
	pk := payloadKey{data: dataKey{acc, rlsDelete}}
	if len(ids) == 1 {
		pk.id = ids[0]
	} else {
		e.idsBuf = e.idsBuf[:0]
		for i, id := range ids {
			if i > 0 {
				e.idsBuf = append(e.idsBuf, ',')
			}
			e.idsBuf = strconv.AppendUint(e.idsBuf, uint64(id), 10)
		}
		pk.ids = string(e.idsBuf)
	}
	fk := frameKey{vsn, topic, pk}
	if e.hasLast && e.last == fk {
		return e.lastF
	}
	if f, ok := e.frames[fk]; ok {
		e.last, e.lastF = fk, f
		return f
	}
	p, ok := e.payloads[pk]
	if !ok {
		data, ok := e.data[pk.data]
		if !ok {
			data = e.encodeData(acc, rlsDelete)
			e.data[pk.data] = data
		}
		p = make([]byte, 0, len(data)+32)
		p = append(p, `{"ids":[`...)
		for i, id := range ids {
			if i > 0 {
				p = append(p, ',')
			}
			p = strconv.AppendUint(p, uint64(id), 10)
		}
		p = append(p, `],"data":`...)
		p = append(p, data...)
		p = append(p, '}')
		e.payloads[pk] = p
	}
	f := PushFrame(vsn, topic, "postgres_changes", p)
	// Past a few hundred topics the frames are almost never shared; a
	// bigger map would cost more than the small heads it saves.
	if len(e.frames) < 256 {
		e.frames[fk] = f
	}
	e.last, e.lastF, e.hasLast = fk, f, true
	return f
}

// encodeData writes Supabase's data object. With acc, columns the reader
// may not see are left out; with rlsDelete (a delete from a table under
// row-level security, whose row can no longer be checked) the old record
// carries only the primary key, as Supabase does.
func (e *changeEncoder) encodeData(acc *Access, rlsDelete bool) []byte {
	c := e.c
	var keep map[string]bool
	if acc != nil {
		keep = acc.Columns
	}
	ev := c.event()
	d := make([]byte, 0, 256)
	d = append(d, `{"schema":`...)
	d = AppendString(d, c.Schema)
	d = append(d, `,"table":`...)
	d = AppendString(d, c.Table)
	d = append(d, `,"commit_timestamp":`...)
	d = AppendString(d, c.commitTimestamp())
	d = append(d, `,"type":`...)
	d = AppendString(d, ev)
	d = append(d, `,"columns":[`...)
	first := true
	for _, col := range c.Columns {
		if keep != nil && !keep[col.Name] {
			continue
		}
		if !first {
			d = append(d, ',')
		}
		first = false
		d = append(d, `{"name":`...)
		d = AppendString(d, col.Name)
		d = append(d, `,"type":`...)
		d = AppendString(d, col.Type)
		d = append(d, '}')
	}
	d = append(d, ']')
	if ev == "INSERT" || ev == "UPDATE" {
		d = append(d, `,"record":`...)
		d = c.Record.AppendObject(d, keep)
	}
	if ev == "UPDATE" || ev == "DELETE" {
		d = append(d, `,"old_record":`...)
		old := c.OldRecord
		if rlsDelete || (ev == "DELETE" && old == nil) {
			old = c.PK
		}
		d = old.AppendObject(d, keep)
	}
	d = append(d, `,"errors":null,"log_seq":`...)
	d = appendUint(d, c.Seq)
	return append(d, '}')
}

// replay delivers the log after seq `after` to ch alone, then makes it
// live at the first sequence the dispatcher has not yet dispatched.
func (h *Hub) replay(ctx context.Context, ch *Channel, after uint64) error {
	if h.source == nil {
		return errors.New("no change log to resume from")
	}
	first, last, err := h.source.Bounds(ctx)
	if err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	if last > 0 && first > after+1 {
		return fmt.Errorf("resume position %d is no longer in the change log (the oldest held is %d)", after, first)
	}
	if after > last {
		// Not a position this log ever gave out (a log recreated since,
		// say): going live after it would skip changes until the log
		// caught up.
		return fmt.Errorf("resume position %d is beyond the end of the change log (%d)", after, last)
	}
	// tryLive switches ch to live if everything up to pos has reached it.
	tryLive := func(pos uint64) bool {
		if pos < last {
			return false
		}
		h.seqMu.Lock()
		defer h.seqMu.Unlock()
		if pos < h.lastSeq {
			return false
		}
		ch.liveFrom = pos + 1
		return true
	}
	if tryLive(after) {
		return nil
	}
	var batch []Msg
	pos := after
	flush := func() {
		if len(batch) == 0 {
			return
		}
		h.replayBatch(ctx, ch, batch)
		pos = batch[len(batch)-1].Seq
		batch = batch[:0]
	}
	err = h.source.Consume(ctx, after+1, func(m Msg) error {
		if ch.closed.Load() {
			return ErrStop
		}
		batch = append(batch, m)
		if len(batch) < h.cfg.BatchSize && m.Seq < last {
			return nil
		}
		flush()
		if tryLive(pos) {
			return ErrStop
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	return nil
}

// replayBatch delivers a batch of the log to one resuming channel.
func (h *Hub) replayBatch(ctx context.Context, ch *Channel, msgs []Msg) {
	changes := make([]*Change, 0, len(msgs))
	per := make([][]delivery, 0, len(msgs))
	for _, m := range msgs {
		c, err := DecodeChange(m.Seq, m.Data)
		if err != nil || c.event() == "" {
			continue
		}
		var ids []uint32
		for _, b := range ch.binds {
			if !b.matchesEvent(c.event()) {
				continue
			}
			if s := normName(b.Schema); s != "" && s != c.Schema {
				continue
			}
			if t := normName(b.Table); t != "" && t != c.Table {
				continue
			}
			if b.Filter.Match(c.lookup) {
				ids = append(ids, b.ID)
			}
		}
		if len(ids) == 0 {
			continue
		}
		changes = append(changes, c)
		per = append(per, []delivery{{ch: ch, ids: sortedIDs(ids)}})
	}
	if len(changes) > 0 {
		h.deliver(ctx, changes, per)
	}
}

// LastSeq is the sequence of the last change dispatched.
func (h *Hub) LastSeq() uint64 {
	h.seqMu.Lock()
	defer h.seqMu.Unlock()
	return h.lastSeq
}

func (h *Hub) subject(kind string, k topicKey) string {
	vis := "pub"
	if k.private {
		vis = "priv"
	}
	return h.cfg.SubjectPrefix + kind + "." + vis + "." + escapeToken(k.name)
}

// escapeToken makes a topic a single NATS subject token, reversibly:
// letters, digits, '_' and '-' stay, every other byte becomes %XX.
func escapeToken(s string) string {
	if s == "" {
		return "%"
	}
	var b strings.Builder
	const hexu = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexu[c>>4])
		b.WriteByte(hexu[c&0xf])
	}
	return b.String()
}
