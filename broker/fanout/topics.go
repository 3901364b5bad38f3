package fanout

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"context"

	"go.uber.org/zap"
)

// This file routes broadcast and presence. Every node subscribes, on the
// bus, to the topics its clients joined: broadcasts travel as one bus
// message each and are delivered by every node to its own clients;
// presence is replicated: each node owns the presences tracked on it,
// publishes their joins and leaves, answers a sync request with its full
// state, re-announces that state every PresenceInterval, and forgets a
// node that stayed silent for three intervals.

// topicKey names a topic; a private channel and a public one of the same
// name are different topics, as in Supabase.
type topicKey struct {
	name    string
	private bool
}

type topicState struct {
	channels map[*Channel]struct{}
	// nodes holds the topic's presences by node, then by phx_ref.
	nodes map[string]*nodePresence
}

type nodePresence struct {
	entries map[string]presEntry
	seen    time.Time
}

type presEntry struct {
	Key  string          `json:"key"`
	Ref  string          `json:"ref"`
	Meta json.RawMessage `json:"meta,omitempty"`
	ch   *Channel        // the local channel that tracked it
}

// presenceMsg is a presence message on the bus.
type presenceMsg struct {
	Node   string      `json:"node"`
	Type   string      `json:"type"` // "diff", "state" or "sync"
	Joins  []presEntry `json:"joins,omitempty"`
	Leaves []presEntry `json:"leaves,omitempty"`
}

// addChannel files ch in the index and its topic and queues its replies
// and presence state. isNew reports a topic new on this node.
func (h *Hub) addChannel(ch *Channel) (isNew bool, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if ch.closed.Load() {
		return false, ErrClosed
	}
	for _, b := range ch.binds {
		h.addBinding(b)
	}
	ts := h.topics[ch.topic]
	isNew = ts == nil
	if isNew {
		ts = &topicState{channels: map[*Channel]struct{}{}, nodes: map[string]*nodePresence{}}
		h.topics[ch.topic] = ts
	}
	ts.channels[ch] = struct{}{}
	for _, f := range ch.spec.Replies {
		ch.client.Push(f)
	}
	if ch.spec.Presence && (!ch.spec.Private || ch.spec.ReadPresence) {
		ch.client.Push(MessageFrame(ch.client.Vsn, ch.spec.JoinRef, Ref{}, ch.spec.Topic, "presence_state", ts.statePayload()))
	}
	return isNew, nil
}

// topicSub is the bus subscription of one topic.
type topicSub struct {
	refs  int
	unsub func()
}

// retainTopic subscribes to k's broadcast and presence subjects unless
// this node already does, and counts one more channel needing them.
func (h *Hub) retainTopic(k topicKey) {
	if h.bus == nil {
		return
	}
	h.subMu.Lock()
	defer h.subMu.Unlock()
	if s := h.subs[k]; s != nil {
		s.refs++
		return
	}
	s := &topicSub{refs: 1}
	h.subs[k] = s
	ub, err := h.bus.Subscribe(h.subject("broadcast", k), func(data []byte) { h.onBroadcast(k, data) })
	if err != nil {
		h.log.Error("subscribe to broadcasts failed", zap.String("topic", k.name), zap.Error(err))
		return
	}
	up, err := h.bus.Subscribe(h.subject("presence", k), func(data []byte) { h.onPresence(k, data) })
	if err != nil {
		ub()
		h.log.Error("subscribe to presence failed", zap.String("topic", k.name), zap.Error(err))
		return
	}
	s.unsub = func() { ub(); up() }
}

// releaseTopic undoes retainTopic.
func (h *Hub) releaseTopic(k topicKey) {
	if h.bus == nil {
		return
	}
	h.subMu.Lock()
	defer h.subMu.Unlock()
	s := h.subs[k]
	if s == nil {
		return
	}
	if s.refs--; s.refs > 0 {
		return
	}
	delete(h.subs, k)
	if s.unsub != nil {
		s.unsub()
	}
}

