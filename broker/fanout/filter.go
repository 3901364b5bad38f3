package fanout

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// This file is the filter grammar of postgres_changes bindings, as
// realtime-js builds it: "col=op.value" conditions, comma-separated and
// AND-combined; op one of eq neq lt lte gt gte in like ilike is match
// imatch isdistinct, optionally prefixed by "not."; values may be
// double-quoted with backslash escapes (needed for , ( ) " \ and outer
// spaces); in takes a parenthesised list "(a,b,"c,d")".
//
// Evaluation follows SQL where it can: a comparison with NULL (or with a
// column the change does not carry) is unknown, and unknown is never a
// match, negated or not; values compare by the column's type (numbers
// exactly, times as instants, booleans, text byte-wise).

type opKind uint8

const (
	opEq opKind = iota + 1
	opNeq
	opLt
	opLte
	opGt
	opGte
	opIn
	opLike
	opIlike
	opIs
	opMatch
	opImatch
	opIsDistinct
)

var opNames = map[string]opKind{
	"eq": opEq, "neq": opNeq, "lt": opLt, "lte": opLte, "gt": opGt, "gte": opGte,
	"in": opIn, "like": opLike, "ilike": opIlike, "is": opIs, "match": opMatch,
	"imatch": opImatch, "isdistinct": opIsDistinct,
}

// Cond is one condition of a filter.
type Cond struct {
	Column string
	op     opKind
	not    bool
	value  string   // the unquoted value
	list   []string // the unquoted values of in
	re     *regexp.Regexp
	isVal  string // is: null, true, false or unknown
}

// Filter is the AND of its conditions; the empty filter matches every row.
type Filter []Cond

// MaxFilterLen bounds a filter string.
const MaxFilterLen = 4096

// ParseFilter parses a binding's filter string.
func ParseFilter(s string) (Filter, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	if len(s) > MaxFilterLen {
		return nil, fmt.Errorf("filter longer than %d bytes", MaxFilterLen)
	}
	parts, err := splitTop(s)
	if err != nil {
		return nil, err
	}
	f := make(Filter, 0, len(parts))
	for _, part := range parts {
		c, err := parseCond(part)
		if err != nil {
			return nil, err
		}
		f = append(f, c)
	}
	return f, nil
}

// splitTop splits s on commas outside double quotes and parentheses.
func splitTop(s string) ([]string, error) {
	var parts []string
	depth, start := 0, 0
	inQuote := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inQuote && c == '\\':
			i++
		case c == '"':
			inQuote = !inQuote
		case inQuote:
		case c == '(':
			depth++
		case c == ')':
			if depth == 0 {
				return nil, fmt.Errorf("filter %q: unbalanced ')'", s)
			}
			depth--
		case c == ',' && depth == 0:
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	if inQuote {
		return nil, fmt.Errorf("filter %q: unterminated quote", s)
	}
	if depth != 0 {
		return nil, fmt.Errorf("filter %q: unbalanced '('", s)
	}
	return append(parts, s[start:]), nil
}

func parseCond(part string) (Cond, error) {
	col, rest, ok := strings.Cut(part, "=")
	col = strings.TrimSpace(col)
	if !ok || col == "" {
		return Cond{}, fmt.Errorf("filter condition %q: want column=operator.value", part)
	}
	if uq, err := unquote(col); err == nil {
		col = uq
	}
	c := Cond{Column: col}
	if r, ok := strings.CutPrefix(rest, "not."); ok {
		c.not, rest = true, r
	}
	name, val, ok := strings.Cut(rest, ".")
	if !ok {
		return Cond{}, fmt.Errorf("filter condition %q: want column=operator.value", part)
	}
	c.op = opNames[name]
	if c.op == 0 {
		return Cond{}, fmt.Errorf("filter condition %q: unknown operator %q (want eq, neq, lt, lte, gt, gte, in, like, ilike, is, match, imatch or isdistinct)", part, name)
	}
	switch c.op {
	case opIn:
		inner, ok := strings.CutPrefix(val, "(")
		if ok {
			inner, ok = strings.CutSuffix(inner, ")")
		}
		if !ok {
			return Cond{}, fmt.Errorf("filter condition %q: in wants a list such as in.(a,b)", part)
		}
		items, err := splitTop(inner)
		if err != nil {
			return Cond{}, fmt.Errorf("filter condition %q: %w", part, err)
		}
		for _, it := range items {
			v, err := unquote(strings.TrimSpace(it))
			if err != nil {
				return Cond{}, fmt.Errorf("filter condition %q: %w", part, err)
			}
			c.list = append(c.list, v)
		}
		return c, nil
	case opIs:
		v := strings.ToLower(val)
		switch v {
		case "null", "true", "false", "unknown":
			c.isVal = v
			return c, nil
		}
		return Cond{}, fmt.Errorf("filter condition %q: is wants null, true, false or unknown", part)
	}
	v, err := unquote(val)
	if err != nil {
		return Cond{}, fmt.Errorf("filter condition %q: %w", part, err)
	}
	c.value = v
	switch c.op {
	case opLike, opIlike:
		c.re, err = likeRegexp(v, c.op == opIlike)
	case opMatch:
		c.re, err = regexp.Compile(v)
	case opImatch:
		c.re, err = regexp.Compile("(?i)" + v)
	}
	if err != nil {
		return Cond{}, fmt.Errorf("filter condition %q: bad pattern: %w", part, err)
	}
	return c, nil
}

