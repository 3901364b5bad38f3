package fanout

import (
	"context"
	"sort"

	"go.uber.org/zap"

	"github.com/fluxbase/fluxbase/change"
)

// This file dispatches a batch of changes: it decodes the wanted ones,
// matches them against the index, groups the matches by channel, and
// authorizes, encodes and queues the deliveries.

// delivery is one change bound for one channel, with the binding ids it
// matched.
type delivery struct {
	ch  *Channel
	ids []uint32
}

// Dispatch delivers a batch of change messages to the matching channels.
// The dispatcher calls it; tests and benchmarks may call it directly, but
// not concurrently with a running dispatcher.
func (h *Hub) Dispatch(ctx context.Context, msgs []Msg) {
	h.seqMu.Lock()
	defer h.seqMu.Unlock()
	changes := make([]*Change, 0, len(msgs))
	for _, m := range msgs {
		if m.Seq > h.lastSeq {
			h.lastSeq = m.Seq
		}
		if !h.wants(m.Subject) {
			continue // nobody here follows its table: not even decoded
		}
		c, err := DecodeChange(m.Seq, m.Data)
		if err != nil {
			h.log.Warn("skipping an undecodable change", zap.Uint64("seq", m.Seq), zap.Error(err))
			continue
		}
		if c.event() == "" {
			continue
		}
		changes = append(changes, c)
	}
	if len(changes) == 0 {
		return
	}
	perChange := make([][]delivery, len(changes))
	var scratch []*binding
	h.mu.RLock()
	for i, c := range changes {
		scratch = h.match(c, c.event(), scratch[:0])
		perChange[i] = h.groupDeliveries(scratch, c.Seq)
	}
	h.mu.RUnlock()
	h.deliver(ctx, changes, perChange)
}

