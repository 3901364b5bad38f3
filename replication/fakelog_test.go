package replication

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/fluxbase/fluxbase/change"
)

// fakeLog is an in-memory Log with JetStream's semantics for what the
// reader relies on: order, de-duplication by id, the expected-last-id
// precondition and a durable sequence that can lag the stored one.
type fakeLog struct {
	mu      sync.Mutex
	msgs    []Message
	ids     map[string]uint64
	durable uint64 // 0 with holdDurable false: everything stored is durable
	hold    bool

	// failPublish, when set, decides the outcome of each publish before it
	// is stored; an error fails that publish only.
	failPublish func(m Message) error
}

func newFakeLog() *fakeLog { return &fakeLog{ids: map[string]uint64{}} }

type fakeAck struct {
	done chan struct{}
	seq  uint64
	err  error
}

func (a *fakeAck) Done() <-chan struct{}   { return a.done }
func (a *fakeAck) Result() (uint64, error) { return a.seq, a.err }

func (f *fakeLog) PublishAsync(m Message) (Ack, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := &fakeAck{done: make(chan struct{})}
	defer close(a.done)
	if f.failPublish != nil {
		if a.err = f.failPublish(m); a.err != nil {
			return a, nil
		}
	}
	if seq, dup := f.ids[m.ID]; dup {
		a.seq = seq
		return a, nil
	}
	if m.ExpectLastID != "" {
		last := ""
		if n := len(f.msgs); n > 0 {
			last = f.msgs[n-1].ID
		}
		if last != m.ExpectLastID {
			a.err = fmt.Errorf("wrong last msg id: %q, expected %q", last, m.ExpectLastID)
			return a, nil
		}
	}
	m.Data = append([]byte(nil), m.Data...)
	f.msgs = append(f.msgs, m)
	a.seq = uint64(len(f.msgs))
	f.ids[m.ID] = a.seq
	return a, nil
}

func (f *fakeLog) DurableSeq() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hold {
		return f.durable
	}
	return uint64(len(f.msgs))
}

// holdDurable freezes the durable sequence where it is (true) or lets it
// follow the stored one again (false).
func (f *fakeLog) holdDurable(hold bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hold, f.durable = hold, uint64(len(f.msgs))
}

func (f *fakeLog) LastChange(context.Context) (string, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.msgs) == 0 {
		return "", false, nil
	}
	return f.msgs[len(f.msgs)-1].ID, true, nil
}

func (f *fakeLog) len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.msgs)
}

// changes decodes every stored message.
func (f *fakeLog) changes(t testing.TB) []change.Event {
	t.Helper()
	f.mu.Lock()
	msgs := append([]Message(nil), f.msgs...)
	f.mu.Unlock()
	out := make([]change.Event, len(msgs))
	for i, m := range msgs {
		if err := json.Unmarshal(m.Data, &out[i]); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if m.ID != out[i].Position().MsgID() {
			t.Fatalf("message %d has id %s, its change says %s", i, m.ID, out[i].Position().MsgID())
		}
	}
	return out
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