// removeChannel undoes addChannel. It returns the presence leave to
// publish, if the channel had tracked one.
func (h *Hub) removeChannel(ch *Channel) *presenceMsg {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, b := range ch.binds {
		h.removeBinding(b)
	}
	ts := h.topics[ch.topic]
	if ts == nil {
		return nil
	}
	if _, ok := ts.channels[ch]; !ok {
		return nil
	}
	delete(ts.channels, ch)
	var diff *presenceMsg
	if self := ts.nodes[h.cfg.NodeID]; self != nil {
		var leaves []presEntry
		for ref, e := range self.entries {
			if e.ch == ch {
				leaves = append(leaves, e)
				delete(self.entries, ref)
			}
		}
		if len(leaves) > 0 {
			h.pushPresenceDiff(ts, nil, leaves)
			diff = &presenceMsg{Node: h.cfg.NodeID, Type: "diff", Leaves: leaves}
		}
	}
	if len(ts.channels) == 0 {
		delete(h.topics, ch.topic)
	}
	return diff
}

// Broadcast sends a user broadcast on the channel's topic to every
// subscriber in the cluster (the sender too when it joined with Self).
func (ch *Channel) Broadcast(event string, encoding byte, payload []byte) error {
	if ch.closed.Load() {
		return ErrClosed
	}
	return ch.hub.publishBroadcast(ch.topic, ch.id, event, encoding, payload)
}

// Broadcast sends a user broadcast to a topic ("realtime:<name>") from
// outside any channel, as the HTTP broadcast endpoint does.
func (h *Hub) Broadcast(topic string, private bool, event string, encoding byte, payload []byte) error {
	return h.publishBroadcast(topicKey{topic, private}, 0, event, encoding, payload)
}

// MaxBroadcastEvent bounds an event name; the binary frame carries its
// length in one byte.
const MaxBroadcastEvent = 255

func (h *Hub) publishBroadcast(k topicKey, chanID uint64, event string, encoding byte, payload []byte) error {
	if len(event) > MaxBroadcastEvent {
		return fmt.Errorf("broadcast event name longer than %d bytes", MaxBroadcastEvent)
	}
	if encoding == EncodingJSON && !json.Valid(payload) {
		return errors.New("broadcast payload is not valid JSON")
	}
	b := make([]byte, 0, 16+len(h.cfg.NodeID)+len(event)+len(payload))
	b = append(b, 1, byte(len(h.cfg.NodeID)))
	b = append(b, h.cfg.NodeID...)
	b = binary.AppendUvarint(b, chanID)
	b = append(b, encoding, byte(len(event)))
	b = append(b, event...)
	b = append(b, payload...)
	if h.bus == nil {
		h.onBroadcast(k, b)
		return nil
	}
	if err := h.bus.Publish(h.subject("broadcast", k), b); err != nil {
		return fmt.Errorf("publish broadcast: %w", err)
	}
	return nil
}

func (h *Hub) onBroadcast(k topicKey, b []byte) {
	if len(b) < 2 || b[0] != 1 {
		return
	}
	n := int(b[1])
	if len(b) < 2+n {
		return
	}
	node := string(b[2 : 2+n])
	b = b[2+n:]
	chanID, m := binary.Uvarint(b)
	if m <= 0 || len(b) < m+2 {
		return
	}
	b = b[m:]
	encoding, elen := b[0], int(b[1])
	b = b[2:]
	if len(b) < elen {
		return
	}
	event, payload := string(b[:elen]), b[elen:]
	fromHere := node == h.cfg.NodeID
	var frames [3]*Frame
	h.mu.RLock()
	defer h.mu.RUnlock()
	ts := h.topics[k]
	if ts == nil {
		return
	}
	for ch := range ts.channels {
		if fromHere && chanID != 0 && ch.id == chanID && !ch.spec.Self {
			continue
		}
		if ch.spec.Private && !ch.spec.ReadBroadcast {
			continue
		}
		vsn := ch.client.Vsn
		if frames[vsn] == nil {
			f := BroadcastFrame(vsn, k.name, event, encoding, payload)
			frames[vsn] = &f
		}
		ch.client.Push(*frames[vsn])
	}
}

// ErrPresencePayload refuses a track whose payload is not a JSON object.
var ErrPresencePayload = errors.New("presence track payload must be a JSON object")

// PresenceKey is the key the channel tracks under.
func (ch *Channel) PresenceKey() string { return ch.presence }