// unquote removes PostgREST-style double quotes (with \" and \\ escapes)
// from a value; an unquoted value is returned as it is.
func unquote(v string) (string, error) {
	if len(v) < 2 || v[0] != '"' {
		if strings.HasPrefix(v, `"`) {
			return "", errors.New("unterminated quote")
		}
		return v, nil
	}
	if v[len(v)-1] != '"' {
		return "", errors.New("text after a closing quote")
	}
	var b strings.Builder
	for i := 1; i < len(v)-1; i++ {
		c := v[i]
		if c == '\\' && i+1 < len(v)-1 {
			i++
			c = v[i]
		} else if c == '"' {
			return "", errors.New("unescaped quote inside a quoted value")
		}
		b.WriteByte(c)
	}
	return b.String(), nil
}

// likeRegexp translates a SQL LIKE pattern: % any run, _ any one
// character, backslash escapes the next character.
func likeRegexp(p string, fold bool) (*regexp.Regexp, error) {
	var b strings.Builder
	b.WriteString("(?s)^")
	if fold {
		b.WriteString("(?i)")
	}
	for i := 0; i < len(p); i++ {
		switch c := p[i]; c {
		case '%':
			b.WriteString(".*")
		case '_':
			b.WriteByte('.')
		case '\\':
			if i+1 < len(p) {
				i++
			}
			b.WriteString(regexp.QuoteMeta(p[i : i+1]))
		default:
			b.WriteString(regexp.QuoteMeta(p[i : i+1]))
		}
	}
	b.WriteByte('$')
	return regexp.Compile(b.String())
}

// Columns reports every column the filter reads.
func (f Filter) Columns() []string {
	cols := make([]string, 0, len(f))
	for _, c := range f {
		cols = append(cols, c.Column)
	}
	return cols
}

// Value is a column value as a filter sees it: raw JSON and the column's
// PostgreSQL type name.
type Value struct {
	Raw  json.RawMessage
	Type string
	// Text, when HasText, is the value as text (what textOf returns),
	// computed once per change and column rather than once per condition.
	Text    string
	HasText bool
}

func (v Value) text() string {
	if v.HasText {
		return v.Text
	}
	return textOf(v.Raw)
}

// Match reports whether the row, read through get, satisfies every
// condition.
func (f Filter) Match(get func(col string) (Value, bool)) bool {
	for i := range f {
		v, ok := get(f[i].Column)
		if !ok || !f[i].eval(v) {
			return false
		}
	}
	return true
}

func (c *Cond) eval(v Value) bool {
	raw := bytes.TrimSpace(v.Raw)
	isNull := len(raw) == 0 || string(raw) == "null"
	switch c.op {
	case opIs:
		var r bool
		switch c.isVal {
		case "null", "unknown":
			r = isNull
		case "true":
			r = string(raw) == "true" || v.text() == "t"
		case "false":
			r = string(raw) == "false" || v.text() == "f"
		}
		return r != c.not
	case opIsDistinct:
		var distinct bool
		if isNull {
			distinct = !strings.EqualFold(c.value, "null")
		} else if strings.EqualFold(c.value, "null") {
			distinct = true
		} else {
			cmp, ok := compare(raw, v.text(), v.Type, c.value)
			distinct = !ok || cmp != 0
		}
		return distinct != c.not
	}
	if isNull {
		return false // unknown
	}
	var r, ok bool
	switch c.op {
	case opEq, opNeq, opLt, opLte, opGt, opGte:
		var cmp int
		cmp, ok = compare(raw, v.text(), v.Type, c.value)
		switch c.op {
		case opEq:
			r = cmp == 0
		case opNeq:
			r = cmp != 0
		case opLt:
			r = cmp < 0
		case opLte:
			r = cmp <= 0
		case opGt:
			r = cmp > 0
		case opGte:
			r = cmp >= 0
		}
	case opIn:
		for _, item := range c.list {
			if strings.EqualFold(item, "null") {
				continue
			}
			if cmp, k := compare(raw, v.text(), v.Type, item); k {
				ok = true
				if cmp == 0 {
					r = true
					break
				}
			}
		}
	case opLike, opIlike, opMatch, opImatch:
		ok = true
		r = c.re.MatchString(v.text())
	}
	if !ok {
		return false // incomparable: SQL would reject it; never a match
	}
	return r != c.not
}

