package change

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Op is the kind of a row change.
type Op string

// The operations of the change contract.
const (
	OpInsert   Op = "insert"
	OpUpdate   Op = "update"
	OpDelete   Op = "delete"
	OpTruncate Op = "truncate"
)

// Column names one column of the changed table and its type: the name of
// its PostgreSQL type as pg_type spells it (int4, text, _int4, timestamptz;
// an enum's own name; a domain's base type).
type Column struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// Field is one column value of a row. Value is the value as JSON, already
// typed from the column's type (see the package documentation for the
// mapping); decode it with json.Unmarshal when you need it as a Go value.
type Field struct {
	Name  string
	Value json.RawMessage
}

// Row is a row as an ordered list of fields, in the table's column order.
// It is a JSON object on the wire; a nil Row is JSON null. Keeping values as
// raw JSON lets a consumer forward a row without decoding it and decode only
// the columns it filters on.
type Row []Field

// Get returns the value of the named column.
func (r Row) Get(name string) (json.RawMessage, bool) {
	for _, f := range r {
		if f.Name == name {
			return f.Value, true
		}
	}
	return nil, false
}

// Map decodes the row into a map. Numbers become json.Number, so integers
// and numerics keep every digit.
func (r Row) Map() (map[string]any, error) {
	if r == nil {
		return nil, nil
	}
	m := make(map[string]any, len(r))
	for _, f := range r {
		d := json.NewDecoder(bytes.NewReader(f.Value))
		d.UseNumber()
		var v any
		if err := d.Decode(&v); err != nil {
			return nil, fmt.Errorf("column %s: %w", f.Name, err)
		}
		m[f.Name] = v
	}
	return m, nil
}

// MarshalJSON writes the row as a JSON object in column order.
func (r Row) MarshalJSON() ([]byte, error) {
	for _, f := range r {
		if !json.Valid(f.Value) {
			return nil, fmt.Errorf("column %s: invalid JSON value", f.Name)
		}
	}
	return r.appendJSON(nil), nil
}

func (r Row) appendJSON(dst []byte) []byte {
	if r == nil {
		return append(dst, "null"...)
	}
	return r.AppendObject(dst, nil)
}

