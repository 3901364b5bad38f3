package fanout

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fluxbase/fluxbase/change"
)

// This file adapts NATS to the hub's two collaborators: the change log
// (the JetStream stream the replication reader publishes to, read with
// ordered consumers, which need no acknowledgements and leave nothing
// behind) and the bus (core NATS subjects, which the embedded cluster
// routes between nodes).

// NATSBus is a Bus on a NATS connection.
type NATSBus struct{ nc *nats.Conn }

// NewNATSBus returns a Bus publishing and subscribing on nc.
func NewNATSBus(nc *nats.Conn) *NATSBus { return &NATSBus{nc: nc} }

// Publish implements Bus.
func (b *NATSBus) Publish(subject string, data []byte) error {
	if err := b.nc.Publish(subject, data); err != nil {
		return fmt.Errorf("nats publish %s: %w", subject, err)
	}
	return nil
}

// Subscribe implements Bus. Messages arrive on the subscription's own
// goroutine, which the NATS client owns and ends on unsubscribe.
func (b *NATSBus) Subscribe(subject string, fn func([]byte)) (func(), error) {
	sub, err := b.nc.Subscribe(subject, func(m *nats.Msg) { fn(m.Data) })
	if err != nil {
		return nil, fmt.Errorf("nats subscribe %s: %w", subject, err)
	}
	// Have the server register the interest before the caller goes on
	// (and tells its client it joined).
	if err := b.nc.FlushTimeout(2 * time.Second); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("nats subscribe %s: %w", subject, err)
	}
	return func() { _ = sub.Unsubscribe() }, nil
}

// JetStreamSource is a Source on a JetStream stream.
type JetStreamSource struct {
	js     jetstream.JetStream
	stream string
}

// NewJetStreamSource reads stream (change.Stream when empty) through js.
func NewJetStreamSource(js jetstream.JetStream, stream string) *JetStreamSource {
	if stream == "" {
		stream = change.Stream
	}
	return &JetStreamSource{js: js, stream: stream}
}

// Bounds implements Source.
func (s *JetStreamSource) Bounds(ctx context.Context) (uint64, uint64, error) {
	st, err := s.js.Stream(ctx, s.stream)
	if err != nil {
		return 0, 0, fmt.Errorf("stream %s: %w", s.stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("stream %s info: %w", s.stream, err)
	}
	return info.State.FirstSeq, info.State.LastSeq, nil
}

// Consume implements Source with an ordered consumer, which recreates
// itself after a lost connection and resumes after the last sequence it
// delivered, so fn sees every message once, in order.
func (s *JetStreamSource) Consume(ctx context.Context, start uint64, fn func(Msg) error) error {
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy}
	if start > 0 {
		cfg = jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: start}
	}
	cons, err := s.js.OrderedConsumer(ctx, s.stream, cfg)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("ordered consumer on %s: %w", s.stream, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("consume %s: %w", s.stream, err)
	}
	stopped := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case <-ctx.Done():
		case <-done:
		}
		it.Stop()
	}()
	defer func() { close(done); <-stopped }()
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			return fmt.Errorf("consume %s: %w", s.stream, err)
		}
		meta, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("consume %s: %w", s.stream, err)
		}
		if err := fn(Msg{Seq: meta.Sequence.Stream, Subject: m.Subject(), Data: m.Data()}); err != nil {
			if errors.Is(err, ErrStop) {
				return nil
			}
			return err
		}
	}
}
