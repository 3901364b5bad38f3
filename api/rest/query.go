package rest

import (
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
)

// This file parses PostgREST's URL grammar into a restQuery: the select
// list, the filters (column=op.value, and the or/and logic trees), order,
// limit and offset, on_conflict and columns. It only parses; rest_sql.go
// turns the result into SQL, where every name is quoted and every value is
// a parameter.

// field is a column, optionally followed by a JSON path: data->a->>b.
type field struct {
	column string
	path   []pathStep
}

type pathStep struct {
	key  string
	text bool // ->> rather than ->
}

// selectItem is one entry of select=: *, a field with an optional alias
// and cast, or an embedded resource.
type selectItem struct {
	star  bool
	f     field
	alias string
	cast  string
	embed *embed
}

// embed is a related table in select=: [alias:]table[!hint](items). The
// relationship (a foreign key either way) is found in the catalog before
// the statement is built.
type embed struct {
	table string
	hint  string // a foreign key's name, or a column of it, to choose between several
	items []selectItem
	rel   *relationship
}

// relationship joins an embedded table (_e) to the row it hangs from (the
// enclosing alias): to many rows when the foreign key is the embedded
// table's, else to one.
type relationship struct {
	target string      // the quoted, schema-qualified table
	on     [][2]string // pairs of (embedded column, enclosing column)
	many   bool
}

// embedOpts are the filters, order and paging an embedded resource takes
// from parameters named after it: comments.approved=eq.true,
// comments.order=id.desc, comments.limit=3.
type embedOpts struct {
	where  []filter
	order  []orderTerm
	limit  int
	offset int
}

// condition is a leaf of a filter: field [not.]op.value.
type condition struct {
	f      field
	op     string
	not    bool
	value  string   // the operand, except for in
	list   []string // in's values
	config string   // the text search configuration of fts, plfts, phfts and wfts
}

// filter is a condition or a logic tree of filters.
type filter struct {
	cond     *condition
	or       bool // a tree: or rather than and
	not      bool
	children []filter
}

type orderTerm struct {
	f     field
	desc  bool
	nulls string // "", "first" or "last"
}

type restQuery struct {
	selects    []selectItem // nil means *
	where      []filter     // all must hold
	order      []orderTerm
	limit      int // -1 when absent
	offset     int
	onConflict []string
	columns    []string
	embeds     map[string]*embedOpts // by path: "comments", "comments.author"
	lim        grammarLimits
}

// embedOptsFor returns the options of the embedded resource at path.
func (q *restQuery) embedOptsFor(path string) *embedOpts {
	if q.embeds == nil {
		q.embeds = map[string]*embedOpts{}
	}
	o := q.embeds[path]
	if o == nil {
		o = &embedOpts{limit: -1}
		q.embeds[path] = o
	}
	return o
}

// Operators with one operand, and their SQL.
var restOps = map[string]string{
	"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<=",
	"like": "like", "ilike": "ilike", "match": "~", "imatch": "~*",
	"cs": "@>", "cd": "<@", "ov": "&&", "isdistinct": "is distinct from",
	"fts": "@@", "plfts": "@@", "phfts": "@@", "wfts": "@@",
}

// isValues are the operands is accepts.
var isValues = map[string]string{"null": "null", "not_null": "not null", "true": "true", "false": "false", "unknown": "unknown"}

// castPattern is what a cast in select= may name: a plain type name, which
// is written into the SQL unquoted.
var castPattern = regexp.MustCompile(`^[a-z_][a-z0-9_]*(\[\])?$`)

// parseError is a malformed request, reported as PostgREST's PGRST100.
type parseError struct{ msg, details string }

func (e *parseError) Error() string { return e.msg }

func parseErr(msg string, args ...any) *parseError {
	return &parseError{msg: fmt.Sprintf(msg, args...)}
}

// grammarLimits bound what a query string may ask for, so that parsing it
// and compiling it cost time linear in its length: the length itself, the
// depth of embedded resources in select= and the depth of or/and trees.
// Each parameter is split at each level of its nesting, so parsing costs
// at most (depth + 1) passes over the parameter.
type grammarLimits struct {
	queryBytes  int // the raw query string
	embedDepth  int // levels of embedded resources: a(b(c)) is 3
	filterDepth int // levels of logic trees: or=(and(a.eq.1)) is 2
}