// textOf is a JSON value as text: a string's contents, anything else as
// written.
func textOf(raw []byte) string {
	if len(raw) > 0 && raw[0] == '"' {
		if bytes.IndexByte(raw, '\\') < 0 && len(raw) >= 2 {
			return string(raw[1 : len(raw)-1])
		}
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s
		}
	}
	return string(raw)
}

type typeClass uint8

const (
	classText typeClass = iota
	classNumber
	classTime
	classBool
)

func classify(typ string) typeClass {
	switch strings.TrimPrefix(typ, "_") {
	case "int2", "int4", "int8", "float4", "float8", "numeric", "oid", "smallint", "integer", "bigint", "real", "double precision":
		return classNumber
	case "timestamp", "timestamptz", "date", "time", "timetz":
		return classTime
	case "bool", "boolean":
		return classBool
	}
	return classText
}

// compare orders the row value raw (of column type typ) against the
// filter's text; ok is false when they cannot be compared.
func compare(raw []byte, text, typ, filter string) (int, bool) {
	class := classify(typ)
	if typ == "" { // no type known: infer from the JSON
		switch {
		case raw[0] == 't' || raw[0] == 'f':
			class = classBool
		case raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9':
			class = classNumber
		}
	}
	switch class {
	case classNumber:
		return compareNumbers(text, filter)
	case classBool:
		a, ok1 := parseBool(text)
		b, ok2 := parseBool(filter)
		if !ok1 || !ok2 {
			return 0, false
		}
		return boolInt(a) - boolInt(b), true
	case classTime:
		a, ok1 := parseTime(text)
		b, ok2 := parseTime(filter)
		if ok1 && ok2 {
			return a.Compare(b), true
		}
	}
	return strings.Compare(text, filter), true
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func compareNumbers(a, b string) (int, bool) {
	if x, err := strconv.ParseInt(a, 10, 64); err == nil {
		if y, err := strconv.ParseInt(b, 10, 64); err == nil {
			switch {
			case x < y:
				return -1, true
			case x > y:
				return 1, true
			}
			return 0, true
		}
	}
	x, ok1 := new(big.Rat).SetString(a)
	y, ok2 := new(big.Rat).SetString(b)
	if !ok1 || !ok2 {
		return 0, false
	}
	return x.Cmp(y), true
}

func parseBool(s string) (bool, bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "t", "true", "y", "yes", "on", "1":
		return true, true
	case "f", "false", "n", "no", "off", "0":
		return false, true
	}
	return false, false
}

var timeLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999Z07",
	"2006-01-02T15:04:05.999999999Z07",
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05.999999999",
	"2006-01-02",
	"15:04:05.999999999",
	"15:04:05.999999999Z07:00",
	"15:04:05.999999999Z07",
}

func parseTime(s string) (time.Time, bool) {
	s = strings.TrimSpace(s)
	for _, l := range timeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// eqIndexCond returns the index of the first eq condition that the filter
// index can key on, or -1.
func (f Filter) eqIndexCond() int {
	for i, c := range f {
		if c.op == opEq && !c.not {
			return i
		}
	}
	return -1
}

// canonKey maps a value's text to the key the eq index files it under.
// The same function serves the filter's text and the row's value, so
// equal texts always meet; it also folds the spellings PostgreSQL treats
// as equal (5 and 5.0, true and t, two spellings of one instant, upper-
// and lower-case uuids) so typed equality is not missed. The index only
// proposes candidates: the full condition is evaluated on each.
func canonKey(text string) string {
	if len(text) > 0 && len(text) < 64 {
		switch strings.ToLower(text) {
		case "t", "true":
			return "btrue"
		case "f", "false":
			return "bfalse"
		}
		c := text[0]
		if c == '-' || c == '+' || c == '.' || c >= '0' && c <= '9' {
			if _, err := strconv.ParseInt(text, 10, 64); err == nil && c != '+' && (len(text) == 1 || text[0] != '0') && text != "-0" {
				return "n" + text
			}
			if r, ok := new(big.Rat).SetString(text); ok {
				return "n" + r.RatString()
			}
			if t, ok := parseTime(text); ok {
				return "t" + strconv.FormatInt(t.UnixNano(), 10)
			}
		}
		if len(text) == 36 && text[8] == '-' && text[13] == '-' {
			return "s" + strings.ToLower(text)
		}
	}
	return "s" + text
}
