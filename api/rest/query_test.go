package rest

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func TestParseRestQuery(t *testing.T) {
	t.Parallel()
	q, err := parseRestQuery("select=id,n:name::text,meta->a->>b&id=not.in.(1,%222,3%22)&or=(a.eq.1,not.and(b.gt.2,c.is.null))&order=id.desc.nullslast,name&limit=5&offset=2&on_conflict=id&columns=%22a%20b%22,c")
	if err != nil {
		t.Fatal(err)
	}
	if len(q.selects) != 3 || q.selects[1].alias != "n" || q.selects[1].cast != "text" || len(q.selects[2].f.path) != 2 || !q.selects[2].f.path[1].text {
		t.Errorf("select %+v", q.selects)
	}
	if c := q.where[0].cond; c == nil || !c.not || c.op != "in" || strings.Join(c.list, "|") != "1|2,3" {
		t.Errorf("in %+v", q.where[0].cond)
	}
	if tr := q.where[1]; !tr.or || len(tr.children) != 2 || tr.children[1].or || !tr.children[1].not || len(tr.children[1].children) != 2 {
		t.Errorf("tree %+v", tr)
	}
	if len(q.order) != 2 || !q.order[0].desc || q.order[0].nulls != "last" || q.order[1].desc {
		t.Errorf("order %+v", q.order)
	}
	if q.limit != 5 || q.offset != 2 || strings.Join(q.onConflict, "|") != "id" || strings.Join(q.columns, "|") != "a b|c" {
		t.Errorf("limit %d offset %d on_conflict %v columns %v", q.limit, q.offset, q.onConflict, q.columns)
	}
}

var (
	placeholder = regexp.MustCompile(`\$([0-9]+)`)
	quotedIdent = regexp.MustCompile(`"(?:[^"]|"")*"`)
)

