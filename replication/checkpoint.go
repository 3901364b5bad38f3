package replication

import (
	"errors"
	"fmt"
	"time"

	"github.com/fluxbase/fluxbase/change"
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
//
// It is kept small (56 bytes): up to 32 windows of entries may wait for the
// log to sync.
type pending struct {
	ack      Ack        // an event, until its acknowledgement is seen
	seq      uint64     // an event's stream sequence, once acknowledged
	lsn      change.LSN // a position: what the slot may confirm after it
	sent     int64      // an event: when it was published (Unix ns)
	commitTS int64      // a position that ends a transaction: its commit time (Unix µs)
	event    bool
	op       uint8 // opSlot
}

// checkpoint is the queue of what is in flight and the position that may be
// confirmed. It belongs to one session's goroutine.
//
// The queue has three parts: [0, head) is done and gone; [head, scan) is
// acknowledged (events with a sequence, and positions), waiting only for the
// log's durable sequence; [scan, len) starts with the oldest event whose
// acknowledgement has not been seen. The publish window bounds the
// unacknowledged events, which hold message data in the log client; the
// acknowledged ones are a few words each and have a larger bound of their
// own, so a log that syncs to disk every second does not throttle the
// pipeline to a window per second.
type checkpoint struct {
	q         []pending
	head      int
	scan      int
	events    int // events in the queue
	unacked   int // events whose acknowledgement has not been seen
	confirmed change.LSN

	durableSeq func() uint64
	onEvent    func(op uint8)       // an event became durable (opSlot)
	onCommit   func(tsMicros int64) // a transaction became durable
}

func newCheckpoint(confirmed change.LSN, durableSeq func() uint64) *checkpoint {
	return &checkpoint{confirmed: confirmed, durableSeq: durableSeq, onEvent: func(uint8) {}, onCommit: func(int64) {}}
}

func (c *checkpoint) addEvent(ack Ack, op change.Op, now time.Time) {
	c.q = append(c.q, pending{event: true, ack: ack, op: uint8(opSlot(op)), sent: now.UnixNano()})
	c.events++
	c.unacked++
}

// addPosition queues a WAL position. Consecutive positions (keepalives on
// an idle stream) collapse into one entry, so the queue never grows with
// time, only with events.
func (c *checkpoint) addPosition(lsn change.LSN, commitTS time.Time) {
	var ts int64
	if !commitTS.IsZero() {
		ts = commitTS.UnixMicro()
	}
	if n := len(c.q); n > c.head && !c.q[n-1].event {
		last := &c.q[n-1]
		last.lsn = max(last.lsn, lsn)
		if ts != 0 {
			last.commitTS = ts
		}
		return
	}
	if c.head == len(c.q) && lsn <= c.confirmed {
		return
	}
	c.q = append(c.q, pending{lsn: lsn, commitTS: ts})
}

var errNoSequence = errors.New("log acknowledged without a sequence")

// advance collects acknowledgements, then takes every entry off the head
// of the queue that is durable, moving the confirmed position. It returns
// the first publish failure: nothing after a failed event may ever be
// confirmed, so the session must end and start again from the log's last
// event.
func (c *checkpoint) advance() error {
	for ; c.scan < len(c.q); c.scan++ {
		p := &c.q[c.scan]
		if !p.event || p.ack == nil {
			continue
		}
		select {
		case <-p.ack.Done():
		default:
			goto durable
		}
		seq, err := p.ack.Result()
		if err != nil {
			return fmt.Errorf("publish: %w", err)
		}
		if seq == 0 {
			return errNoSequence
		}
		p.seq, p.ack = seq, nil
		c.unacked--
	}
durable:
	if c.head < c.scan {
		durable := c.durableSeq()
		for ; c.head < c.scan; c.head++ {
			p := &c.q[c.head]
			if p.event {
				if p.seq > durable {
					break
				}
				c.events--
				c.onEvent(p.op)
			} else {
				c.confirmed = max(c.confirmed, p.lsn)
				if p.commitTS != 0 {
					c.onCommit(p.commitTS)
				}
			}
			*p = pending{}
		}
	}
	c.compact()
	return nil
}

func (c *checkpoint) compact() {
	switch {
	case c.head == len(c.q):
		c.q, c.head, c.scan = c.q[:0], 0, 0
	case c.head >= 1024 && c.head*2 >= len(c.q):
		n := copy(c.q, c.q[c.head:])
		clear(c.q[n:])
		c.q, c.scan, c.head = c.q[:n], c.scan-c.head, 0
	}
}

// firstUnacked is the oldest event whose acknowledgement has not been
// seen, if any.
func (c *checkpoint) firstUnacked() *pending {
	for i := c.scan; i < len(c.q); i++ {
		if c.q[i].event && c.q[i].ack != nil {
			return &c.q[i]
		}
	}
	return nil
}

// idle reports whether nothing is in flight.
func (c *checkpoint) idle() bool { return c.head == len(c.q) }
