package fanout

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/fluxbase/fluxbase/change"
)

// This file decodes the change event of DESIGN.md ("The change event") as
// the hub needs it. Rows are the contract's change.Row: column values
// kept as raw JSON, in column order.

// Column is a column of a changed table: its name and type name.
type Column struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// Change is one decoded change event, with its position in the log.
type Change struct {
	Seq       uint64     `json:"-"`
	CommitTS  time.Time  `json:"commit_ts"`
	Schema    string     `json:"schema"`
	Table     string     `json:"table"`
	Op        string     `json:"op"`
	PK        change.Row `json:"pk"`
	Record    change.Row `json:"record"`
	OldRecord change.Row `json:"old_record"`
	Columns   []Column   `json:"columns"`

	// texts caches column values as text for filters; only the goroutine
	// matching the change uses it.
	texts map[string]string
}

// DecodeChange decodes one message of the change stream.
func DecodeChange(seq uint64, data []byte) (*Change, error) {
	c := &Change{Seq: seq}
	if err := json.Unmarshal(data, c); err != nil {
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