// defaultGrammarLimits are the limits of a Config that sets none.
var defaultGrammarLimits = grammarLimits{queryBytes: 32 << 10, embedDepth: 8, filterDepth: 16}

// parseRestQuery parses a query string within the default limits.
func parseRestQuery(raw string) (*restQuery, error) {
	return parseRestQueryLimited(raw, defaultGrammarLimits)
}

// parseRestQueryLimited parses a request's query string. Filters are kept
// in the order they appear, so the SQL, and with it any error, is the same
// for the same URL. Past a limit it fails before parsing the parameter
// that breaks it.
func parseRestQueryLimited(raw string, lim grammarLimits) (*restQuery, error) {
	if len(raw) > lim.queryBytes {
		return nil, parseErr("the query string has %d bytes; the limit is %d", len(raw), lim.queryBytes)
	}
	q := &restQuery{limit: -1, lim: lim}
	for raw != "" {
		var part string
		part, raw, _ = strings.Cut(raw, "&")
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		key, err := url.QueryUnescape(k)
		if err != nil {
			return nil, parseErr("malformed query parameter %q", k)
		}
		val, err := url.QueryUnescape(v)
		if err != nil {
			return nil, parseErr("malformed value of %q", key)
		}
		if strings.IndexByte(key, 0) >= 0 {
			return nil, parseErr("the parameter %q has a NUL byte", key)
		}
		if key == "apikey" {
			continue // the key, for clients that cannot send headers; the edge reads it
		}
		if err := q.add(key, val); err != nil {
			return nil, err
		}
	}
	return q, nil
}

func (q *restQuery) add(key, val string) error {
	if path, last := splitEmbedKey(key); path != "" {
		return q.embedOptsFor(path).add(q, last, val)
	}
	switch key {
	case "select":
		if d := nesting(val); d > q.lim.embedDepth {
			return parseErr("select= embeds resources %d levels deep; the limit is %d", d, q.lim.embedDepth)
		}
		items, err := parseSelect(val)
		if err != nil {
			return err
		}
		q.selects = items
	case "order":
		terms, err := parseOrder(val)
		if err != nil {
			return err
		}
		q.order = terms
	case "limit", "offset":
		n, err := strconv.Atoi(val)
		if err != nil || n < 0 {
			return parseErr("%s must be a non-negative integer, not %q", key, val)
		}
		if key == "limit" {
			q.limit = n
		} else {
			q.offset = n
		}
	case "on_conflict", "columns":
		names, err := parseNameList(val)
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		if key == "on_conflict" {
			q.onConflict = names
		} else {
			q.columns = names
		}
	default:
		f, err := q.parseFilterParam(key, val)
		if err != nil {
			return err
		}
		q.where = append(q.where, f)
	}
	return nil
}

// parseFilterParam is parseFilterParam within q's limit of logic depth: a
// tree's parentheses nest once a level, and once more for an in.(...) list
// or a text search configuration at its leaves.
func (q *restQuery) parseFilterParam(key, val string) (filter, error) {
	if d := nesting(val); d > q.lim.filterDepth+1 {
		return filter{}, parseErr("%s nests %d levels deep; the limit is %d", key, d-1, q.lim.filterDepth)
	}
	return parseFilterParam(key, val, q.lim.filterDepth)
}

// nesting is the depth of the parentheses of s outside double quotes, in
// one pass.
func nesting(s string) int {
	depth, max, quoted := 0, 0, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case quoted:
			if c == '\\' {
				i++
			} else if c == '"' {
				quoted = false
			}
		case c == '"':
			quoted = true
		case c == '(':
			if depth++; depth > max {
				max = depth
			}
		case c == ')':
			depth--
		}
	}
	return max
}

func (o *embedOpts) add(q *restQuery, key, val string) error {
	var err error
	switch key {
	case "order":
		o.order, err = parseOrder(val)
	case "limit", "offset":
		n, convErr := strconv.Atoi(val)
		if convErr != nil || n < 0 {
			return parseErr("%s must be a non-negative integer, not %q", key, val)
		}
		if key == "limit" {
			o.limit = n
		} else {
			o.offset = n
		}
	case "select", "on_conflict", "columns":
		return parseErr("%s does not apply to an embedded resource", key)
	default:
		var f filter
		if f, err = q.parseFilterParam(key, val); err == nil {
			o.where = append(o.where, f)
		}
	}
	return err
}

