package replication

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fluxbase/fluxbase/change"
)

// JetStreamLog is a Log on a JetStream stream reached through a NATS
// connection: the stream the broker package runs, or one on an external
// NATS cluster. It does not create the stream.
//
// Acknowledgements arrive through the JetStream context's ack handlers, so
// tracking a publish costs no goroutine.
type JetStreamLog struct {
	js     jetstream.JetStream
	stream string
	sync   time.Duration

	mu      sync.Mutex
	pending map[*nats.Msg]*jsAck

	acked   atomic.Uint64 // highest sequence acknowledged
	samples struct {
		sync.Mutex
		ring []seqAt // acknowledged sequences by time, when sync > 0
	}
}

type seqAt struct {
	at  time.Time
	seq uint64
}

// JetStreamLogOptions configure a JetStreamLog.
type JetStreamLogOptions struct {
	// Stream is the stream's name; default change.Stream.
	Stream string
	// SyncInterval is the stream's server's fsync interval; 0 means the
	// server syncs every write (sync_interval: always) or the stream is
	// replicated, so an acknowledged message is durable. Otherwise a
	// message counts as durable SyncInterval after its acknowledgement.
	SyncInterval time.Duration
	// MaxPending bounds the publishes in flight; default 8192. Keep it at
	// or above Config.Window.
	MaxPending int
	// AckTimeout fails a publish not acknowledged in time; default 30s.
	AckTimeout time.Duration
}

type jsAck struct {
	done chan struct{}
	seq  uint64
	err  error
}

func (a *jsAck) Done() <-chan struct{}   { return a.done }
func (a *jsAck) Result() (uint64, error) { return a.seq, a.err }

// NewJetStreamLog returns a Log that publishes on nc.
func NewJetStreamLog(nc *nats.Conn, opts JetStreamLogOptions) (*JetStreamLog, error) {
	if opts.Stream == "" {
		opts.Stream = change.Stream
	}
	if opts.MaxPending <= 0 {
		opts.MaxPending = 8192
	}
	if opts.AckTimeout <= 0 {
		opts.AckTimeout = 30 * time.Second
	}
	l := &JetStreamLog{stream: opts.Stream, sync: opts.SyncInterval, pending: make(map[*nats.Msg]*jsAck)}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(opts.MaxPending),
		jetstream.WithPublishAsyncTimeout(opts.AckTimeout),
		jetstream.WithPublishAsyncAckHandler(l.onAck),
		jetstream.WithPublishAsyncErrHandler(l.onErr))
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	l.js = js
	return l, nil
}

func (l *JetStreamLog) take(m *nats.Msg) *jsAck {
	l.mu.Lock()
	defer l.mu.Unlock()
	a := l.pending[m]
	delete(l.pending, m)
	return a
}

// onAck runs on the connection's ack goroutine; it must not block.
func (l *JetStreamLog) onAck(_ jetstream.JetStream, m *nats.Msg, pa *jetstream.PubAck) {
	a := l.take(m)
	if a == nil {
		return
	}
	a.seq = pa.Sequence
	if pa.Stream != l.stream {
		a.err = fmt.Errorf("stored in stream %s, not %s", pa.Stream, l.stream)
	}
	storeMax(&l.acked, pa.Sequence)
	if l.sync > 0 {
		l.samples.Lock()
		n := len(l.samples.ring)
		if n == 0 || time.Since(l.samples.ring[n-1].at) > time.Millisecond {
			l.samples.ring = append(l.samples.ring, seqAt{time.Now(), pa.Sequence})
		} else {
			l.samples.ring[n-1].seq = pa.Sequence
		}
		l.samples.Unlock()
	}
	close(a.done)
}

func (l *JetStreamLog) onErr(_ jetstream.JetStream, m *nats.Msg, err error) {
	if a := l.take(m); a != nil {
		a.err = err
		close(a.done)
	}
}

// PublishAsync publishes with Nats-Msg-Id and Nats-Expected-Last-Msg-Id.
func (l *JetStreamLog) PublishAsync(m Message) (Ack, error) {
	msg := &nats.Msg{Subject: m.Subject, Data: m.Data, Header: make(nats.Header, 2)}
	opts := []jetstream.PublishOpt{jetstream.WithMsgID(m.ID), jetstream.WithExpectStream(l.stream)}
	if m.ExpectLastID != "" {
		opts = append(opts, jetstream.WithExpectLastMsgID(m.ExpectLastID))
	}
	a := &jsAck{done: make(chan struct{})}
	// Registered first: the ack may arrive before PublishMsgAsync returns.
	l.mu.Lock()
	l.pending[msg] = a
	l.mu.Unlock()
	if _, err := l.js.PublishMsgAsync(msg, opts...); err != nil {
		l.take(msg)
		return nil, err
	}
	return a, nil
}

// DurableSeq is the highest acknowledged sequence (held back by
// SyncInterval when the server syncs periodically).
func (l *JetStreamLog) DurableSeq() uint64 {
	if l.sync <= 0 {
		return l.acked.Load()
	}
	l.samples.Lock()
	defer l.samples.Unlock()
	// A sample is durable once a whole sync interval (and a margin for the
	// server's timer) has passed since it was acknowledged.
	cutoff := time.Now().Add(-l.sync - l.sync/4)
	var durable uint64
	i := 0
	for ; i < len(l.samples.ring) && l.samples.ring[i].at.Before(cutoff); i++ {
		durable = l.samples.ring[i].seq
	}
	if i > 0 {
		// Keep the last durable sample so later calls still see it.
		l.samples.ring = append(l.samples.ring[:0], l.samples.ring[i-1:]...)
	}
	return durable
}

// LastChange reads the id of the stream's last message.
func (l *JetStreamLog) LastChange(ctx context.Context) (string, bool, error) {
	s, err := l.js.Stream(ctx, l.stream)
	if err != nil {
		return "", false, fmt.Errorf("stream %s: %w", l.stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return "", false, fmt.Errorf("stream %s: %w", l.stream, err)
	}
	if info.State.Msgs == 0 {
		return "", false, nil
	}
	msg, err := s.GetMsg(ctx, info.State.LastSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		msg, err = s.GetLastMsgForSubject(ctx, ">")
	}
	if err != nil {
		return "", false, fmt.Errorf("stream %s: last message: %w", l.stream, err)
	}
	id := msg.Header.Get(jetstream.MsgIDHeader)
	if id == "" {
		return "", false, fmt.Errorf("stream %s: message %d has no %s", l.stream, msg.Sequence, jetstream.MsgIDHeader)
	}
	// Whatever the stream already holds was acknowledged before.
	storeMax(&l.acked, msg.Sequence)
	return id, true, nil
}

// storeMax raises v to n unless it is already higher.
func storeMax(v *atomic.Uint64, n uint64) {
	for {
		cur := v.Load()
		if n <= cur || v.CompareAndSwap(cur, n) {
			return
		}
	}
}