// Track publishes meta (a JSON object) as the channel's presence,
// replacing what it tracked before.
func (ch *Channel) Track(meta json.RawMessage) error {
	meta = bytes.TrimSpace(meta)
	if len(meta) == 0 || meta[0] != '{' || !json.Valid(meta) {
		return ErrPresencePayload
	}
	h := ch.hub
	var rb [9]byte
	_, _ = rand.Read(rb[:])
	e := presEntry{Key: ch.presence, Ref: base64.RawURLEncoding.EncodeToString(rb[:]), Meta: meta, ch: ch}
	h.presMu.Lock()
	defer h.presMu.Unlock()
	h.mu.Lock()
	if ch.closed.Load() {
		h.mu.Unlock()
		return ErrClosed
	}
	ts := h.topics[ch.topic]
	if ts == nil {
		h.mu.Unlock()
		return ErrClosed
	}
	self := ts.node(h.cfg.NodeID)
	var leaves []presEntry
	for ref, old := range self.entries {
		if old.ch == ch {
			leaves = append(leaves, old)
			delete(self.entries, ref)
		}
	}
	self.entries[e.Ref] = e
	joins := []presEntry{e}
	h.pushPresenceDiff(ts, joins, leaves)
	h.mu.Unlock()
	h.publishPresence(ch.topic, &presenceMsg{Node: h.cfg.NodeID, Type: "diff", Joins: joins, Leaves: leaves})
	return nil
}

// Untrack removes the channel's presence.
func (ch *Channel) Untrack() error {
	h := ch.hub
	h.presMu.Lock()
	defer h.presMu.Unlock()
	h.mu.Lock()
	ts := h.topics[ch.topic]
	var leaves []presEntry
	if ts != nil {
		if self := ts.nodes[h.cfg.NodeID]; self != nil {
			for ref, old := range self.entries {
				if old.ch == ch {
					leaves = append(leaves, old)
					delete(self.entries, ref)
				}
			}
		}
		if len(leaves) > 0 {
			h.pushPresenceDiff(ts, nil, leaves)
		}
	}
	h.mu.Unlock()
	if len(leaves) > 0 {
		h.publishPresence(ch.topic, &presenceMsg{Node: h.cfg.NodeID, Type: "diff", Leaves: leaves})
	}
	return nil
}

func (ts *topicState) node(id string) *nodePresence {
	np := ts.nodes[id]
	if np == nil {
		np = &nodePresence{entries: map[string]presEntry{}}
		ts.nodes[id] = np
	}
	np.seen = time.Now()
	return np
}

func (h *Hub) publishPresence(k topicKey, m *presenceMsg) {
	if m == nil {
		return
	}
	h.publishPresenceMsg(k, *m)
}

func (h *Hub) publishPresenceMsg(k topicKey, m presenceMsg) {
	if h.bus == nil {
		return
	}
	b, err := json.Marshal(m)
	if err != nil {
		return
	}
	if err := h.bus.Publish(h.subject("presence", k), b); err != nil {
		h.log.Warn("publish presence failed", zap.String("topic", k.name), zap.Error(err))
	}
}

