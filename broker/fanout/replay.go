package fanout

import (
	"context"
	"errors"
	"fmt"
)

// This file replays the log to a resuming channel before it goes live.

// replay delivers the log after seq `after` to ch alone, then makes it
// live at the first sequence the dispatcher has not yet dispatched.
func (h *Hub) replay(ctx context.Context, ch *Channel, after uint64) error {
	if h.source == nil {
		return errors.New("no change log to resume from")
	}
	first, last, err := h.source.Bounds(ctx)
	if err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	if last > 0 && first > after+1 {
		return fmt.Errorf("resume position %d is no longer in the change log (the oldest held is %d)", after, first)
	}
	if after > last {
		// Not a position this log ever gave out (a log recreated since,
		// say): going live after it would skip changes until the log
		// caught up.
		return fmt.Errorf("resume position %d is beyond the end of the change log (%d)", after, last)
	}
	// tryLive switches ch to live if everything up to pos has reached it.
	tryLive := func(pos uint64) bool {
		if pos < last {
			return false
		}
		h.seqMu.Lock()
		defer h.seqMu.Unlock()
		if pos < h.lastSeq {
			return false
		}
		ch.liveFrom = pos + 1
		return true
	}
	if tryLive(after) {
		return nil
	}
	var batch []Msg
	pos := after
	flush := func() {
		if len(batch) == 0 {
			return
		}
		h.replayBatch(ctx, ch, batch)
		pos = batch[len(batch)-1].Seq
		batch = batch[:0]
	}
	err = h.source.Consume(ctx, after+1, func(m Msg) error {
		if ch.closed.Load() {
			return ErrStop
		}
		batch = append(batch, m)
		if len(batch) < h.cfg.BatchSize && m.Seq < last {
			return nil
		}
		flush()
		if tryLive(pos) {
			return ErrStop
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	return nil
}

// replayBatch delivers a batch of the log to one resuming channel.
func (h *Hub) replayBatch(ctx context.Context, ch *Channel, msgs []Msg) {
	changes := make([]*Change, 0, len(msgs))
	per := make([][]delivery, 0, len(msgs))
	for _, m := range msgs {
		c, err := DecodeChange(m.Seq, m.Data)
		if err != nil || c.event() == "" {
			continue
		}
		var ids []uint32
		for _, b := range ch.binds {
			if !b.matchesEvent(c.event()) {
				continue
			}
			if s := normName(b.Schema); s != "" && s != c.Schema {
				continue
			}
			if t := normName(b.Table); t != "" && t != c.Table {
				continue
			}
			if b.Filter.Match(c.lookup) {
				ids = append(ids, b.ID)
			}
		}
		if len(ids) == 0 {
			continue
		}
		changes = append(changes, c)
		per = append(per, []delivery{{ch: ch, ids: sortedIDs(ids)}})
	}
	if len(changes) > 0 {
		h.deliver(ctx, changes, per)
	}
}

// LastSeq is the sequence of the last change dispatched.
func (h *Hub) LastSeq() uint64 {
	h.seqMu.Lock()
	defer h.seqMu.Unlock()
	return h.lastSeq
}
