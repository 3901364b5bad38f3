package replication

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/fluxbase/fluxbase/change"
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
	// maxEvent is the largest event the log takes; bigger ones lose their
	// largest column values (onShrink is told which).
	maxEvent int
	onShrink func(ev event, omitted []string, size int)
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
	if p.maxEvent > 0 && len(ev.data) > p.maxEvent {
		data, omitted, err := shrinkEvent(ev.data, p.maxEvent)
		if err != nil {
			return err
		}
		if p.onShrink != nil {
			p.onShrink(ev, omitted, len(ev.data))
		}
		ev.data = data
	}
	p.idb = ev.pos.AppendMsgID(p.idb[:0])
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

func (p *publisher) position(lsn change.LSN) error {
	p.ck.addPosition(lsn, time.Time{})
	return nil
}

// shrinkEvent makes an encoded event fit in max bytes by leaving out column
// values, largest first, from record and old_record (primary-key columns
// stay, so the row can be read back). Without this a row bigger than the
// log's maximum message would fail its publish again after every restart
// and stop replication for good.
func shrinkEvent(data []byte, max int) ([]byte, []string, error) {
	var c change.Event
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, nil, fmt.Errorf("shrink event: %w", err)
	}
	for {
		out := c.AppendJSON(nil)
		if len(out) <= max {
			return out, c.OmittedColumns, nil
		}
		row, i := largestValue(&c)
		if row == nil {
			return nil, nil, fmt.Errorf("event at %s is %d bytes without its column values; the log takes %d",
				c.Position().MsgID(), len(out), max)
		}
		name := (*row)[i].Name
		*row = append((*row)[:i:i], (*row)[i+1:]...)
		if !slices.Contains(c.OmittedColumns, name) {
			c.OmittedColumns = append(c.OmittedColumns, name)
		}
	}
}

// largestValue finds the biggest non-key value of the record or old record.
func largestValue(c *change.Event) (*change.Row, int) {
	var best *change.Row
	at, size := -1, 0
	for _, row := range []*change.Row{&c.Record, &c.OldRecord} {
		for i, f := range *row {
			if _, key := c.PK.Get(f.Name); !key && len(f.Value) > size {
				best, at, size = row, i, len(f.Value)
			}
		}
	}
	return best, at
}