// wants reports whether a change on subject may match a binding of this
// hub: one on its table, on every table of its schema, on the table in
// every schema, or on everything.
// An empty or unparsable subject is wanted (decoded and matched).
func (h *Hub) wants(subject string) bool {
	if subject == "" {
		return true
	}
	schema, table, _, ok := change.ParseSubject(subject)
	if !ok {
		return true
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, k := range tableKeys(schema, table) {
		if h.tables[k] != nil {
			return true
		}
	}
	return false
}

// groupDeliveries turns matched bindings into one delivery per channel,
// each with its sorted, distinct binding ids. Only the dispatcher calls
// it (under seqMu), which makes the channels' scratch fields safe.
func (h *Hub) groupDeliveries(bs []*binding, seq uint64) []delivery {
	if len(bs) == 0 {
		return nil
	}
	h.epoch++
	out := make([]delivery, 0, len(bs))
	idBuf := make([]uint32, len(bs)) // one id each, sliced with no spare capacity
	multi := false
	for _, b := range bs {
		ch := b.ch
		if ch.closed.Load() || ch.liveFrom > seq {
			continue
		}
		if ch.scratchEpoch == h.epoch {
			d := &out[ch.scratchIdx]
			d.ids = append(d.ids, b.ID)
			multi = true
			continue
		}
		ch.scratchEpoch, ch.scratchIdx = h.epoch, len(out)
		k := len(out)
		idBuf[k] = b.ID
		out = append(out, delivery{ch: ch, ids: idBuf[k : k+1 : k+1]})
	}
	if multi {
		for i := range out {
			out[i].ids = sortedIDs(out[i].ids)
		}
	}
	return out
}

func sortedIDs(ids []uint32) []uint32 {
	if len(ids) < 2 {
		return ids
	}
	sort.Slice(ids, func(a, b int) bool { return ids[a] < ids[b] })
	j := 1
	for k := 1; k < len(ids); k++ {
		if ids[k] != ids[j-1] {
			ids[j] = ids[k]
			j++
		}
	}
	return ids[:j]
}

// deliver authorizes, encodes and queues the deliveries of a batch, live
// or replayed alike (see docs/ARCHITECTURE.md, "Realtime authorization"):
// a reader receives a change only when the columns its matching filters
// read are ones it may SELECT, and, under row-level security, when the
// row image the change carries passes its policies.
func (h *Hub) deliver(ctx context.Context, changes []*Change, perChange [][]delivery) {
	type gk struct {
		auth          string
		schema, table string
	}
	groups := map[gk]*authGroup{}
	var order []*authGroup // groups in the order they were made
	// verdicts[i][j] is how delivery j of change i may be seen.
	// A delivery with no ids is not seen; one without a group is seen
	// whole (no authorizer, or the service role).
	type verdict struct {
		g   *authGroup
		ids []uint32 // the bindings it matched whose filters it may read
	}
	verdicts := make([][]verdict, len(changes))
	for i, c := range changes {
		ds := perChange[i]
		verdicts[i] = make([]verdict, len(ds))
		for j, d := range ds {
			a := d.ch.auth.Load()
			if a.Bypass || h.authz == nil {
				verdicts[i][j] = verdict{ids: d.ids}
				continue
			}
			k := gk{a.key(), c.Schema, c.Table}
			g := groups[k]
			if g == nil {
				acc, err := h.tableAccess(ctx, a.Role, c.Schema, c.Table)
				if err != nil {
					h.log.Warn("table access check failed; not delivering", zap.String("table", c.Schema+"."+c.Table), zap.String("role", a.Role), zap.Error(err))
				}
				g = &authGroup{auth: a, access: acc, schema: c.Schema, table: c.Table, last: -1}
				groups[k] = g
				order = append(order, g)
			}
			if g.access == nil || len(g.access.Columns) == 0 {
				continue
			}
			ids := readableIDs(d, g.access, c)
			if len(ids) == 0 {
				continue
			}
			verdicts[i][j] = verdict{g: g, ids: ids}
			if g.access.RLS && g.last != i {
				g.last = i
				for _, old := range [...]bool{false, true} {
					if _, ok := c.image(g.access.Policy, old); ok {
						g.checks = append(g.checks, image{i, old})
					}
				}
			}
		}
	}
	h.checkRows(ctx, changes, order)
	for i, c := range changes {
		enc := newChangeEncoder(c)
		n := 0
		for j, d := range perChange[i] {
			v := verdicts[i][j]
			if len(v.ids) == 0 {
				continue
			}
			var acc *Access
			oldKey := false
			if v.g != nil {
				acc = v.g.access
				if acc.RLS {
					var allow bool
					allow, oldKey = v.g.sees(i, c.event())
					if !allow {
						continue
					}
				}
			}
			f := enc.frame(d.ch.client.Vsn, d.ch.spec.Topic, v.ids, acc, oldKey)
			if d.ch.client.Push(f) {
				n++
			}
		}
		if h.cfg.OnChange != nil {
			h.cfg.OnChange(n)
		}
	}
}

// readableIDs is d's binding ids less those of bindings whose filter
// reads a column the reader may not: one it may not SELECT (a binding on
// every table or schema names columns no join could check), and, for a
// delete from a table under row-level security, any column but the key.
// Such a filter never matches, so the ids of what the reader receives
// tell nothing about values it may not read.
func readableIDs(d delivery, acc *Access, c *Change) []uint32 {
	ch := d.ch
	if !ch.filtered {
		return d.ids
	}
	rlsDelete := acc.RLS && c.event() == "DELETE"
	var out []uint32
	for n, id := range d.ids {
		ok := true
		for _, b := range ch.binds {
			if b.ID == id && !b.filterReadable(acc, c, rlsDelete) {
				ok = false
				break
			}
		}
		switch {
		case ok && out != nil:
			out = append(out, id)
		case !ok && out == nil:
			out = append(make([]uint32, 0, len(d.ids)), d.ids[:n]...)
		}
	}
	if out == nil {
		return d.ids
	}
	return out
}

// filterReadable reports whether every column b's filter reads may be
// read: the reader may SELECT it, and, when keyOnly, it is a key column.
func (b *binding) filterReadable(acc *Access, c *Change, keyOnly bool) bool {
	for _, col := range b.cols {
		if !acc.Columns[col] {
			return false
		}
		if keyOnly {
			if _, ok := c.PK.Get(col); !ok {
				return false
			}
		}
	}
	return true
}
