package replication

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/fluxbase/fluxbase/change"
)

// kind is how a column's text value becomes JSON.
type kind uint8

const (
	kindString      kind = iota // a JSON string of the text as PostgreSQL prints it
	kindInt                     // a JSON number, verbatim
	kindFloat                   // a JSON number; NaN and ±Infinity as strings
	kindNumeric                 // a number when float64 holds it exactly, else a string
	kindBool                    // t/f → true/false
	kindJSON                    // json, jsonb: nested as they are
	kindBytea                   // base64 (standard alphabet, padded)
	kindTimestamptz             // RFC 3339 in UTC with a Z
	kindTimestamp               // RFC 3339 without an offset
	kindArray                   // a JSON array of the element type, nested by dimension
)

// pgType is what the decoder needs to know about one type OID.
type pgType struct {
	oid   uint32
	name  string // what Column.Type reports
	kind  kind
	elem  *pgType // for arrays
	delim byte    // element delimiter of an array's text form
}

// kindByName maps the pg_catalog base types that are not JSON strings.
var kindByName = map[string]kind{
	"bool":        kindBool,
	"int2":        kindInt,
	"int4":        kindInt,
	"int8":        kindInt,
	"oid":         kindInt,
	"float4":      kindFloat,
	"float8":      kindFloat,
	"numeric":     kindNumeric,
	"json":        kindJSON,
	"jsonb":       kindJSON,
	"bytea":       kindBytea,
	"timestamptz": kindTimestamptz,
	"timestamp":   kindTimestamp,
}

// builtinTypes are the pg_catalog types whose OIDs are fixed in every
// PostgreSQL installation, so the common case needs no catalog query:
// oid → name, and for arrays the element's oid.
var builtinTypes = []struct {
	oid, elem uint32
	name      string
}{
	{16, 0, "bool"}, {17, 0, "bytea"}, {18, 0, "char"}, {19, 0, "name"},
	{20, 0, "int8"}, {21, 0, "int2"}, {23, 0, "int4"}, {25, 0, "text"},
	{26, 0, "oid"}, {114, 0, "json"}, {142, 0, "xml"}, {650, 0, "cidr"},
	{700, 0, "float4"}, {701, 0, "float8"}, {790, 0, "money"},
	{829, 0, "macaddr"}, {869, 0, "inet"}, {1042, 0, "bpchar"},
	{1043, 0, "varchar"}, {1082, 0, "date"}, {1083, 0, "time"},
	{1114, 0, "timestamp"}, {1184, 0, "timestamptz"}, {1186, 0, "interval"},
	{1266, 0, "timetz"}, {1560, 0, "bit"}, {1562, 0, "varbit"},
	{1700, 0, "numeric"}, {2950, 0, "uuid"}, {3220, 0, "pg_lsn"},
	{3614, 0, "tsvector"}, {3802, 0, "jsonb"}, {4072, 0, "jsonpath"},

	{1000, 16, "_bool"}, {1001, 17, "_bytea"}, {1002, 18, "_char"},
	{1003, 19, "_name"}, {1016, 20, "_int8"}, {1005, 21, "_int2"},
	{1007, 23, "_int4"}, {1009, 25, "_text"}, {1028, 26, "_oid"},
	{199, 114, "_json"}, {143, 142, "_xml"}, {651, 650, "_cidr"},
	{1021, 700, "_float4"}, {1022, 701, "_float8"}, {791, 790, "_money"},
	{1040, 829, "_macaddr"}, {1041, 869, "_inet"}, {1014, 1042, "_bpchar"},
	{1015, 1043, "_varchar"}, {1182, 1082, "_date"}, {1183, 1083, "_time"},
	{1115, 1114, "_timestamp"}, {1185, 1184, "_timestamptz"},
	{1187, 1186, "_interval"}, {1270, 1266, "_timetz"}, {1561, 1560, "_bit"},
	{1563, 1562, "_varbit"}, {1231, 1700, "_numeric"}, {2951, 2950, "_uuid"},
	{3221, 3220, "_pg_lsn"}, {3643, 3614, "_tsvector"}, {3807, 3802, "_jsonb"},
	{4073, 4072, "_jsonpath"},
}