// splitEmbedKey splits a parameter name like comments.author.name or
// comments.not.or into the embedded resource's path and what is left.
// Dots inside double quotes or after a JSON arrow do not split.
func splitEmbedKey(key string) (path, last string) {
	for _, logic := range []string{"not.or", "not.and", "or", "and"} {
		if p, ok := strings.CutSuffix(key, "."+logic); ok {
			return p, logic
		}
		if key == logic {
			return "", key
		}
	}
	end := len(key)
	if i := strings.Index(key, "->"); i >= 0 {
		end = i
	}
	quoted, cut := false, -1
	for i := 0; i < end; i++ {
		switch {
		case key[i] == '"':
			quoted = !quoted
		case key[i] == '.' && !quoted:
			cut = i
		}
	}
	if cut < 0 {
		return "", key
	}
	return key[:cut], key[cut+1:]
}

// splitTop splits s at sep outside parentheses and double quotes.
func splitTop(s string, sep byte) ([]string, error) {
	var parts []string
	depth, start, quoted := 0, 0, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quoted:
			if c == '\\' && i+1 < len(s) {
				i++
			} else if c == '"' {
				quoted = false
			}
		case c == '"':
			quoted = true
		case c == '(':
			depth++
		case c == ')':
			depth--
			if depth < 0 {
				return nil, parseErr("unbalanced parentheses in %q", s)
			}
		case c == sep && depth == 0:
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	if depth != 0 || quoted {
		return nil, parseErr("unbalanced parentheses or quotes in %q", s)
	}
	return append(parts, s[start:]), nil
}

// unquote strips a double-quoted token's quotes and backslash escapes.
func unquote(s string) (string, bool) {
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return s, false
	}
	var b strings.Builder
	for i := 1; i < len(s)-1; i++ {
		if s[i] == '\\' && i+1 < len(s)-1 {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String(), true
}

// parseName reads a column name, plain or double-quoted.
func parseName(s string) (string, error) {
	if n, ok := unquote(s); ok {
		if n == "" || strings.IndexByte(n, 0) >= 0 {
			return "", parseErr("malformed column name %q", s)
		}
		return n, nil
	}
	if s == "" || strings.ContainsAny(s, "\"(),:\x00") || strings.TrimSpace(s) != s {
		return "", parseErr("malformed column name %q", s)
	}
	return s, nil
}

func parseNameList(s string) ([]string, error) {
	parts, err := splitTop(s, ',')
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(parts))
	for _, p := range parts {
		n, err := parseName(strings.TrimSpace(p))
		if err != nil {
			return nil, err
		}
		names = append(names, n)
	}
	return names, nil
}

// parseField reads col, "col" or col->a->>b; JSON path keys are plain.
func parseField(s string) (field, error) {
	i := strings.Index(s, "->")
	if i < 0 || strings.HasPrefix(s, `"`) && strings.Count(s[:i], `"`)%2 == 1 {
		name, err := parseName(s)
		return field{column: name}, err
	}
	name, err := parseName(s[:i])
	if err != nil {
		return field{}, err
	}
	f := field{column: name}
	rest := s[i:]
	for rest != "" {
		step := pathStep{}
		switch {
		case strings.HasPrefix(rest, "->>"):
			step.text, rest = true, rest[3:]
		case strings.HasPrefix(rest, "->"):
			rest = rest[2:]
		default:
			return field{}, parseErr("malformed JSON path in %q", s)
		}
		end := strings.Index(rest, "->")
		if end < 0 {
			end = len(rest)
		}
		step.key, rest = rest[:end], rest[end:]
		if step.key == "" {
			return field{}, parseErr("empty JSON path key in %q", s)
		}
		if k, ok := unquote(step.key); ok {
			step.key = k
		}
		f.path = append(f.path, step)
	}
	return f, nil
}

