package rest

import (
	"context"
	"fmt"
	"net/http"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/fluxbase/fluxbase/api"
)

// This file finds the relationships of embedded resources in the catalog:
// a foreign key from the enclosing table to the embedded one (to one row)
// or from the embedded table to the enclosing one (to many rows), as
// PostgREST does for tables. Every level of a request's embedding is
// resolved by one catalog query, whatever its depth.

var (
	errEmbedNone      = &api.Error{Status: http.StatusBadRequest, Code: "PGRST200", Message: "Could not find a relationship between the tables"}
	errEmbedAmbiguous = &api.Error{Status: http.StatusMultipleChoices, Code: "PGRST201", Message: "Could not embed because more than one relationship was found",
		Hint: "name the foreign key to use: table!constraint_name(...)"}
)

// rowsQuerier runs a catalog query: a pool or a transaction.
type rowsQuerier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// embedding is one embedded resource and the table it hangs from.
type embedding struct {
	e            *embed
	parent       string // the enclosing table's name
	base, target string // both tables, quoted and schema-qualified
}

// embeddings lists the embedded resources of items below the table
// table, depth first.
func embeddings(schema, table string, items []selectItem, out []embedding) []embedding {
	for _, it := range items {
		if it.embed == nil {
			continue
		}
		out = append(out, embedding{e: it.embed, parent: table,
			base: pgx.Identifier{schema, table}.Sanitize(), target: pgx.Identifier{schema, it.embed.table}.Sanitize()})
		out = embeddings(schema, it.embed.table, it.embed.items, out)
	}
	return out
}

// embedKeysSQL lists the foreign keys between each pair ($1[i], $2[i]) of
// tables, either way, numbered by the pair.
const embedKeysSQL = `select k.i, c.conname::text, c.conrelid = pg_catalog.to_regclass(k.base),
  array(select a.attname::text from pg_catalog.unnest(c.conkey) with ordinality u(n, j)
        join pg_catalog.pg_attribute a on a.attrelid = c.conrelid and a.attnum = u.n order by u.j),
  array(select a.attname::text from pg_catalog.unnest(c.confkey) with ordinality u(n, j)
        join pg_catalog.pg_attribute a on a.attrelid = c.confrelid and a.attnum = u.n order by u.j)
from rows from (pg_catalog.unnest($1::text[]), pg_catalog.unnest($2::text[])) with ordinality k(base, target, i)
join pg_catalog.pg_constraint c on c.contype = 'f' and (
  (c.conrelid = pg_catalog.to_regclass(k.base) and c.confrelid = pg_catalog.to_regclass(k.target)) or
  (c.conrelid = pg_catalog.to_regclass(k.target) and c.confrelid = pg_catalog.to_regclass(k.base)))`

// resolveEmbeds finds the relationship of every embedded resource in
// items, below the table schema.table, with one catalog query.
func resolveEmbeds(ctx context.Context, db rowsQuerier, schema, table string, items []selectItem) error {
	all := embeddings(schema, table, items, nil)
	if len(all) == 0 {
		return nil
	}
	bases, targets := make([]string, len(all)), make([]string, len(all))
	for i, em := range all {
		bases[i], targets[i] = em.base, em.target
	}
	rows, err := db.Query(ctx, embedKeysSQL, pgx.QueryExecModeExec, bases, targets)
	if err != nil {
		return err
	}
	type fk struct {
		name     string
		outgoing bool // the enclosing table holds the key
		cols     []string
		refs     []string
	}
	keys := make([][]fk, len(all))
	var i int
	var k fk
	if _, err := pgx.ForEachRow(rows, []any{&i, &k.name, &k.outgoing, &k.cols, &k.refs}, func() error {
		keys[i-1] = append(keys[i-1], fk{k.name, k.outgoing, slices.Clone(k.cols), slices.Clone(k.refs)})
		return nil
	}); err != nil {
		return err
	}
	for i, em := range all {
		e := em.e
		var found []*relationship
		for _, k := range keys[i] {
			if e.hint != "" && e.hint != k.name && !slices.Contains(k.cols, e.hint) {
				continue
			}
			rel := &relationship{target: em.target, many: !k.outgoing || em.base == em.target}
			for j := range k.cols {
				if rel.many {
					rel.on = append(rel.on, [2]string{k.cols[j], k.refs[j]}) // the embedded rows hold the key
				} else {
					rel.on = append(rel.on, [2]string{k.refs[j], k.cols[j]})
				}
			}
			found = append(found, rel)
		}
		switch len(found) {
		case 0:
			return errEmbedNone.With(fmt.Sprintf("between %s and %s", em.parent, e.table))
		case 1:
			e.rel = found[0]
		default:
			return errEmbedAmbiguous.With(fmt.Sprintf("%d foreign keys between %s and %s", len(found), em.parent, e.table))
		}
	}
	return nil
}
