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
// PostgREST does for tables.

var (
	errEmbedNone      = &api.Error{Status: http.StatusBadRequest, Code: "PGRST200", Message: "Could not find a relationship between the tables"}
	errEmbedAmbiguous = &api.Error{Status: http.StatusMultipleChoices, Code: "PGRST201", Message: "Could not embed because more than one relationship was found",
		Hint: "name the foreign key to use: table!constraint_name(...)"}
)

// rowsQuerier runs a catalog query: a pool or a transaction.
type rowsQuerier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// resolveEmbeds finds the relationship of every embedded resource in
// items, below the table schema.table, depth first.
func resolveEmbeds(ctx context.Context, db rowsQuerier, schema, table string, items []selectItem) error {
	for _, it := range items {
		if it.embed == nil {
			continue
		}
		e := it.embed
		base := pgx.Identifier{schema, table}.Sanitize()
		target := pgx.Identifier{schema, e.table}.Sanitize()
		rows, err := db.Query(ctx, `select c.conname::text, c.conrelid = pg_catalog.to_regclass($1),
		  array(select a.attname::text from unnest(c.conkey) with ordinality k(n, i)
		        join pg_catalog.pg_attribute a on a.attrelid = c.conrelid and a.attnum = k.n order by k.i),
		  array(select a.attname::text from unnest(c.confkey) with ordinality k(n, i)
		        join pg_catalog.pg_attribute a on a.attrelid = c.confrelid and a.attnum = k.n order by k.i)
		from pg_catalog.pg_constraint c
		where c.contype = 'f' and (
		  (c.conrelid = pg_catalog.to_regclass($1) and c.confrelid = pg_catalog.to_regclass($2)) or
		  (c.conrelid = pg_catalog.to_regclass($2) and c.confrelid = pg_catalog.to_regclass($1)))`,
			pgx.QueryExecModeExec, base, target)
		if err != nil {
			return err
		}
		type fk struct {
			name     string
			outgoing bool // the enclosing table holds the key
			cols     []string
			refs     []string
		}
		keys, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (fk, error) {
			var k fk
			err := r.Scan(&k.name, &k.outgoing, &k.cols, &k.refs)
			return k, err
		})
		if err != nil {
			return err
		}
		var found []*relationship
		for _, k := range keys {
			if e.hint != "" && e.hint != k.name && !slices.Contains(k.cols, e.hint) {
				continue
			}
			rel := &relationship{target: target, many: !k.outgoing || base == target}
			for i := range k.cols {
				if rel.many {
					rel.on = append(rel.on, [2]string{k.cols[i], k.refs[i]}) // the embedded rows hold the key
				} else {
					rel.on = append(rel.on, [2]string{k.refs[i], k.cols[i]})
				}
			}
			found = append(found, rel)
		}
		switch len(found) {
		case 0:
			return errEmbedNone.With(fmt.Sprintf("between %s and %s", table, e.table))
		case 1:
			e.rel = found[0]
		default:
			return errEmbedAmbiguous.With(fmt.Sprintf("%d foreign keys between %s and %s", len(found), table, e.table))
		}
		if err := resolveEmbeds(ctx, db, schema, e.table, e.items); err != nil {
			return err
		}
	}
	return nil
}
