package replication

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// querier is the part of pgx this package uses on ordinary connections; a
// *pgx.Conn and a *pgxpool.Pool both have it.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Begin(ctx context.Context) (pgx.Tx, error)
}

// catalogTypeLookup reads a type from pg_type.
func catalogTypeLookup(q querier) typeLookup {
	return func(ctx context.Context, oid uint32) (typeRow, error) {
		var row typeRow
		var typ, cat, delim string
		err := q.QueryRow(ctx, `select typname, typtype::text, typcategory::text, typbasetype, typelem, typdelim::text
			from pg_catalog.pg_type where oid = $1`, oid).
			Scan(&row.Name, &typ, &cat, &row.BaseType, &row.Elem, &delim)
		if errors.Is(err, pgx.ErrNoRows) {
			return row, errUnknownType
		}
		if err != nil {
			return row, err
		}
		row.Type, row.Category, row.Delim = first(typ), first(cat), first(delim)
		return row, nil
	}
}

func first(s string) byte {
	if s == "" {
		return 0
	}
	return s[0]
}

// catalogPKLookup reads a table's primary-key columns, in key order.
func catalogPKLookup(q querier) func(ctx context.Context, relid uint32) ([]string, error) {
	return func(ctx context.Context, relid uint32) ([]string, error) {
		rows, err := q.Query(ctx, `select a.attname
			from pg_catalog.pg_index i
			cross join lateral unnest(i.indkey) with ordinality as k(attnum, n)
			join pg_catalog.pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
			where i.indrelid = $1 and i.indisprimary
			order by k.n`, relid)
		if err != nil {
			return nil, err
		}
		return pgx.CollectRows(rows, pgx.RowTo[string])
	}
}
