package rest

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fluxbase/fluxbase/api"
)

// This file checks that every name a request reads as a column is one.
// PostgreSQL reads t.name, when t has no column name, as the function
// name(t) (attribute notation): select=count would count the rows and
// select=row_to_json would run that function on each. So the names are
// checked against the catalog before the statement runs, and a name that
// is no column answers 42703 as PostgreSQL does for an unknown column.
//
// The columns of each relation are cached: a request whose names are all
// known costs no query. A name the cache does not know reads the
// relation's columns again (a column added since is found at once), and
// entries older than columnsTTL are read again (a column dropped since
// is forgotten within it).

const columnsTTL = 10 * time.Second

// columnCache holds the columns of the relations requests have named.
type columnCache struct {
	mu   sync.Mutex
	rels map[string]relColumns // by quoted, schema-qualified name
}

type relColumns struct {
	exists bool
	names  map[string]bool
	read   time.Time
}

// columnsSQL lists the columns of each relation of $1, and whether it
// exists.
const columnsSQL = `select k.rel, pg_catalog.to_regclass(k.rel) is not null,
  array(select a.attname::text from pg_catalog.pg_attribute a
        where a.attrelid = pg_catalog.to_regclass(k.rel) and a.attnum > 0 and not a.attisdropped)
from pg_catalog.unnest($1::text[]) k(rel)`

// errUndefinedColumn is PostgreSQL's own error for an unknown column.
func errUndefinedColumn(table, column string) *api.Error {
	return &api.Error{Status: http.StatusBadRequest, Code: "42703", Message: fmt.Sprintf("column %s.%s does not exist", table, column)}
}

// check answers errUndefinedColumn for the first name of need (columns
// by table of schema) that is not a column; a relation that does not
// exist is left to the statement, which reports it.
func (c *columnCache) check(ctx context.Context, db rowsQuerier, schema string, need map[string][]string) error {
	tables := make([]string, 0, len(need))
	for t := range need {
		tables = append(tables, t)
	}
	slices.Sort(tables) // the same error for the same request
	now := time.Now()
	var ask []string
	c.mu.Lock()
	for _, t := range tables {
		rel := pgx.Identifier{schema, t}.Sanitize()
		known, ok := c.rels[rel]
		if !ok || now.Sub(known.read) > columnsTTL || !known.has(need[t]) {
			ask = append(ask, rel)
		}
	}
	c.mu.Unlock()
	if len(ask) > 0 {
		if err := c.read(ctx, db, ask, now); err != nil {
			return err
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range tables {
		known := c.rels[pgx.Identifier{schema, t}.Sanitize()]
		if !known.exists {
			continue
		}
		for _, col := range need[t] {
			if !known.names[col] {
				return errUndefinedColumn(t, col)
			}
		}
	}
	return nil
}

func (k relColumns) has(cols []string) bool {
	if !k.exists {
		return false
	}
	for _, c := range cols {
		if !k.names[c] {
			return false
		}
	}
	return true
}

// read reads the columns of rels into the cache.
func (c *columnCache) read(ctx context.Context, db rowsQuerier, rels []string, now time.Time) error {
	rows, err := db.Query(ctx, columnsSQL, pgx.QueryExecModeExec, rels)
	if err != nil {
		return err
	}
	var rel string
	var exists bool
	var names []string
	read := map[string]relColumns{}
	if _, err := pgx.ForEachRow(rows, []any{&rel, &exists, &names}, func() error {
		k := relColumns{exists: exists, names: make(map[string]bool, len(names)), read: now}
		for _, n := range names {
			k.names[n] = true
		}
		read[rel] = k
		return nil
	}); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rels == nil {
		c.rels = map[string]relColumns{}
	}
	for rel, k := range read {
		if k.exists {
			c.rels[rel] = k
		} else {
			delete(c.rels, rel)
		}
	}
	return nil
}

// namedColumns are the names q reads as columns, by table: table's own
// (the select list, filters and order) and those of its embedded
// resources.
func (q *restQuery) namedColumns(table string) map[string][]string {
	out := map[string][]string{}
	add := func(t, col string) {
		if !slices.Contains(out[t], col) {
			out[t] = append(out[t], col)
		}
	}
	var filters func(t string, fs []filter)
	filters = func(t string, fs []filter) {
		for _, f := range fs {
			if f.cond != nil {
				add(t, f.cond.f.column)
			}
			filters(t, f.children)
		}
	}
	orders := func(t string, terms []orderTerm) {
		for _, o := range terms {
			add(t, o.f.column)
		}
	}
	var items func(t, path string, its []selectItem)
	items = func(t, path string, its []selectItem) {
		for _, it := range its {
			switch {
			case it.star:
			case it.embed != nil:
				p := it.outputName()
				if path != "" {
					p = path + "." + p
				}
				items(it.embed.table, p, it.embed.items)
				if o := q.embeds[p]; o != nil {
					filters(it.embed.table, o.where)
					orders(it.embed.table, o.order)
				}
			default:
				add(t, it.f.column)
			}
		}
	}
	items(table, "", q.selects)
	filters(table, q.where)
	orders(table, q.order)
	return out
}
