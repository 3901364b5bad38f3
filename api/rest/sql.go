package rest

import (
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// This file turns a parsed restQuery into SQL. Names are quoted with
// pgx.Identifier; every value from the request, JSON path keys included,
// is a parameter; only limit and offset (parsed integers) and casts
// (checked against castPattern) are written in. The table is aliased _t,
// so filters and the select list read the same way in every statement.

// sqlText accumulates a statement and its parameters.
type sqlText struct {
	b      strings.Builder
	args   []any
	alias  string                // the relation fields refer to; "" means _t
	depth  int                   // of embedded resources, for their aliases
	embeds map[string]*embedOpts // the request's options of embedded resources
	tables map[string]string     // the table behind each alias but _t, for error messages
}

// newSQL starts a statement for q.
func newSQL(q *restQuery) *sqlText { return &sqlText{embeds: q.embeds} }

func (s *sqlText) w(parts ...string) {
	for _, p := range parts {
		s.b.WriteString(p)
	}
}

// param adds v and returns its placeholder, cast when cast is not empty.
func (s *sqlText) param(v any, cast string) string {
	s.args = append(s.args, v)
	p := "$" + strconv.Itoa(len(s.args))
	if cast != "" {
		p += "::" + cast
	}
	return p
}

func quoteIdent(name string) string { return pgx.Identifier{name}.Sanitize() }

// fieldSQL is f as an expression on _t: _t."col"->$n::text->>$m::int.
func (s *sqlText) fieldSQL(f field) string {
	alias := s.alias
	if alias == "" {
		alias = "_t"
	}
	e := alias + "." + quoteIdent(f.column)
	for _, st := range f.path {
		op := "->"
		if st.text {
			op = "->>"
		}
		if n, err := strconv.Atoi(st.key); err == nil {
			e += op + s.param(n, "int")
		} else {
			e += op + s.param(st.key, "text")
		}
	}
	return e
}

// outputName is the JSON key a select item appears under: its alias, the
// last JSON path key, or the column.
func (it selectItem) outputName() string {
	switch {
	case it.alias != "":
		return it.alias
	case it.embed != nil:
		return it.embed.table
	case len(it.f.path) > 0:
		return it.f.path[len(it.f.path)-1].key
	default:
		return it.f.column
	}
}

// selectList writes the select list over the current alias; path is the
// embedded resource the list belongs to ("" at the top).
func (s *sqlText) selectList(items []selectItem, path string) {
	alias := s.alias
	if alias == "" {
		alias = "_t"
	}
	if len(items) == 0 {
		s.w(alias, ".*")
		return
	}
	for i, it := range items {
		if i > 0 {
			s.w(", ")
		}
		if it.star {
			s.w(alias, ".*")
			continue
		}
		if it.embed != nil {
			s.embedded(it, path)
			continue
		}
		e := s.fieldSQL(it.f)
		if it.cast != "" {
			e = "(" + e + ")::" + it.cast
		}
		s.w(e, " as ", quoteIdent(it.outputName()))
	}
}

// embedded writes an embedded resource as a subquery of the select list:
// a JSON array of the related rows, or the one related row (or null).
func (s *sqlText) embedded(it selectItem, parent string) {
	e := it.embed
	name := it.outputName()
	path := name
	if parent != "" {
		path = parent + "." + name
	}
	opts := s.embeds[path]
	if opts == nil {
		opts = &embedOpts{limit: -1}
	}
	outer := s.alias
	if outer == "" {
		outer = "_t"
	}
	s.depth++
	inner, r := "_t"+strconv.Itoa(s.depth), "_r"+strconv.Itoa(s.depth)
	if s.tables == nil {
		s.tables = map[string]string{}
	}
	s.tables[inner] = e.table
	if e.rel.many {
		s.w("(select coalesce(json_agg(", r, "), '[]') from (select ")
	} else {
		s.w("(select pg_catalog.row_to_json(", r, ") from (select ")
	}
	s.alias = inner
	s.selectList(e.items, path)
	s.w(" from ", e.rel.target, " ", inner, " where ")
	for i, pair := range e.rel.on {
		if i > 0 {
			s.w(" and ")
		}
		s.w(inner, ".", quoteIdent(pair[0]), " = ", outer, ".", quoteIdent(pair[1]))
	}
	if len(opts.where) > 0 {
		s.w(" and ")
		s.filters(opts.where, " and ")
	}
	s.orderBy(opts.order)
	s.page(opts.limit, opts.offset)
	s.alias = outer
	s.w(") ", r, ") as ", quoteIdent(name))
}

// page writes limit and offset when set.
func (s *sqlText) page(limit, offset int) {
	if limit >= 0 {
		s.w(" limit ", strconv.Itoa(limit))
	}
	if offset > 0 {
		s.w(" offset ", strconv.Itoa(offset))
	}
}

// where writes " where ..." when there are filters.
func (s *sqlText) where(filters []filter) {
	if len(filters) == 0 {
		return
	}
	s.w(" where ")
	s.filters(filters, " and ")
}

func (s *sqlText) filters(fs []filter, join string) {
	for i, f := range fs {
		if i > 0 {
			s.w(join)
		}
		s.filter(f)
	}
}

func (s *sqlText) filter(f filter) {
	if f.cond != nil {
		s.condition(f.cond)
		return
	}
	if f.not {
		s.w("not ")
	}
	s.w("(")
	join := " and "
	if f.or {
		join = " or "
	}
	s.filters(f.children, join)
	s.w(")")
}

func (s *sqlText) condition(c *condition) {
	if c.not {
		s.w("not ")
	}
	e := s.fieldSQL(c.f)
	switch c.op {
	case "is":
		s.w("(", e, " is ", isValues[c.value], ")")
	case "in":
		if len(c.list) == 0 {
			s.w("false")
			return
		}
		s.w("(", e, " = any(", s.param(c.list, ""), "))")
	case "like", "ilike":
		s.w("(", e, " ", restOps[c.op], " ", s.param(strings.ReplaceAll(c.value, "*", "%"), ""), ")")
	case "fts", "plfts", "phfts", "wfts":
		fn := map[string]string{"fts": "to_tsquery", "plfts": "plainto_tsquery", "phfts": "phraseto_tsquery", "wfts": "websearch_to_tsquery"}[c.op]
		s.w("(", e, " @@ pg_catalog.", fn, "(")
		if c.config != "" {
			s.w(s.param(c.config, "regconfig"), ", ")
		}
		s.w(s.param(c.value, "text"), "))")
	default:
		s.w("(", e, " ", restOps[c.op], " ", s.param(c.value, ""), ")")
	}
}

// orderBy writes " order by ..." when asked.
func (s *sqlText) orderBy(terms []orderTerm) {
	for i, t := range terms {
		if i == 0 {
			s.w(" order by ")
		} else {
			s.w(", ")
		}
		s.w(s.fieldSQL(t.f))
		if t.desc {
			s.w(" desc")
		}
		if t.nulls != "" {
			s.w(" nulls ", t.nulls)
		}
	}
}

// aggregate wraps the rows of from (a relation aliased _t) into one JSON
// array and their count: the shape every statement answers in.
func (s *sqlText) aggregate(items []selectItem, from string, tail func()) {
	s.w("select coalesce(json_agg(_r), '[]')::text, count(*) from (select ")
	s.selectList(items, "")
	s.w(" from ", from, " _t")
	if tail != nil {
		tail()
	}
	s.w(") _r")
}

// readSQL is a GET: the page's rows, one JSON object a row, each with the
// number of rows of the page, so the answer's headers can be written from
// the first row and the rows copied to the client as they arrive (the
// window makes PostgreSQL, not the server, hold the page until it is
// counted).
func readSQL(rel string, q *restQuery, limit, offset int) *sqlText {
	s := newSQL(q)
	s.w("select pg_catalog.row_to_json(_r)::text, pg_catalog.count(*) over () from (select ")
	s.selectList(q.selects, "")
	s.w(" from ", rel, " _t")
	s.where(q.where)
	s.orderBy(q.order)
	s.page(limit, offset)
	s.w(") _r")
	return s
}

// countSQL counts every row the filters select, for count=exact.
func countSQL(rel string, q *restQuery) *sqlText {
	s := newSQL(q)
	s.w("select count(*) from ", rel, " _t")
	s.where(q.where)
	return s
}

// mutation wraps a data-changing statement into the answer: the changed
// rows as JSON (representation) or only their count.
func (s *sqlText) mutation(items []selectItem, representation bool) {
	if representation {
		s.aggregate(items, "_m", nil)
	} else {
		s.w("select '[]', count(*) from _m")
	}
}

// returning is a mutation's RETURNING clause: as PostgREST, only the
// columns the select list reads (and those its embedded resources join
// on), so a role with SELECT on some columns gets them back; * returns
// every column, which needs SELECT on each.
func returning(items []selectItem, representation bool) string {
	if !representation {
		return " returning 1" // no SELECT privilege or policy needed
	}
	cols := returnedColumns(items)
	if cols == nil {
		return " returning _t.*"
	}
	for i, c := range cols {
		cols[i] = "_t." + quoteIdent(c)
	}
	return " returning " + strings.Join(cols, ", ")
}

// returnedColumns are the columns items read, or nil for every column.
func returnedColumns(items []selectItem) []string {
	if len(items) == 0 {
		return nil
	}
	var cols []string
	add := func(c string) {
		if !slices.Contains(cols, c) {
			cols = append(cols, c)
		}
	}
	for _, it := range items {
		switch {
		case it.star:
			return nil
		case it.embed != nil:
			for _, pair := range it.embed.rel.on {
				add(pair[1])
			}
		default:
			add(it.f.column)
		}
	}
	return cols
}

// conflict is an insert's ON CONFLICT clause.
type conflict struct {
	target []string
	ignore bool // do nothing rather than update
}

// insertSQL inserts the rows of rows (a JSON array of objects) into rel.
func insertSQL(rel string, cols []string, rows []byte, c *conflict, q *restQuery, representation bool) *sqlText {
	s := newSQL(q)
	s.w("with _m as (insert into ", rel, " as _t ")
	if len(cols) == 0 {
		s.w("default values")
	} else {
		list := quoteList(cols)
		s.w("(", list, ") select ", list, " from pg_catalog.json_populate_recordset(null::", rel, ", ", s.param(string(rows), "json"), ")")
	}
	if c != nil {
		s.w(" on conflict (", quoteList(c.target), ")")
		if c.ignore || len(cols) == 0 {
			s.w(" do nothing")
		} else {
			s.w(" do update set ")
			for i, col := range cols {
				if i > 0 {
					s.w(", ")
				}
				s.w(quoteIdent(col), " = excluded.", quoteIdent(col))
			}
		}
	}
	s.w(returning(q.selects, representation), ") ")
	s.mutation(q.selects, representation)
	return s
}

// updateSQL sets cols from the object obj on the rows the filters select.
func updateSQL(rel string, cols []string, obj []byte, q *restQuery, representation bool) *sqlText {
	s := newSQL(q)
	s.w("with _m as (update ", rel, " as _t set ")
	for i, col := range cols {
		if i > 0 {
			s.w(", ")
		}
		s.w(quoteIdent(col), " = _b.", quoteIdent(col))
	}
	s.w(" from pg_catalog.json_populate_record(null::", rel, ", ", s.param(string(obj), "json"), ") _b")
	s.where(q.where)
	s.w(returning(q.selects, representation), ") ")
	s.mutation(q.selects, representation)
	return s
}

// deleteSQL deletes the rows the filters select.
func deleteSQL(rel string, q *restQuery, representation bool) *sqlText {
	s := newSQL(q)
	s.w("with _m as (delete from ", rel, " as _t")
	s.where(q.where)
	s.w(returning(q.selects, representation), ") ")
	s.mutation(q.selects, representation)
	return s
}

// quoteList is names quoted and comma-separated.
func quoteList(names []string) string {
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = quoteIdent(n)
	}
	return strings.Join(quoted, ", ")
}

// hasEmbeds reports whether items embed any resource.
func hasEmbeds(items []selectItem) bool {
	for _, it := range items {
		if it.embed != nil {
			return true
		}
	}
	return false
}
