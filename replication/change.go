package replication

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"
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

// LSN is a PostgreSQL log sequence number. In JSON it is PostgreSQL's own
// text form ("16/B374D848"), the form pg_current_wal_lsn() shows, so people
// can paste it into SQL; compare LSN values, not their strings.
type LSN uint64

// String formats the LSN as PostgreSQL does: two hexadecimal halves.
func (l LSN) String() string { return string(l.appendText(nil)) }

func (l LSN) appendText(dst []byte) []byte {
	dst = appendHexUpper(dst, uint32(l>>32))
	dst = append(dst, '/')
	return appendHexUpper(dst, uint32(l))
}

// appendHexUpper writes v in upper-case hex without leading zeros, as
// PostgreSQL prints LSNs.
func appendHexUpper(dst []byte, v uint32) []byte {
	const digits = "0123456789ABCDEF"
	var buf [8]byte
	i := len(buf)
	for {
		i--
		buf[i] = digits[v&0xf]
		v >>= 4
		if v == 0 {
			break
		}
	}
	return append(dst, buf[i:]...)
}

// ParseLSN parses PostgreSQL's text form of an LSN.
func ParseLSN(s string) (LSN, error) {
	i := bytes.IndexByte([]byte(s), '/')
	if i <= 0 || i == len(s)-1 || i > 8 || len(s)-i-1 > 8 {
		return 0, fmt.Errorf("invalid LSN %q", s)
	}
	hi, err1 := strconv.ParseUint(s[:i], 16, 32)
	lo, err2 := strconv.ParseUint(s[i+1:], 16, 32)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("invalid LSN %q", s)
	}
	return LSN(hi<<32 | lo), nil
}

// MarshalJSON writes the LSN as a JSON string in PostgreSQL's text form.
func (l LSN) MarshalJSON() ([]byte, error) {
	b := append(make([]byte, 0, 20), '"')
	return append(l.appendText(b), '"'), nil
}

// UnmarshalJSON reads the form MarshalJSON writes.
func (l *LSN) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("LSN: %w", err)
	}
	v, err := ParseLSN(s)
	if err != nil {
		return err
	}
	*l = v
	return nil
}

// Position is where an event sits in the change log: the commit LSN of its
// transaction and its index within it. Positions order events exactly as
// they were committed, and the pair is the event's message id.
type Position struct {
	CommitLSN LSN
	TxIndex   int
}

// Less reports whether p comes before q in commit order.
func (p Position) Less(q Position) bool {
	if p.CommitLSN != q.CommitLSN {
		return p.CommitLSN < q.CommitLSN
	}
	return p.TxIndex < q.TxIndex
}

// MsgID is the message id of the event at p, "<commit_lsn>/<tx_index>", as
// sent in the Nats-Msg-Id header.
func (p Position) MsgID() string { return string(p.appendMsgID(nil)) }

func (p Position) appendMsgID(dst []byte) []byte {
	dst = p.CommitLSN.appendText(dst)
	dst = append(dst, '/')
	return strconv.AppendInt(dst, int64(p.TxIndex), 10)
}

// ParseMsgID parses a message id written by Position.MsgID.
func ParseMsgID(id string) (Position, error) {
	i := bytes.LastIndexByte([]byte(id), '/')
	if i < 0 {
		return Position{}, fmt.Errorf("invalid change message id %q", id)
	}
	lsn, err := ParseLSN(id[:i])
	if err != nil {
		return Position{}, fmt.Errorf("invalid change message id %q", id)
	}
	n, err := strconv.Atoi(id[i+1:])
	if err != nil || n < 0 {
		return Position{}, fmt.Errorf("invalid change message id %q", id)
	}
	return Position{CommitLSN: lsn, TxIndex: n}, nil
}

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

// Change is one row change: the event of the change contract (DESIGN.md),
// published as one JSON message per change. Decode a message with
// json.Unmarshal into a Change; encode with AppendJSON (or json.Marshal).
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
type Change struct {
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

	// columnsJSON is Columns already encoded, shared by every change of one
	// relation so the hot path does not re-encode it.
	columnsJSON []byte
}

// Position is the change's place in the log.
func (c *Change) Position() Position {
	return Position{CommitLSN: c.CommitLSN, TxIndex: c.TxIndex}
}

// MarshalJSON encodes the change as AppendJSON does.
func (c *Change) MarshalJSON() ([]byte, error) {
	for _, r := range []Row{c.PK, c.Record, c.OldRecord} {
		for _, f := range r {
			if len(f.Value) > 0 && !json.Valid(f.Value) {
				return nil, fmt.Errorf("column %s: invalid JSON value", f.Name)
			}
		}
	}
	return c.AppendJSON(nil), nil
}

// AppendJSON appends the change's JSON encoding to dst. Field values must be
// valid JSON (they are when the change came from this package). tx_last is
// the last key: the reader writes everything else as soon as it decodes a
// change and adds the tail once it knows whether another change follows.
func (c *Change) AppendJSON(dst []byte) []byte {
	dst = c.appendHead(dst)
	return appendTail(dst, c.TxLast)
}

// appendHead writes every key but tx_last, leaving the object open.
func (c *Change) appendHead(dst []byte) []byte {
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
	if c.columnsJSON != nil {
		dst = append(dst, c.columnsJSON...)
	} else {
		dst = appendColumns(dst, c.Columns)
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

func appendTail(dst []byte, last bool) []byte {
	if last {
		return append(dst, `,"tx_last":true}`...)
	}
	return append(dst, `,"tx_last":false}`...)
}

// commitTSLayout is RFC 3339 with exactly microseconds, PostgreSQL's
// precision, in UTC.
const commitTSLayout = "2006-01-02T15:04:05.000000Z07:00"

func appendColumns(dst []byte, cols []Column) []byte {
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

const hexDigits = "0123456789abcdef"

// noEscape marks the ASCII bytes that appear in a JSON string as they are.
var noEscape = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// AppendJSONString appends s as a JSON string. Invalid UTF-8 becomes
// U+FFFD, as encoding/json does, so the output is always valid JSON even
// from a database in SQL_ASCII. The realtime encoder shares it.
func AppendJSONString(dst []byte, s string) []byte {
	return appendEscaped(dst, s, utf8.DecodeRuneInString)
}

// appendJSONBytes is AppendJSONString for a value still in its wire buffer.
func appendJSONBytes(dst []byte, s []byte) []byte {
	return appendEscaped(dst, s, utf8.DecodeRune)
}

func appendEscaped[T string | []byte](dst []byte, s T, decode func(T) (rune, int)) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if noEscape[c] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := decode(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
