package replication

import (
	"errors"
	"testing"
	"time"

	"github.com/fluxbase/fluxbase/change"
)

// manualAck is an Ack the test completes.
type manualAck struct {
	done chan struct{}
	seq  uint64
	err  error
}

func newManualAck() *manualAck                      { return &manualAck{done: make(chan struct{})} }
func (a *manualAck) Done() <-chan struct{}          { return a.done }
func (a *manualAck) Result() (uint64, error)        { return a.seq, a.err }
func (a *manualAck) complete(seq uint64, err error) { a.seq, a.err = seq, err; close(a.done) }

func TestCheckpointConfirmsOnlyDurable(t *testing.T) {
	t.Parallel()
	var durable uint64
	ck := newCheckpoint(100, func() uint64 { return durable })
	var committed []int64
	ck.onCommit = func(ts int64) { committed = append(committed, ts) }
	now := time.Now()
	a1, a2, a3 := newManualAck(), newManualAck(), newManualAck()
	ck.addEvent(a1, change.OpInsert, now)
	ck.addEvent(a2, change.OpInsert, now)
	ck.addPosition(200, now) // commit of the first transaction
	ck.addEvent(a3, change.OpUpdate, now)
	ck.addPosition(300, now.Add(time.Second))
	ck.addPosition(350, time.Time{}) // a keepalive right after: collapses into 300's entry

	step := func(want change.LSN, unacked, events int) {
		t.Helper()
		if err := ck.advance(); err != nil {
			t.Fatal(err)
		}
		if ck.confirmed != want || ck.unacked != unacked || ck.events != events {
			t.Fatalf("confirmed %s unacked %d events %d, want %s %d %d", ck.confirmed, ck.unacked, ck.events, want, unacked, events)
		}
	}
	step(100, 3, 3)
	a2.complete(2, nil) // out of order: not seen before a1
	step(100, 3, 3)
	a1.complete(1, nil)
	step(100, 1, 3) // acknowledged, not durable
	durable = 1
	step(100, 1, 2)
	durable = 2
	step(200, 1, 1)
	a3.complete(3, nil)
	step(200, 0, 1)
	durable = 3
	step(350, 0, 0)
	if len(committed) != 2 {
		t.Errorf("%d commits reported, want 2", len(committed))
	}
	if !ck.idle() {
		t.Error("not idle")
	}
	ck.addPosition(340, time.Time{}) // behind the confirmed position: nothing to do
	if !ck.idle() {
		t.Error("a position behind the confirmed one was queued")
	}
}

func TestCheckpointStopsAtFailure(t *testing.T) {
	t.Parallel()
	ck := newCheckpoint(0, func() uint64 { return 10 })
	a1, a2 := newManualAck(), newManualAck()
	ck.addEvent(a1, change.OpInsert, time.Now())
	ck.addPosition(50, time.Time{})
	ck.addEvent(a2, change.OpInsert, time.Now())
	ck.addPosition(60, time.Time{})
	a1.complete(0, errors.New("no stream"))
	a2.complete(2, nil)
	if err := ck.advance(); err == nil {
		t.Fatal("a failed publish was not reported")
	}
	if ck.confirmed != 0 {
		t.Fatalf("confirmed %s past a failed event", ck.confirmed)
	}
}