// typeRow is one pg_type row, as far as the decoder cares.
type typeRow struct {
	Name     string
	Type     byte   // typtype: b base, d domain, e enum, c composite, r range, m multirange, p pseudo
	Category byte   // typcategory: A for arrays
	BaseType uint32 // typbasetype, for domains
	Elem     uint32 // typelem
	Delim    byte   // typdelim
}

// typeLookup reads one pg_type row. It is how the decoder learns about a
// type it has not seen (enums, domains, extension types, their arrays).
type typeLookup func(ctx context.Context, oid uint32) (typeRow, error)

var errUnknownType = errors.New("unknown type")

// typeCache maps OIDs to types. A type is looked up once per OID per
// process: OIDs are never reused for another type while the old one exists,
// and enums, domains and arrays keep their meaning across DDL.
type typeCache struct {
	lookup typeLookup

	mu     sync.Mutex
	types  map[uint32]*pgType
	delims map[uint32]byte // element types whose typdelim is not a comma (box)
}

func newTypeCache(lookup typeLookup) *typeCache {
	tc := &typeCache{lookup: lookup, types: make(map[uint32]*pgType, len(builtinTypes))}
	for _, b := range builtinTypes {
		if b.elem == 0 {
			tc.types[b.oid] = &pgType{oid: b.oid, name: b.name, kind: kindByName[b.name]}
		}
	}
	for _, b := range builtinTypes {
		if b.elem != 0 {
			tc.types[b.oid] = &pgType{oid: b.oid, name: b.name, kind: kindArray, elem: tc.types[b.elem], delim: ','}
		}
	}
	return tc
}

// get returns the type of oid, asking the catalog when it is not known. A
// type the catalog cannot describe is treated as text (kindString) with a
// name like "oid:12345", so one odd column never stops the stream.
func (tc *typeCache) get(ctx context.Context, oid uint32) (*pgType, error) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	return tc.resolve(ctx, oid, 0)
}

// resolve is get with tc.mu held; depth guards against a catalog cycle.
func (tc *typeCache) resolve(ctx context.Context, oid uint32, depth int) (*pgType, error) {
	if t, ok := tc.types[oid]; ok {
		return t, nil
	}
	unknown := &pgType{oid: oid, name: "oid:" + strconv.FormatUint(uint64(oid), 10), kind: kindString}
	if tc.lookup == nil || depth > 8 {
		return unknown, nil
	}
	row, err := tc.lookup(ctx, oid)
	if errors.Is(err, errUnknownType) {
		tc.types[oid] = unknown
		return unknown, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up type %d: %w", oid, err)
	}
	t := &pgType{oid: oid, name: row.Name, kind: kindString}
	switch {
	case row.Type == 'd' && row.BaseType != 0:
		// A domain is its base type on the wire and in the contract.
		base, err := tc.resolve(ctx, row.BaseType, depth+1)
		if err != nil {
			return nil, err
		}
		t = base
	case row.Category == 'A' && row.Elem != 0:
		elem, err := tc.resolve(ctx, row.Elem, depth+1)
		if err != nil {
			return nil, err
		}
		t.kind, t.elem, t.delim = kindArray, elem, ','
		if elem.oid != row.Elem {
			// An array of a domain is an array of its base type.
			t.name = "_" + elem.name
		}
		if d, ok := tc.delims[row.Elem]; ok {
			t.delim = d
		}
	case row.Type == 'b':
		t.kind = kindByName[row.Name] // extension base types are strings
	}
	// The delimiter belongs to the element type; remember it for arrays.
	if row.Delim != 0 && row.Delim != ',' {
		if tc.delims == nil {
			tc.delims = make(map[uint32]byte)
		}
		tc.delims[oid] = row.Delim
	}
	tc.types[oid] = t
	return t, nil
}

