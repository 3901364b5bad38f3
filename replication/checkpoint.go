package replication

import (
	"errors"
	"fmt"
	"time"
)

// This file is the checkpoint stage. The slot's confirmed LSN tells
// PostgreSQL what it may forget, so it must never pass an event the log
// does not hold durably: a WAL position is confirmed only once every event
// before it has been acknowledged by the log AND its stream sequence is at
// or below the log's durable sequence. The received position (what the
// server sent) is kept apart and reported only as the write position.

// pending is one entry of the checkpoint queue, in WAL order: an event
// waiting for the log, or a WAL position that may be confirmed once
// everything before it is durable.
type pending struct {
	ack      Ack // nil for a position
	sent     time.Time
	op       Op
	seq      uint64    // the event's stream sequence, once acknowledged
	lsn      LSN       // a position: what the slot may confirm after it
	commitTS time.Time // a position that ends a transaction: its commit time
}

// checkpoint is the queue of what is in flight and the position that may be
// confirmed. It belongs to one session's goroutine.
type checkpoint struct {
	q         []pending
	head      int
	events    int // events in the queue
	confirmed LSN

	durableSeq func() uint64
	onEvent    func(op Op)        // an event became durable
	onCommit   func(ts time.Time) // a transaction became durable
}

func newCheckpoint(confirmed LSN, durableSeq func() uint64) *checkpoint {
	return &checkpoint{confirmed: confirmed, durableSeq: durableSeq, onEvent: func(Op) {}, onCommit: func(time.Time) {}}
}

func (c *checkpoint) addEvent(ack Ack, op Op, now time.Time) {
	c.q = append(c.q, pending{ack: ack, op: op, sent: now})
	c.events++
}

// addPosition queues a WAL position. Consecutive positions (keepalives on
// an idle stream) collapse into one entry, so the queue stays as long as
// the window however long the log stalls.
func (c *checkpoint) addPosition(lsn LSN, commitTS time.Time) {
	if n := len(c.q); n > c.head && c.q[n-1].ack == nil {
		last := &c.q[n-1]
		last.lsn = max(last.lsn, lsn)
		if !commitTS.IsZero() {
			last.commitTS = commitTS
		}
		return
	}
	if c.head == len(c.q) && lsn <= c.confirmed {
		return
	}
	c.q = append(c.q, pending{lsn: lsn, commitTS: commitTS})
}

var errNoSequence = errors.New("log acknowledged without a sequence")

// advance takes every entry off the head of the queue that is done and
// durable, moving the confirmed position. It returns the first publish
// failure: nothing after a failed event may ever be confirmed, so the
// session must end and start again from the log's last event.
func (c *checkpoint) advance() error {
	var durable uint64
	haveDurable := false
	for c.head < len(c.q) {
		p := &c.q[c.head]
		if p.ack != nil {
			if p.seq == 0 {
				select {
				case <-p.ack.Done():
				default:
					return c.compact()
				}
				seq, err := p.ack.Result()
				if err != nil {
					return fmt.Errorf("publish: %w", err)
				}
				if seq == 0 {
					return errNoSequence
				}
				p.seq = seq
			}
			if !haveDurable {
				durable, haveDurable = c.durableSeq(), true
			}
			if p.seq > durable {
				return c.compact()
			}
			c.events--
			c.onEvent(p.op)
		} else {
			c.confirmed = max(c.confirmed, p.lsn)
			if !p.commitTS.IsZero() {
				c.onCommit(p.commitTS)
			}
		}
		*p = pending{} // drop the Ack
		c.head++
	}
	return c.compact()
}

func (c *checkpoint) compact() error {
	switch {
	case c.head == len(c.q):
		c.q, c.head = c.q[:0], 0
	case c.head >= 1024 && c.head*2 >= len(c.q):
		n := copy(c.q, c.q[c.head:])
		clear(c.q[n:])
		c.q, c.head = c.q[:n], 0
	}
	return nil
}

// oldest is the entry at the head of the queue, if any.
func (c *checkpoint) oldest() *pending {
	if c.head < len(c.q) {
		return &c.q[c.head]
	}
	return nil
}