// parseSelect reads select=: comma-separated items, each *, field,
// alias:field, with an optional ::cast. Embedded resources are refused.
func parseSelect(s string) ([]selectItem, error) {
	parts, err := splitTop(s, ',')
	if err != nil {
		return nil, err
	}
	items := make([]selectItem, 0, len(parts))
	for _, p := range parts {
		p = strings.TrimSpace(p)
		if p == "*" {
			items = append(items, selectItem{star: true})
			continue
		}
		if strings.HasSuffix(p, ")") && !strings.HasPrefix(p, `"`) {
			it, err := parseEmbed(p)
			if err != nil {
				return nil, err
			}
			items = append(items, it)
			continue
		}
		var it selectItem
		expr := p
		if before, after, ok := strings.Cut(p, "::"); ok {
			expr, it.cast = before, after
			if !castPattern.MatchString(it.cast) {
				return nil, parseErr("malformed cast %q", it.cast)
			}
		}
		if a, rest, ok := cutAlias(expr); ok {
			if it.alias, err = parseName(a); err != nil {
				return nil, err
			}
			expr = rest
		}
		if it.f, err = parseField(expr); err != nil {
			return nil, err
		}
		items = append(items, it)
	}
	return items, nil
}

// parseEmbed reads [alias:]table[!hint](items).
func parseEmbed(p string) (selectItem, error) {
	open := strings.IndexByte(p, '(')
	if open <= 0 {
		return selectItem{}, parseErr("malformed embedded resource %q", p)
	}
	var it selectItem
	head := p[:open]
	if a, rest, ok := cutAlias(head); ok {
		alias, err := parseName(a)
		if err != nil {
			return selectItem{}, err
		}
		it.alias, head = alias, rest
	}
	e := &embed{}
	head, e.hint, _ = strings.Cut(head, "!")
	if strings.HasPrefix(head, "...") {
		return selectItem{}, parseErr("spread embedding is not supported: %q", p)
	}
	var err error
	if e.table, err = parseName(head); err != nil {
		return selectItem{}, err
	}
	if e.hint == "inner" || e.hint == "left" {
		return selectItem{}, parseErr("!%s joins are not supported: %q", e.hint, p)
	}
	inner := p[open+1 : len(p)-1]
	if strings.TrimSpace(inner) == "" {
		inner = "*"
	}
	if e.items, err = parseSelect(inner); err != nil {
		return selectItem{}, err
	}
	it.embed = e
	return it, nil
}

// cutAlias splits alias:expr at a single colon outside quotes; a "::" is
// a cast, not an alias.
func cutAlias(s string) (alias, rest string, ok bool) {
	quoted := false
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '"':
			quoted = !quoted
		case s[i] == ':' && !quoted:
			if i+1 < len(s) && s[i+1] == ':' {
				return "", s, false
			}
			return s[:i], s[i+1:], true
		}
	}
	return "", s, false
}

// parseOrder reads order=field[.asc|.desc][.nullsfirst|.nullslast],...
func parseOrder(s string) ([]orderTerm, error) {
	parts, err := splitTop(s, ',')
	if err != nil {
		return nil, err
	}
	terms := make([]orderTerm, 0, len(parts))
	for _, p := range parts {
		p = strings.TrimSpace(p)
		var t orderTerm
		for {
			switch {
			case strings.HasSuffix(p, ".asc"):
				p = strings.TrimSuffix(p, ".asc")
				continue
			case strings.HasSuffix(p, ".desc"):
				p, t.desc = strings.TrimSuffix(p, ".desc"), true
				continue
			case strings.HasSuffix(p, ".nullsfirst"):
				p, t.nulls = strings.TrimSuffix(p, ".nullsfirst"), "first"
				continue
			case strings.HasSuffix(p, ".nullslast"):
				p, t.nulls = strings.TrimSuffix(p, ".nullslast"), "last"
				continue
			}
			break
		}
		if t.f, err = parseField(p); err != nil {
			return nil, err
		}
		terms = append(terms, t)
	}
	return terms, nil
}

// parseFilterParam reads one filter parameter: column=[not.]op.value, or
// or=(...), and=(...), not.or=(...), not.and=(...), of at most depth
// levels.
func parseFilterParam(key, val string, depth int) (filter, error) {
	not := false
	logic := key
	if rest, ok := strings.CutPrefix(key, "not."); ok {
		not, logic = true, rest
	}
	if logic == "or" || logic == "and" {
		return parseTree(logic == "or", not, val, depth)
	}
	f, err := parseField(key)
	if err != nil {
		return filter{}, err
	}
	c, err := parseCondition(f, val)
	if err != nil {
		return filter{}, err
	}
	return filter{cond: c}, nil
}