// appendValue appends the JSON form of a column's text value. Whatever the
// text, the result is valid JSON: text that does not parse as its type says
// (which PostgreSQL never sends) is kept as a JSON string rather than lost.
func appendValue(dst []byte, t *pgType, text []byte, scratch *[]byte) []byte {
	n := len(dst)
	out, ok := appendTyped(dst, t, text, scratch)
	if !ok {
		return change.AppendJSONBytes(dst[:n], text)
	}
	return out
}

func appendTyped(dst []byte, t *pgType, text []byte, scratch *[]byte) ([]byte, bool) {
	switch t.kind {
	case kindInt:
		if !isInteger(text) {
			return dst, false
		}
		return append(dst, text...), true
	case kindFloat:
		if !isJSONNumber(text) {
			// NaN, Infinity and -Infinity have no JSON number.
			return change.AppendJSONBytes(dst, text), true
		}
		return append(dst, text...), true
	case kindNumeric:
		if numericFitsFloat(text) {
			return append(dst, text...), true
		}
		return change.AppendJSONBytes(dst, text), true
	case kindBool:
		switch string(text) {
		case "t":
			return append(dst, "true"...), true
		case "f":
			return append(dst, "false"...), true
		}
		return dst, false
	case kindJSON:
		if !json.Valid(text) {
			return dst, false
		}
		return append(dst, text...), true
	case kindBytea:
		return appendBytea(dst, text)
	case kindTimestamptz:
		return appendTimestamptz(dst, text)
	case kindTimestamp:
		return appendTimestamp(dst, text)
	case kindArray:
		if t.elem == nil {
			return dst, false
		}
		p := arrayParser{text: text, elem: t.elem, delim: t.delim, scratch: scratch}
		return p.parse(dst)
	default:
		return change.AppendJSONBytes(dst, text), true
	}
}

