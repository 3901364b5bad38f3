package fanout

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
)

// Msg is one message of the change log: its stream sequence, its subject
// (fluxbase.changes.<schema>.<table>.<op>; empty when the log does not
// say) and the JSON change event.
type Msg struct {
	Seq     uint64
	Subject string
	Data    []byte
}

// ErrStop ends a Consume without error when a callback returns it.
var ErrStop = errors.New("stop consuming")

// Source is the change log as the hub reads it. On a node it is the
// broker's change log stream (change.Stream) read with ordered consumers.
type Source interface {
	// Consume calls fn for each message from sequence start on, in order;
	// start 0 means only messages published after the call. It returns
	// when ctx ends (nil), when fn returns ErrStop (nil) or another error
	// (that error), or when the log fails.
	Consume(ctx context.Context, start uint64, fn func(Msg) error) error
	// Bounds returns the sequences of the oldest and newest messages the
	// log holds; last is 0 when it has never held one.
	Bounds(ctx context.Context) (first, last uint64, err error)
}

// Bus is the cluster's plain publish/subscribe messaging (core NATS on a
// node): best-effort delivery to every current subscriber of a subject,
// the publisher's own subscriptions included.
type Bus interface {
	Publish(subject string, data []byte) error
	// Subscribe calls fn for each message on subject until the returned
	// function is called. fn must not block for long.
	Subscribe(subject string, fn func(data []byte)) (unsubscribe func(), err error)
}

// LocalBus is a Bus within one process: a single node, and tests that
// stand several hubs side by side as if they were nodes. Publish delivers
// synchronously on the caller's goroutine.
type LocalBus struct {
	mu   sync.Mutex // guards subs; not held while calling subscribers
	subs map[string]map[*localSub]struct{}
}

type localSub struct{ fn func([]byte) }

// NewLocalBus returns an empty LocalBus.
func NewLocalBus() *LocalBus { return &LocalBus{subs: map[string]map[*localSub]struct{}{}} }

// Publish implements Bus.
func (b *LocalBus) Publish(subject string, data []byte) error {
	b.mu.Lock()
	var fns []func([]byte)
	for s := range b.subs[subject] {
		fns = append(fns, s.fn)
	}
	b.mu.Unlock()
	for _, fn := range fns {
		fn(append([]byte(nil), data...))
	}
	return nil
}

// Subscribe implements Bus.
func (b *LocalBus) Subscribe(subject string, fn func([]byte)) (func(), error) {
	if strings.ContainsAny(subject, " \t") {
		return nil, fmt.Errorf("invalid subject %q", subject)
	}
	s := &localSub{fn: fn}
	b.mu.Lock()
	if b.subs[subject] == nil {
		b.subs[subject] = map[*localSub]struct{}{}
	}
	b.subs[subject][s] = struct{}{}
	b.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			b.mu.Lock()
			delete(b.subs[subject], s)
			if len(b.subs[subject]) == 0 {
				delete(b.subs, subject)
			}
			b.mu.Unlock()
		})
	}, nil
}

// MemLog is an in-memory change log: a Source for tests and benchmarks,
// and for a process without a broker. Append adds messages with
// consecutive sequences starting at 1.
type MemLog struct {
	mu   sync.Mutex // guards msgs and wake
	msgs []Msg
	wake chan struct{} // closed and replaced on every Append
}

// NewMemLog returns an empty log.
func NewMemLog() *MemLog { return &MemLog{wake: make(chan struct{})} }

// Append adds a message and returns its sequence.
func (l *MemLog) Append(data []byte) uint64 {
	l.mu.Lock()
	seq := uint64(len(l.msgs)) + 1
	l.msgs = append(l.msgs, Msg{Seq: seq, Data: data})
	close(l.wake)
	l.wake = make(chan struct{})
	l.mu.Unlock()
	return seq
}

// Bounds implements Source.
func (l *MemLog) Bounds(context.Context) (uint64, uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.msgs) == 0 {
		return 0, 0, nil
	}
	return 1, uint64(len(l.msgs)), nil
}

// Consume implements Source.
func (l *MemLog) Consume(ctx context.Context, start uint64, fn func(Msg) error) error {
	l.mu.Lock()
	next := start
	if start == 0 {
		next = uint64(len(l.msgs)) + 1
	}
	l.mu.Unlock()
	for {
		l.mu.Lock()
		var batch []Msg
		if next-1 < uint64(len(l.msgs)) {
			batch = l.msgs[next-1:]
		}
		wake := l.wake
		l.mu.Unlock()
		for _, m := range batch {
			if err := fn(m); err != nil {
				if errors.Is(err, ErrStop) {
					return nil
				}
				return err
			}
			next = m.Seq + 1
		}
		if len(batch) > 0 {
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		}
	}
}
