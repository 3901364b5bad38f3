package fanout

import (
	"encoding/json"
	"fmt"

	"github.com/fluxbase/fluxbase/change"
)

// This file decodes the change events of the log (package change) as the
// hub needs them.

// Change is one change event of the log as the hub holds it: the
// contract's event, its sequence in the log, and the text of the column
// values filters looked at.
//
// The hub decodes only the keys it reads: commit_ts, schema, table, op,
// pk, record, old_record and columns. The others (commit_lsn, lsn, xid,
// tx_index, tx_last, unchanged_toast, omitted_columns) are skipped
// unparsed and their fields left zero, so a change costs no more to decode
// than the hub needs of it.
type Change struct {
	change.Event
	Seq uint64

	// texts caches column values as text for filters, and imgs the row
	// images made for checks; only the goroutine dispatching the change
	// uses them.
	texts map[string]string
	imgs  []cachedImage
}

// cachedImage is a row image of the change as one rule reads it.
type cachedImage struct {
	p   *Policy
	old bool
	js  json.RawMessage
	ok  bool
}

// hubEvent is what DecodeChange unmarshals: the event, with the keys the
// hub does not read shadowed by fields that skip them.
type hubEvent struct {
	*change.Event
	CommitLSN      skipped `json:"commit_lsn"`
	LSN            skipped `json:"lsn"`
	XID            skipped `json:"xid"`
	TxIndex        skipped `json:"tx_index"`
	TxLast         skipped `json:"tx_last"`
	UnchangedToast skipped `json:"unchanged_toast"`
	OmittedColumns skipped `json:"omitted_columns"`
}

// skipped is a JSON value left unread.
type skipped struct{}

func (*skipped) UnmarshalJSON([]byte) error { return nil }

// DecodeChange decodes one message of the change stream.
func DecodeChange(seq uint64, data []byte) (*Change, error) {
	// One allocation holds both the change and the view it is decoded by.
	d := &struct {
		c Change
		w hubEvent
	}{c: Change{Seq: seq}}
	c := &d.c
	d.w.Event = &c.Event
	if err := json.Unmarshal(data, &d.w); err != nil {
		return nil, fmt.Errorf("decode change %d: %w", seq, err)
	}
	if c.Schema == "" || c.Table == "" {
		return nil, fmt.Errorf("decode change %d: no schema or table", seq)
	}
	return c, nil
}

// event is the Supabase event type of the change; "" for operations
// postgres_changes does not carry (truncate).
func (c *Change) event() string {
	switch c.Op {
	case "insert", "INSERT":
		return "INSERT"
	case "update", "UPDATE":
		return "UPDATE"
	case "delete", "DELETE":
		return "DELETE"
	}
	return ""
}

// filterRow is the row filters are evaluated on: the new row, or the old
// one for a delete. An update's unchanged TOAST columns are absent from
// the new row; the old row supplies them when it has them.
func (c *Change) lookup(name string) (Value, bool) {
	var raw json.RawMessage
	var ok bool
	if c.event() == "DELETE" {
		raw, ok = c.OldRecord.Get(name)
	} else {
		raw, ok = c.Record.Get(name)
		if !ok {
			raw, ok = c.OldRecord.Get(name)
		}
	}
	if !ok {
		return Value{}, false
	}
	if c.texts == nil {
		c.texts = make(map[string]string, len(c.Columns))
	}
	t, ok := c.texts[name]
	if !ok {
		t = textOf(raw)
		c.texts[name] = t
	}
	return Value{Raw: raw, Type: c.columnType(name), Text: t, HasText: true}, true
}

func (c *Change) columnType(name string) string {
	for i := range c.Columns {
		if c.Columns[i].Name == name {
			return c.Columns[i].Type
		}
	}
	return ""
}

// commitTimestamp is Supabase's form: UTC with milliseconds.
func (c *Change) commitTimestamp() string {
	return c.CommitTS.UTC().Format("2006-01-02T15:04:05.000Z")
}

// image returns the row image of the change that a check by rule p
// judges, encoded for the Authorizer: the new row of an insert or update
// (an update's unchanged TOAST columns, absent from it, taken from the
// old row when that has them), or the old row of an update or delete;
// only the columns p reads, or every column the row has when p is nil or
// reads the whole row. ok is false when the image cannot be judged: the
// change has no such row (an insert's old one, a delete's new one), or it
// lacks a column p reads (the replica identity did not log it, or the
// event left a large value out). With p nil no old row is judged, since
// nobody says what it would need.
func (c *Change) image(p *Policy, old bool) (js json.RawMessage, ok bool) {
	for _, im := range c.imgs {
		if im.p == p && im.old == old {
			return im.js, im.ok
		}
	}
	js, ok = c.makeImage(p, old)
	c.imgs = append(c.imgs, cachedImage{p, old, js, ok})
	return js, ok
}

func (c *Change) makeImage(p *Policy, old bool) (json.RawMessage, bool) {
	var row change.Row
	switch {
	case old:
		if p == nil || c.OldRecord == nil {
			return nil, false
		}
		row = c.OldRecord
	case c.event() == "DELETE":
		return nil, false
	default:
		row = c.Record
		for _, f := range c.OldRecord {
			if _, ok := row.Get(f.Name); !ok {
				row = append(row[:len(row):len(row)], f)
			}
		}
	}
	if p == nil {
		return row.AppendObject(nil, nil), true
	}
	if p.WholeRow {
		for _, col := range c.Columns {
			if _, ok := row.Get(col.Name); !ok {
				return nil, false
			}
		}
		return row.AppendObject(nil, nil), true
	}
	keep := make(map[string]bool, len(p.Columns))
	for _, col := range p.Columns {
		if _, ok := row.Get(col); !ok {
			return nil, false
		}
		keep[col] = true
	}
	return row.AppendObject(nil, keep), true
}

// oldKey is the key of the row before the change: its primary-key
// columns, with the old values where the old row has them (an update that
// changed the key).
func (c *Change) oldKey() change.Row {
	if c.OldRecord == nil {
		return c.PK
	}
	key := make(change.Row, 0, len(c.PK))
	for _, f := range c.PK {
		if v, ok := c.OldRecord.Get(f.Name); ok {
			f.Value = v
		}
		key = append(key, f)
	}
	return key
}