// isInteger reports whether b is an optionally signed run of digits
// without leading zeros — a JSON number.
func isInteger(b []byte) bool {
	if len(b) > 0 && b[0] == '-' {
		b = b[1:]
	}
	if len(b) == 0 || (b[0] == '0' && len(b) > 1) {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// isJSONNumber reports whether b is a number in JSON's grammar.
func isJSONNumber(b []byte) bool {
	i := 0
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i == len(b) || b[i] < '0' || b[i] > '9' {
			return false
		}
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i == len(b) || b[i] < '0' || b[i] > '9' {
			return false
		}
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	}
	return i == len(b)
}

// numericFitsFloat decides how a numeric is sent. It is a JSON number when
// it has at most 15 significant digits and a decimal exponent float64 can
// hold: any such decimal survives a round trip through float64 exactly
// (DBL_DIG is 15), so a JavaScript client reads the value that was stored.
// Anything longer (or NaN, ±Infinity) is a JSON string with every digit.
// The number is written as PostgreSQL printed it, trailing zeros of the
// scale included ("1.50").
func numericFitsFloat(b []byte) bool {
	if !isJSONNumber(b) {
		return false
	}
	if b[0] == '-' {
		b = b[1:]
	}
	digits, first, point := 0, -1, len(b)
	lastNonZero := -1
	for i, c := range b {
		switch {
		case c == '.':
			point = i
		case c == 'e' || c == 'E':
			return false // numeric_out never writes an exponent
		case c != '0':
			if first < 0 {
				first = i
			}
			lastNonZero = i
		}
	}
	if first < 0 {
		return true // zero
	}
	for i := first; i <= lastNonZero; i++ {
		if b[i] != '.' {
			digits++
		}
	}
	if digits > 15 {
		return false
	}
	// Decimal exponent of the leading digit.
	exp := point - first - 1
	if first > point {
		exp = point - first
	}
	return exp >= -307 && exp <= 308
}

// appendBytea turns bytea's hex output (\x0a1b…) into base64. The escape
// format of bytea_output=escape is accepted too, though the reader asks for
// hex.
func appendBytea(dst []byte, text []byte) ([]byte, bool) {
	var raw []byte
	if bytes.HasPrefix(text, []byte(`\x`)) {
		h := text[2:]
		if len(h)%2 != 0 {
			return dst, false
		}
		raw = make([]byte, len(h)/2)
		for i := range raw {
			hi, ok1 := unhex(h[2*i])
			lo, ok2 := unhex(h[2*i+1])
			if !ok1 || !ok2 {
				return dst, false
			}
			raw[i] = hi<<4 | lo
		}
	} else {
		raw = make([]byte, 0, len(text))
		for i := 0; i < len(text); i++ {
			c := text[i]
			if c != '\\' {
				raw = append(raw, c)
				continue
			}
			switch {
			case i+1 < len(text) && text[i+1] == '\\':
				raw = append(raw, '\\')
				i++
			case i+3 < len(text) && isOctal(text[i+1]) && isOctal(text[i+2]) && isOctal(text[i+3]) && text[i+1] <= '3':
				raw = append(raw, (text[i+1]-'0')<<6|(text[i+2]-'0')<<3|(text[i+3]-'0'))
				i += 3
			default:
				return dst, false
			}
		}
	}
	dst = append(dst, '"')
	dst = base64.StdEncoding.AppendEncode(dst, raw)
	return append(dst, '"'), true
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

// appendTimestamptz rewrites ISO output ("2024-01-02 03:04:05.5+00") as
// RFC 3339 in UTC ("2024-01-02T03:04:05.5Z"). The reader's session uses
// TimeZone=UTC, so the offset is +00 and the digits are kept as they are; any
// other offset is converted. infinity, BC dates and years past 9999, which
// RFC 3339 cannot write, stay PostgreSQL's text.
func appendTimestamptz(dst []byte, text []byte) ([]byte, bool) {
	base, off, ok := splitOffset(text)
	if !ok || !isISODateTime(base) {
		return change.AppendJSONBytes(dst, text), true
	}
	if bytes.Equal(off, []byte("+00")) || bytes.Equal(off, []byte("-00")) || bytes.Equal(off, []byte("+00:00")) {
		dst = append(dst, '"')
		dst = append(dst, base[:10]...)
		dst = append(dst, 'T')
		dst = append(dst, base[11:]...)
		return append(dst, 'Z', '"'), true
	}
	layout := "2006-01-02 15:04:05.999999999-07"
	switch len(off) {
	case 6:
		layout += ":00"
	case 9:
		layout += ":00:00"
	}
	ts, err := time.Parse(layout, string(text))
	if err != nil {
		return change.AppendJSONBytes(dst, text), true
	}
	dst = append(dst, '"')
	dst = ts.UTC().AppendFormat(dst, time.RFC3339Nano)
	return append(dst, '"'), true
}

// appendTimestamp writes a timestamp without time zone as RFC 3339 without
// an offset ("2024-01-02T03:04:05.5").
func appendTimestamp(dst []byte, text []byte) ([]byte, bool) {
	if !isISODateTime(text) {
		return change.AppendJSONBytes(dst, text), true
	}
	dst = append(dst, '"')
	dst = append(dst, text[:10]...)
	dst = append(dst, 'T')
	dst = append(dst, text[11:]...)
	return append(dst, '"'), true
}

// splitOffset splits "… 03:04:05.5+05:30" into the date-time and "+05:30".
func splitOffset(text []byte) (base, off []byte, ok bool) {
	// The offset starts at the last sign after the time of day.
	for i := len(text) - 1; i >= 19; i-- {
		if text[i] == '+' || text[i] == '-' {
			return text[:i], text[i:], true
		}
	}
	return nil, nil, false
}

// isISODateTime reports whether b is "YYYY-MM-DD HH:MM:SS" with optional
// fractional seconds.
func isISODateTime(b []byte) bool {
	if len(b) < 19 {
		return false
	}
	const pattern = "dddd-dd-dd dd:dd:dd"
	for i := 0; i < len(pattern); i++ {
		if pattern[i] == 'd' {
			if b[i] < '0' || b[i] > '9' {
				return false
			}
		} else if b[i] != pattern[i] {
			return false
		}
	}
	rest := b[19:]
	if len(rest) == 0 {
		return true
	}
	if rest[0] != '.' || len(rest) == 1 {
		return false
	}
	for _, c := range rest[1:] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// arrayParser turns an array's text form ({1,2,NULL}, {{"a b",c},{d,e}},
// [0:1]={x,y}) into nested JSON arrays, converting each element by the
// element type.
type arrayParser struct {
	text    []byte
	pos     int
	elem    *pgType
	delim   byte
	scratch *[]byte // holds one unquoted element at a time
}

func (p *arrayParser) parse(dst []byte) ([]byte, bool) {
	if len(p.text) > 0 && p.text[0] == '[' {
		// Non-default lower bounds are a prefix "[lo:hi]...=": JSON arrays
		// have none, so it is dropped.
		eq := bytes.IndexByte(p.text, '=')
		if eq < 0 {
			return dst, false
		}
		p.pos = eq + 1
	}
	dst, ok := p.array(dst, 0)
	if !ok || p.pos != len(p.text) {
		return dst, false
	}
	return dst, true
}

func (p *arrayParser) array(dst []byte, depth int) ([]byte, bool) {
	if depth > 6 || p.pos >= len(p.text) || p.text[p.pos] != '{' {
		return dst, false // PostgreSQL allows at most 6 dimensions
	}
	p.pos++
	dst = append(dst, '[')
	if p.pos < len(p.text) && p.text[p.pos] == '}' {
		p.pos++
		return append(dst, ']'), true
	}
	for first := true; ; first = false {
		if !first {
			dst = append(dst, ',')
		}
		var ok bool
		if p.pos < len(p.text) && p.text[p.pos] == '{' {
			dst, ok = p.array(dst, depth+1)
		} else {
			dst, ok = p.element(dst)
		}
		if !ok || p.pos >= len(p.text) {
			return dst, false
		}
		switch p.text[p.pos] {
		case p.delim:
			p.pos++
		case '}':
			p.pos++
			return append(dst, ']'), true
		default:
			return dst, false
		}
	}
}

func (p *arrayParser) element(dst []byte) ([]byte, bool) {
	buf := (*p.scratch)[:0]
	if p.pos < len(p.text) && p.text[p.pos] == '"' {
		p.pos++
		for {
			if p.pos >= len(p.text) {
				return dst, false
			}
			c := p.text[p.pos]
			p.pos++
			if c == '"' {
				break
			}
			if c == '\\' {
				if p.pos >= len(p.text) {
					return dst, false
				}
				c = p.text[p.pos]
				p.pos++
			}
			buf = append(buf, c)
		}
		*p.scratch = buf
		return p.value(dst, buf)
	}
	start := p.pos
	for p.pos < len(p.text) && p.text[p.pos] != p.delim && p.text[p.pos] != '}' {
		c := p.text[p.pos]
		if c == '{' || c == '"' || c == '\\' {
			return dst, false
		}
		p.pos++
	}
	raw := p.text[start:p.pos]
	if len(raw) == 0 {
		return dst, false
	}
	if len(raw) == 4 && (raw[0]|0x20) == 'n' && (raw[1]|0x20) == 'u' && (raw[2]|0x20) == 'l' && (raw[3]|0x20) == 'l' {
		return append(dst, "null"...), true
	}
	return p.value(dst, raw)
}

func (p *arrayParser) value(dst []byte, text []byte) ([]byte, bool) {
	if p.elem.kind == kindArray {
		return dst, false // element types are never arrays
	}
	// Element conversion never needs the scratch buffer again: nested
	// arrays are handled by array(), not by a recursive appendValue.
	var none []byte
	return appendValue(dst, p.elem, text, &none), true
}