// parseTree reads a logic tree's operand: (cond,cond,...), where each cond
// is field.[not.]op.value or a nested [not.]or(...)/and(...), at most
// depth levels deep.
func parseTree(or, not bool, s string, depth int) (filter, error) {
	if depth <= 0 {
		return filter{}, parseErr("a logic tree nests deeper than the limit")
	}
	if len(s) < 2 || s[0] != '(' || s[len(s)-1] != ')' {
		return filter{}, parseErr("a logic tree needs parentheses: %q", s)
	}
	parts, err := splitTop(s[1:len(s)-1], ',')
	if err != nil {
		return filter{}, err
	}
	t := filter{or: or, not: not}
	for _, p := range parts {
		p = strings.TrimSpace(p)
		inner := p
		neg := false
		if rest, ok := strings.CutPrefix(inner, "not."); ok {
			neg, inner = true, rest
		}
		if sub, ok := strings.CutPrefix(inner, "or("); ok {
			child, err := parseTree(true, neg, "("+sub, depth-1)
			if err != nil {
				return filter{}, err
			}
			t.children = append(t.children, child)
			continue
		}
		if sub, ok := strings.CutPrefix(inner, "and("); ok {
			child, err := parseTree(false, neg, "("+sub, depth-1)
			if err != nil {
				return filter{}, err
			}
			t.children = append(t.children, child)
			continue
		}
		name, rest, ok := cutFieldAtOp(p)
		if !ok {
			return filter{}, parseErr("malformed condition %q: want column.operator.value", p)
		}
		f, err := parseField(name)
		if err != nil {
			return filter{}, err
		}
		c, err := parseCondition(f, rest)
		if err != nil {
			return filter{}, err
		}
		if v, ok := unquote(c.value); ok { // inside a tree, a value with a comma is quoted
			c.value = v
		}
		t.children = append(t.children, filter{cond: c})
	}
	if len(t.children) == 0 {
		return filter{}, parseErr("empty logic tree")
	}
	return t, nil
}

// cutFieldAtOp splits "field.op.value" before the first dot outside
// quotes that is followed by an operator (or not.).
func cutFieldAtOp(s string) (string, string, bool) {
	quoted := false
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '"':
			quoted = !quoted
		case s[i] == '.' && !quoted:
			rest := s[i+1:]
			op, _, _ := strings.Cut(rest, ".")
			op, _, _ = strings.Cut(op, "(")
			if _, ok := restOps[op]; ok || op == "not" || op == "in" || op == "is" {
				return s[:i], rest, true
			}
		}
	}
	return "", "", false
}

// parseCondition reads [not.]op.value for field f.
func parseCondition(f field, s string) (*condition, error) {
	c := &condition{f: f}
	if rest, ok := strings.CutPrefix(s, "not."); ok {
		c.not, s = true, rest
	}
	op, operand, ok := strings.Cut(s, ".")
	if !ok {
		return nil, parseErr("malformed filter on %q: want operator.value, got %q", f.column, s)
	}
	if name, cfg, ok := strings.Cut(op, "("); ok && strings.HasSuffix(cfg, ")") {
		switch name {
		case "fts", "plfts", "phfts", "wfts":
			op, c.config = name, strings.TrimSuffix(cfg, ")")
		default:
			return nil, parseErr("unknown operator %q", op)
		}
	}
	c.op = op
	switch op {
	case "in":
		if len(operand) < 2 || operand[0] != '(' || operand[len(operand)-1] != ')' {
			return nil, parseErr("in needs a parenthesised list: %q", operand)
		}
		items, err := splitTop(operand[1:len(operand)-1], ',')
		if err != nil {
			return nil, err
		}
		for _, it := range items {
			if v, ok := unquote(it); ok {
				it = v
			}
			c.list = append(c.list, it)
		}
		if len(items) == 1 && items[0] == "" {
			c.list = []string{}
		}
	case "is":
		if _, ok := isValues[operand]; !ok {
			return nil, parseErr("is takes null, not_null, true, false or unknown, not %q", operand)
		}
		c.value = operand
	default:
		if _, ok := restOps[op]; !ok {
			return nil, parseErr("unknown operator %q", op)
		}
		c.value = operand
	}
	return c, nil
}