// checkStatement holds for every statement built from a parsed request:
// its placeholders are exactly its parameters, and no request text
// appears outside a quoted identifier.
func checkStatement(t *testing.T, s *sqlText) {
	sql := s.b.String()
	// With quoted identifiers taken out, what is left is Fluxbase's own
	// SQL: no quote, semicolon or comment marker comes from the request.
	rest := quotedIdent.ReplaceAllString(sql, "")
	last := 0
	for _, m := range placeholder.FindAllStringSubmatch(rest, -1) {
		n, _ := strconv.Atoi(m[1])
		if n != last+1 {
			t.Fatalf("placeholder $%d after $%d: %s", n, last, sql)
		}
		last = n
	}
	if last != len(s.args) {
		t.Fatalf("%d parameters, last placeholder $%d: %s", len(s.args), last, sql)
	}
	rest = strings.ReplaceAll(rest, "'[]'", "")
	if strings.ContainsAny(rest, `';\`) || strings.Contains(rest, "--") || strings.Contains(rest, "/*") {
		t.Fatalf("request text outside identifiers: %s", sql)
	}
}

func FuzzParseRestQuery(f *testing.F) {
	for _, s := range []string{
		"select=*&id=eq.1", "or=(a.eq.1,and(b.lt.2,c.in.(1,2)))&order=a.desc", "select=x:a->b->>c::int&a->>b=like.*x*",
		"tags=cs.{a,b}&t=fts(english).cat", "not.and=(a.is.null,b.isdistinct.2)&limit=3&offset=1",
		"columns=%22a%22,b&on_conflict=a", "a=in.(%22x,y%22,z)", "select=a,b(c)", "select=*,c:comments!fk(id,author(name))&comments.approved=eq.true&comments.order=id.desc&comments.limit=2&comments.author.or=(a.eq.1,b.eq.2)", "%22odd%20name%22=eq.1",
		"apikey=eyJ.x.y&select=id", "ti%00tle=eq.1", "select=a%00b", "select=%22a%00%22",
		"select=" + strings.Repeat("a(", 9) + "id" + strings.Repeat(")", 9),
		"or=(" + strings.Repeat("or(", 16) + "a.eq.1" + strings.Repeat(")", 16) + ")",
		"or=(a.in.(%22(%22,%22)%22),b.fts(english).x)", "c.or=(" + strings.Repeat("and(", 3) + "a.eq.1))))",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := parseRestQuery(raw)
		if err != nil {
			return
		}
		checkWithinLimits(t, raw, q)
		fakeRelationships(q.selects)
		rel := quoteIdent("public") + "." + quoteIdent("t")
		checkStatement(t, readSQL(rel, q, q.limit, q.offset))
		checkStatement(t, countSQL(rel, q))
		checkStatement(t, updateSQL(rel, []string{"a"}, []byte(`{"a":1}`), q, true))
		checkStatement(t, deleteSQL(rel, q, false))
		if len(q.columns) > 0 {
			checkStatement(t, insertSQL(rel, q.columns, []byte(`[]`), &conflict{target: q.columns}, q, true))
		}
	})
}

// fakeRelationships stands in for the catalog: every embedded resource
// hangs from its parent by one column.
func fakeRelationships(items []selectItem) {
	for _, it := range items {
		if it.embed != nil {
			it.embed.rel = &relationship{target: quoteIdent("public") + "." + quoteIdent(it.embed.table), on: [][2]string{{"parent_id", "id"}}, many: len(it.embed.items)%2 == 0}
			fakeRelationships(it.embed.items)
		}
	}
}

// checkWithinLimits holds for every query string that parses: it is
// within the default limits, and no name it reads as a column has a NUL.
func checkWithinLimits(t *testing.T, raw string, q *restQuery) {
	if len(raw) > defaultGrammarLimits.queryBytes {
		t.Fatalf("a query string of %d bytes parsed", len(raw))
	}
	var depth func(items []selectItem) int
	depth = func(items []selectItem) int {
		d := 0
		for _, it := range items {
			if it.embed != nil {
				d = max(d, 1+depth(it.embed.items))
			}
		}
		return d
	}
	if d := depth(q.selects); d > defaultGrammarLimits.embedDepth {
		t.Fatalf("embedding %d deep parsed", d)
	}
	var logic func(fs []filter) int
	logic = func(fs []filter) int {
		d := 0
		for _, f := range fs {
			if f.cond == nil {
				d = max(d, 1+logic(f.children))
			}
		}
		return d
	}
	all := q.where
	for _, o := range q.embeds {
		all = append(all, o.where...)
	}
	if d := logic(all); d > defaultGrammarLimits.filterDepth {
		t.Fatalf("logic %d deep parsed", d)
	}
	for table, cols := range q.namedColumns("t") {
		for _, c := range append(cols, table) {
			if strings.IndexByte(c, 0) >= 0 {
				t.Fatalf("the name %q has a NUL", c)
			}
		}
	}
}

// The grammar's limits refuse what is past them, and only that, before
// any work proportional to the depth.
func TestParseLimits(t *testing.T) {
	t.Parallel()
	lim := grammarLimits{queryBytes: 1 << 20, embedDepth: 3, filterDepth: 3}
	nest := func(open, leaf, close string, n int) string {
		return strings.Repeat(open, n) + leaf + strings.Repeat(close, n)
	}
	for _, c := range []struct {
		raw string
		ok  bool
	}{
		{"select=" + nest("a(", "id", ")", 3), true},
		{"select=" + nest("a(", "id", ")", 4), false},
		{"select=" + nest("a(", "id", ")", 100000), false},
		{"select=%22((((%22", true}, // quoted: a name, not nesting
		{"or=(" + nest("or(", "a.in.(1,2)", ")", 2) + ")", true},
		{"or=(" + nest("or(", "a.eq.1", ")", 3) + ")", false},
		{"or=(" + nest("or(", "a.eq.1", ")", 15000) + ")", false},
		{"b.and=(" + nest("and(", "a.eq.1", ")", 2) + ")", true},
		{"b.and=(" + nest("and(", "a.eq.1", ")", 3) + ")", false},
		{"apikey=x", true},
		{"ti%00tle=eq.1", false},
		{"select=a%00", false},
		{"order=a%00.desc", false},
	} {
		q, err := parseRestQueryLimited(c.raw, lim)
		if (err == nil) != c.ok {
			t.Errorf("%.80s: %v", c.raw, err)
		}
		if err == nil && c.raw == "apikey=x" && len(q.where) != 0 {
			t.Errorf("apikey read as a filter: %+v", q.where)
		}
	}
	if _, err := parseRestQueryLimited("id=in.("+strings.Repeat("1,", 600)+"1)", grammarLimits{queryBytes: 1024, embedDepth: 1, filterDepth: 1}); err == nil {
		t.Error("a query string past queryBytes parsed")
	}
}