// AppendObject appends the row as a JSON object of the columns keep
// allows (every column when keep is nil), in column order; a nil row is
// the empty object.
func (r Row) AppendObject(dst []byte, keep map[string]bool) []byte {
	dst = append(dst, '{')
	first := true
	for _, f := range r {
		if keep != nil && !keep[f.Name] {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = AppendJSONString(dst, f.Name)
		dst = append(dst, ':')
		if len(f.Value) == 0 {
			dst = append(dst, "null"...)
		} else {
			dst = append(dst, f.Value...)
		}
	}
	return append(dst, '}')
}

// UnmarshalJSON reads a JSON object (or null) keeping the order of its keys.
func (r *Row) UnmarshalJSON(b []byte) error {
	d := json.NewDecoder(bytes.NewReader(b))
	tok, err := d.Token()
	if err != nil {
		return fmt.Errorf("row: %w", err)
	}
	if tok == nil {
		*r = nil
		return nil
	}
	if tok != json.Delim('{') {
		return errors.New("row: not a JSON object")
	}
	row := Row{}
	for d.More() {
		tok, err := d.Token()
		if err != nil {
			return fmt.Errorf("row: %w", err)
		}
		name, ok := tok.(string)
		if !ok {
			return errors.New("row: object key is not a string")
		}
		var v json.RawMessage
		if err := d.Decode(&v); err != nil {
			return fmt.Errorf("row: column %s: %w", name, err)
		}
		row = append(row, Field{Name: name, Value: v})
	}
	if _, err := d.Token(); err != nil {
		return fmt.Errorf("row: %w", err)
	}
	*r = row
	return nil
}

// Event is one row change: the event of the change contract, published as
// one JSON message per change. Decode a message with json.Unmarshal into
// an Event; encode with AppendJSON (or json.Marshal).
//
// Every field is always present in the JSON (null or [] when empty) except
// omitted_columns.
//
// For insert, Record is the new row and OldRecord is nil. For update,
// Record is the new row and OldRecord is what the table's REPLICA IDENTITY
// makes PostgreSQL log: the whole old row with FULL, the old key columns
// when the key changed with DEFAULT or USING INDEX, and nil otherwise. For
// delete, Record is nil and OldRecord is the old row (FULL) or its identity
// columns. For truncate all three rows are nil.
//
// PK holds the primary-key columns of the row (of Record for insert and
// update, of OldRecord for delete); a table without a primary key uses its
// replica identity index, and a table with neither has an empty PK.
//
// A column whose value is stored out of line (TOAST) and did not change in
// an update is not sent by PostgreSQL: it is absent from Record and its
// name is in UnchangedToast. With REPLICA IDENTITY FULL, OldRecord holds
// its (unchanged) value.
type Event struct {
	CommitLSN      LSN       `json:"commit_lsn"`
	LSN            LSN       `json:"lsn"`
	XID            uint32    `json:"xid"`
	CommitTS       time.Time `json:"commit_ts"`
	TxIndex        int       `json:"tx_index"`
	TxLast         bool      `json:"tx_last"`
	Schema         string    `json:"schema"`
	Table          string    `json:"table"`
	Op             Op        `json:"op"`
	PK             Row       `json:"pk"`
	Record         Row       `json:"record"`
	OldRecord      Row       `json:"old_record"`
	Columns        []Column  `json:"columns"`
	UnchangedToast []string  `json:"unchanged_toast"`
	// OmittedColumns names columns whose values were left out of Record and
	// OldRecord because the event would not fit in a log message (the
	// broker's maximum payload); the key is absent otherwise. Read such rows
	// from the table.
	OmittedColumns []string `json:"omitted_columns,omitempty"`
}

// Position is the event's place in the log.
func (c *Event) Position() Position {
	return Position{CommitLSN: c.CommitLSN, TxIndex: c.TxIndex}
}

// MarshalJSON encodes the event as AppendJSON does.
func (c *Event) MarshalJSON() ([]byte, error) {
	for _, r := range []Row{c.PK, c.Record, c.OldRecord} {
		for _, f := range r {
			if len(f.Value) > 0 && !json.Valid(f.Value) {
				return nil, fmt.Errorf("column %s: invalid JSON value", f.Name)
			}
		}
	}
	return c.AppendJSON(nil), nil
}

// AppendJSON appends the event's JSON encoding to dst. Field values must be
// valid JSON (they are when the event was decoded from JSON or written by
// the replication reader).
func (c *Event) AppendJSON(dst []byte) []byte {
	dst = c.AppendJSONHead(dst, nil)
	return AppendJSONTail(dst, c.TxLast)
}

// AppendJSONHead appends every key of the event's encoding but tx_last,
// which is the last key, leaving the object open; AppendJSONTail closes it.
// The replication reader writes the head as soon as it decodes a change and
// adds the tail once it knows whether another change of the transaction
// follows. columns, when not nil, is c.Columns already encoded by
// AppendColumns (shared by every event of one table, so the hot path does
// not re-encode it); nil encodes c.Columns.
func (c *Event) AppendJSONHead(dst, columns []byte) []byte {
	dst = append(dst, `{"commit_lsn":"`...)
	dst = c.CommitLSN.appendText(dst)
	dst = append(dst, `","lsn":"`...)
	dst = c.LSN.appendText(dst)
	dst = append(dst, `","xid":`...)
	dst = strconv.AppendUint(dst, uint64(c.XID), 10)
	dst = append(dst, `,"commit_ts":"`...)
	dst = c.CommitTS.UTC().AppendFormat(dst, commitTSLayout)
	dst = append(dst, `","tx_index":`...)
	dst = strconv.AppendInt(dst, int64(c.TxIndex), 10)
	dst = append(dst, `,"schema":`...)
	dst = AppendJSONString(dst, c.Schema)
	dst = append(dst, `,"table":`...)
	dst = AppendJSONString(dst, c.Table)
	dst = append(dst, `,"op":`...)
	dst = AppendJSONString(dst, string(c.Op))
	dst = append(dst, `,"pk":`...)
	dst = c.PK.appendJSON(dst)
	dst = append(dst, `,"record":`...)
	dst = c.Record.appendJSON(dst)
	dst = append(dst, `,"old_record":`...)
	dst = c.OldRecord.appendJSON(dst)
	dst = append(dst, `,"columns":`...)
	if columns != nil {
		dst = append(dst, columns...)
	} else {
		dst = AppendColumns(dst, c.Columns)
	}
	dst = append(dst, `,"unchanged_toast":`...)
	dst = appendStrings(dst, c.UnchangedToast)
	if len(c.OmittedColumns) > 0 {
		dst = append(dst, `,"omitted_columns":`...)
		dst = appendStrings(dst, c.OmittedColumns)
	}
	return dst
}

func appendStrings(dst []byte, list []string) []byte {
	dst = append(dst, '[')
	for i, s := range list {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = AppendJSONString(dst, s)
	}
	return append(dst, ']')
}

// AppendJSONTail closes an encoding begun by AppendJSONHead with the
// tx_last key.
func AppendJSONTail(dst []byte, last bool) []byte {
	if last {
		return append(dst, `,"tx_last":true}`...)
	}
	return append(dst, `,"tx_last":false}`...)
}

// commitTSLayout is RFC 3339 with exactly microseconds, PostgreSQL's
// precision, in UTC.
const commitTSLayout = "2006-01-02T15:04:05.000000Z07:00"

// AppendColumns appends cols as the JSON array of the columns key.
func AppendColumns(dst []byte, cols []Column) []byte {
	dst = append(dst, '[')
	for i, col := range cols {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"name":`...)
		dst = AppendJSONString(dst, col.Name)
		dst = append(dst, `,"type":`...)
		dst = AppendJSONString(dst, col.Type)
		dst = append(dst, '}')
	}
	return append(dst, ']')
}
