package fanout

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"sync"
	"sync/atomic"
)

// This file holds the clients and their channels: joining and leaving,
// and the postgres_changes bindings a channel subscribes with.

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
	// filtered is set when a binding has a filter, whose columns each
	// delivery checks against what the reader may read.
	filtered bool

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
		nb := &binding{ch: ch, Binding: *b, eqCol: b.Filter.eqIndexCond(), cols: b.Filter.Columns()}
		ch.filtered = ch.filtered || len(nb.cols) > 0
		ch.binds = append(ch.binds, nb)
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
