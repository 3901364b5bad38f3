package replication

import (
	"fmt"
	"time"
)

// This file is the publish stage: events go to the log pipelined, up to
// Window of them in flight, each with its message id <commit_lsn>/<tx_index>
// and the id of the message before it as a precondition, so the log's
// order is the WAL's and a failed publish cannot be overtaken. Memory is
// bounded by the window, not by transaction size: a million-row
// transaction streams through.

// publisher is the decoder's sink during a session.
type publisher struct {
	log       Log
	ck        *checkpoint
	window    int    // unacknowledged events
	queue     int    // events not yet durable
	lastID    string // the id of the last message handed to the log
	published int
	// wait blocks until the log makes progress (or something else needs
	// the session's attention); called while the window is full.
	wait func() error
	now  func() time.Time
	idb  []byte
}

func (p *publisher) event(ev event) error {
	for p.ck.unacked >= p.window || p.ck.events >= p.queue {
		if err := p.ck.advance(); err != nil {
			return err
		}
		if p.ck.unacked < p.window && p.ck.events < p.queue {
			break
		}
		if err := p.wait(); err != nil {
			return err
		}
	}
	p.idb = ev.pos.appendMsgID(p.idb[:0])
	id := string(p.idb)
	ack, err := p.log.PublishAsync(Message{Subject: ev.subject, ID: id, ExpectLastID: p.lastID, Data: ev.data})
	if err != nil {
		return fmt.Errorf("publish %s: %w", id, err)
	}
	p.lastID = id
	p.published++
	p.ck.addEvent(ack, ev.op, p.now())
	return nil
}

func (p *publisher) commit(c commitInfo) error {
	p.ck.addPosition(c.endLSN, c.ts)
	return nil
}

func (p *publisher) position(lsn LSN) error {
	p.ck.addPosition(lsn, time.Time{})
	return nil
}