func (h *Hub) onPresence(k topicKey, data []byte) {
	var m presenceMsg
	if err := json.Unmarshal(data, &m); err != nil || m.Node == "" {
		return
	}
	if m.Node == h.cfg.NodeID {
		return // applied when it was made
	}
	if m.Type == "sync" {
		h.announce(k)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	ts := h.topics[k]
	if ts == nil {
		return
	}
	np := ts.node(m.Node)
	var joins, leaves []presEntry
	if m.Type == "state" {
		have := make(map[string]bool, len(m.Joins))
		for _, e := range m.Joins {
			have[e.Ref] = true
		}
		for ref, e := range np.entries {
			if !have[ref] {
				leaves = append(leaves, e)
				delete(np.entries, ref)
			}
		}
	}
	for _, e := range m.Leaves {
		if old, ok := np.entries[e.Ref]; ok {
			leaves = append(leaves, old)
			delete(np.entries, e.Ref)
		}
	}
	for _, e := range m.Joins {
		if _, ok := np.entries[e.Ref]; ok {
			continue
		}
		np.entries[e.Ref] = e
		joins = append(joins, e)
	}
	if len(np.entries) == 0 {
		delete(ts.nodes, m.Node)
	}
	if len(joins)+len(leaves) > 0 {
		h.pushPresenceDiff(ts, joins, leaves)
	}
}

// announce publishes this node's full presence state for k.
func (h *Hub) announce(k topicKey) {
	h.presMu.Lock()
	defer h.presMu.Unlock()
	h.mu.RLock()
	ts := h.topics[k]
	var entries []presEntry
	if ts != nil {
		if self := ts.nodes[h.cfg.NodeID]; self != nil {
			for _, e := range self.entries {
				entries = append(entries, e)
			}
		}
	}
	h.mu.RUnlock()
	if ts == nil || len(entries) == 0 {
		return
	}
	h.publishPresenceMsg(k, presenceMsg{Node: h.cfg.NodeID, Type: "state", Joins: entries})
}

// presenceLoop re-announces this node's presences and forgets nodes that
// went silent.
func (h *Hub) presenceLoop(ctx context.Context) {
	t := time.NewTicker(h.cfg.PresenceInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		h.mu.Lock()
		var mine []topicKey
		cutoff := time.Now().Add(-3 * h.cfg.PresenceInterval)
		for k, ts := range h.topics {
			for id, np := range ts.nodes {
				if id == h.cfg.NodeID {
					if len(np.entries) > 0 {
						mine = append(mine, k)
					}
					continue
				}
				if np.seen.Before(cutoff) {
					var leaves []presEntry
					for _, e := range np.entries {
						leaves = append(leaves, e)
					}
					delete(ts.nodes, id)
					h.pushPresenceDiff(ts, nil, leaves)
				}
			}
		}
		h.mu.Unlock()
		for _, k := range mine {
			h.announce(k)
		}
	}
}

// pushPresenceDiff queues presence_diff to the topic's presence channels;
// h.mu must be held.
func (h *Hub) pushPresenceDiff(ts *topicState, joins, leaves []presEntry) {
	p := []byte(`{"joins":`)
	p = appendPresenceMap(p, joins)
	p = append(p, `,"leaves":`...)
	p = appendPresenceMap(p, leaves)
	p = append(p, '}')
	var frames [3]*Frame
	for ch := range ts.channels {
		if !ch.spec.Presence || ch.spec.Private && !ch.spec.ReadPresence {
			continue
		}
		vsn := ch.client.Vsn
		if frames[vsn] == nil {
			f := MessageFrame(vsn, Ref{}, Ref{}, ch.spec.Topic, "presence_diff", p)
			frames[vsn] = &f
		}
		ch.client.Push(*frames[vsn])
	}
}

// statePayload is the topic's presence_state; h.mu must be held.
func (ts *topicState) statePayload() []byte {
	var all []presEntry
	for _, np := range ts.nodes {
		for _, e := range np.entries {
			all = append(all, e)
		}
	}
	return appendPresenceMap(nil, all)
}

// appendPresenceMap writes {key: {metas: [{phx_ref, ...meta}]}}.
func appendPresenceMap(dst []byte, es []presEntry) []byte {
	sort.Slice(es, func(i, j int) bool {
		if es[i].Key != es[j].Key {
			return es[i].Key < es[j].Key
		}
		return es[i].Ref < es[j].Ref
	})
	dst = append(dst, '{')
	for i := 0; i < len(es); {
		if i > 0 {
			dst = append(dst, ',')
		}
		key := es[i].Key
		dst = AppendString(dst, key)
		dst = append(dst, `:{"metas":[`...)
		for j := i; j < len(es) && es[j].Key == key; j++ {
			if j > i {
				dst = append(dst, ',')
			}
			dst = append(dst, `{"phx_ref":`...)
			dst = AppendString(dst, es[j].Ref)
			meta := bytes.TrimSpace(es[j].Meta)
			if len(meta) > 2 && meta[0] == '{' {
				inner := bytes.TrimSpace(meta[1 : len(meta)-1])
				if len(inner) > 0 {
					dst = append(dst, ',')
					dst = append(dst, inner...)
				}
			}
			dst = append(dst, '}')
			i = j + 1
		}
		dst = append(dst, "]}"...)
	}
	return append(dst, '}')
}
