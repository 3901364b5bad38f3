package fanout

// This file is the binding index: schema.table → event → the eq
// condition of the filter, and the scan of the bindings with nothing to
// index on.

type tableKey struct{ schema, table string }

// binding is a Binding in the index.
type binding struct {
	Binding
	ch    *Channel
	eqCol int      // the filter condition the index keys on, or -1
	cols  []string // the columns the filter reads
}

func (b *binding) matchesEvent(ev string) bool { return b.Event == "*" || b.Event == ev }

// tableIndex holds the bindings of one schema.table (or schema-wide, or
// everything) by event.
type tableIndex struct {
	events map[string]*eventIndex // "INSERT", "UPDATE", "DELETE"
	n      int
}

// eventIndex files bindings by the column and canonical value of an eq
// condition; those without one are scanned.
type eventIndex struct {
	scan map[*binding]struct{}
	eq   map[string]map[string]map[*binding]struct{}
}

var allEvents = []string{"INSERT", "UPDATE", "DELETE"}

func normName(s string) string {
	if s == "*" {
		return ""
	}
	return s
}

// addBinding files b; h.mu must be held for writing.
func (h *Hub) addBinding(b *binding) {
	k := tableKey{normName(b.Schema), normName(b.Table)}
	ti := h.tables[k]
	if ti == nil {
		ti = &tableIndex{events: map[string]*eventIndex{}}
		h.tables[k] = ti
	}
	ti.n++
	for _, ev := range allEvents {
		if !b.matchesEvent(ev) {
			continue
		}
		ei := ti.events[ev]
		if ei == nil {
			ei = &eventIndex{scan: map[*binding]struct{}{}, eq: map[string]map[string]map[*binding]struct{}{}}
			ti.events[ev] = ei
		}
		if b.eqCol < 0 {
			ei.scan[b] = struct{}{}
			continue
		}
		c := b.Filter[b.eqCol]
		byVal := ei.eq[c.Column]
		if byVal == nil {
			byVal = map[string]map[*binding]struct{}{}
			ei.eq[c.Column] = byVal
		}
		key := canonKey(c.value)
		set := byVal[key]
		if set == nil {
			set = map[*binding]struct{}{}
			byVal[key] = set
		}
		set[b] = struct{}{}
	}
}

// removeBinding undoes addBinding; h.mu must be held for writing.
func (h *Hub) removeBinding(b *binding) {
	k := tableKey{normName(b.Schema), normName(b.Table)}
	ti := h.tables[k]
	if ti == nil {
		return
	}
	for _, ev := range allEvents {
		ei := ti.events[ev]
		if ei == nil || !b.matchesEvent(ev) {
			continue
		}
		if b.eqCol < 0 {
			delete(ei.scan, b)
			continue
		}
		c := b.Filter[b.eqCol]
		key := canonKey(c.value)
		if set := ei.eq[c.Column][key]; set != nil {
			delete(set, b)
			if len(set) == 0 {
				delete(ei.eq[c.Column], key)
				if len(ei.eq[c.Column]) == 0 {
					delete(ei.eq, c.Column)
				}
			}
		}
	}
	if ti.n--; ti.n == 0 {
		delete(h.tables, k)
	}
}

// tableKeys are the index entries whose bindings a change of
// schema.table may match: those on the table, on every table of its
// schema, on the table in every schema, and on everything.
func tableKeys(schema, table string) [4]tableKey {
	return [...]tableKey{{schema, table}, {schema, ""}, {"", table}, {"", ""}}
}

// match appends to out the bindings that c satisfies; h.mu must be held.
func (h *Hub) match(c *Change, ev string, out []*binding) []*binding {
	look := c.lookup
	for _, k := range tableKeys(c.Schema, c.Table) {
		ti := h.tables[k]
		if ti == nil {
			continue
		}
		ei := ti.events[ev]
		if ei == nil {
			continue
		}
		for b := range ei.scan {
			if b.Filter.Match(look) {
				out = append(out, b)
			}
		}
		for col, byVal := range ei.eq {
			v, ok := look(col)
			if !ok {
				continue
			}
			raw := v.Raw
			if len(raw) == 0 || string(raw) == "null" {
				continue
			}
			for b := range byVal[canonKey(v.text())] {
				if b.Filter.Match(look) {
					out = append(out, b)
				}
			}
		}
		if k.table == "" && k.schema == "" {
			break
		}
	}
	return out
}
