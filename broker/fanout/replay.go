package fanout

import (
	"context"
	"fmt"
	"strings"

	"github.com/fluxbase/fluxbase/change"
)

// This file replays the log to a resuming channel before it goes live.
// A replay's cost is bounded: it may start at most MaxResumeChanges
// behind the end of the log (a join further back is refused, the client
// told to read afresh), it reads at most twice that before giving up, it
// decodes only changes of its bindings' tables, and at most
// ResumeParallel replays run at once on a node.

// ResumeError is a resume the change log cannot serve: its position is no
// longer held, was never given out, or is too far back.
type ResumeError struct{ msg string }

func (e *ResumeError) Error() string { return e.msg }

// resyncHint ends every ResumeError: what the client does instead.
const resyncHint = "; read the current rows and join without postgres_changes_resume"

// CheckResume reports whether a resume after seq `after` may be served:
// a *ResumeError when the log cannot serve it, another error when the log
// could not be asked.
func (h *Hub) CheckResume(ctx context.Context, after uint64) error {
	if h.source == nil {
		return &ResumeError{"there is no change log to resume from"}
	}
	first, last, err := h.source.Bounds(ctx)
	if err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	return h.resumable(first, last, after)
}

func (h *Hub) resumable(first, last, after uint64) error {
	switch {
	case last > 0 && first > after+1:
		return &ResumeError{fmt.Sprintf("resume position %d is no longer in the change log (the oldest held is %d)%s", after, first, resyncHint)}
	case after > last:
		// Not a position this log ever gave out (a log recreated since,
		// say): going live after it would skip changes until the log
		// caught up.
		return &ResumeError{fmt.Sprintf("resume position %d is beyond the end of the change log (%d)%s", after, last, resyncHint)}
	case last-after > uint64(h.cfg.MaxResumeChanges):
		return &ResumeError{fmt.Sprintf("resume position %d is %d changes behind the end of the change log, more than the %d a resume may replay%s",
			after, last-after, h.cfg.MaxResumeChanges, resyncHint)}
	}
	return nil
}

// replay delivers the log after seq `after` to ch alone, then makes it
// live at the first sequence the dispatcher has not yet dispatched.
func (h *Hub) replay(ctx context.Context, ch *Channel, after uint64) error {
	if h.source == nil {
		return &ResumeError{"there is no change log to resume from"}
	}
	select {
	case h.replaySlots <- struct{}{}:
		defer func() { <-h.replaySlots }()
	case <-ctx.Done():
		return ctx.Err()
	}
	first, last, err := h.source.Bounds(ctx)
	if err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	if err := h.resumable(first, last, after); err != nil {
		return err
	}
	// The log grows while the replay catches up with the dispatcher; a
	// replay that cannot catch up within this many changes gives up.
	budget := 2 * h.cfg.MaxResumeChanges
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
	var overrun error
	err = h.source.Consume(ctx, after+1, func(m Msg) error {
		if ch.closed.Load() {
			return ErrStop
		}
		if budget--; budget < 0 {
			overrun = &ResumeError{fmt.Sprintf("the change log grew faster than the resume from %d could replay it (%d changes read)%s",
				after, 2*h.cfg.MaxResumeChanges, resyncHint)}
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
	return overrun
}

// replayBatch delivers a batch of the log to one resuming channel.
func (h *Hub) replayBatch(ctx context.Context, ch *Channel, msgs []Msg) {
	changes := make([]*Change, 0, len(msgs))
	per := make([][]delivery, 0, len(msgs))
	for _, m := range msgs {
		if !ch.wantsSubject(m.Subject) {
			continue // not one of its tables: not even decoded
		}
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

// wantsSubject reports whether a change on subject may match one of the
// channel's bindings; an empty or unparsable subject may.
func (ch *Channel) wantsSubject(subject string) bool {
	if subject == "" {
		return true
	}
	schema, table, op, ok := change.ParseSubject(subject)
	if !ok {
		return true
	}
	ev := strings.ToUpper(op)
	for _, b := range ch.binds {
		if s := normName(b.Schema); s != "" && s != schema {
			continue
		}
		if t := normName(b.Table); t != "" && t != table {
			continue
		}
		if b.matchesEvent(ev) {
			return true
		}
	}
	return false
}
