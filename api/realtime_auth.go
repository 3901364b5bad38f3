package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fluxbase/fluxbase/auth"
	"github.com/fluxbase/fluxbase/broker/fanout"
)

// This file answers realtime's authorization questions from PostgreSQL,
// so a subscriber receives only what its own REST SELECT would return:
// table and column privileges (pg_catalog, cached by the hub), row-level
// security (one query per table, claims group and batch of changes, run
// as the subscriber's role with its claims), and the policies of private
// channels on realtime.messages, checked as Supabase does.

// errNoTable is a binding on a table that does not exist.
var errNoTable = errors.New("no such table")

// pgAuthorizer implements fanout.Authorizer on a pool whose user may
// switch to the API roles (it is granted them by the roles migration).
type pgAuthorizer struct {
	pool *pgxpool.Pool
}

// Access reads what role may SELECT of schema.table: the columns it has
// the privilege on (none without USAGE on the schema) and whether
// row-level security applies to it.
func (a *pgAuthorizer) Access(ctx context.Context, role, schema, table string) (*fanout.Access, error) {
	var rls, found bool
	var cols []string
	err := a.pool.QueryRow(ctx, `
select true,
       c.relrowsecurity and not r.rolbypassrls
         and (c.relforcerowsecurity or c.relowner <> r.oid),
       case when has_schema_privilege(r.oid, n.oid, 'USAGE') then
         array(select a.attname::text from pg_attribute a
               where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
                 and has_column_privilege(r.oid, c.oid, a.attnum, 'SELECT')
               order by a.attnum)
       else '{}'::text[] end
from pg_class c
join pg_namespace n on n.oid = c.relnamespace
join pg_roles r on r.rolname = $1
where n.nspname = $2 and c.relname = $3 and c.relkind in ('r', 'p', 'v', 'm', 'f')`,
		role, schema, table).Scan(&found, &rls, &cols)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%s.%s for role %s: %w", schema, table, role, errNoTable)
	}
	if err != nil {
		return nil, fmt.Errorf("read privileges on %s.%s: %w", schema, table, err)
	}
	acc := &fanout.Access{Columns: make(map[string]bool, len(cols)), RLS: rls}
	for _, c := range cols {
		acc.Columns[c] = true
	}
	return acc, nil
}

// Visible runs, as role with claims, one query that returns which of the
// keyed rows the role's SELECT can see.
func (a *pgAuthorizer) Visible(ctx context.Context, role string, claims json.RawMessage, schema, table string, keys []json.RawMessage) ([]bool, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	var cols []string
	var first map[string]json.RawMessage
	if err := json.Unmarshal(keys[0], &first); err != nil {
		return nil, fmt.Errorf("primary key: %w", err)
	}
	for col := range first {
		cols = append(cols, col)
	}
	if len(cols) == 0 {
		return nil, fmt.Errorf("%s.%s has no primary key to check rows by", schema, table)
	}
	rel := pgx.Identifier{schema, table}.Sanitize()
	conds := make([]string, len(cols))
	for i, col := range cols {
		id := pgx.Identifier{col}.Sanitize()
		conds[i] = "t." + id + " = r." + id
	}
	arr, err := json.Marshal(keys)
	if err != nil {
		return nil, err
	}
	q := `select k.i from jsonb_array_elements($1::jsonb) with ordinality as k(v, i)
where exists (select 1 from ` + rel + ` t, jsonb_populate_record(null::` + rel + `, k.v) r where ` + strings.Join(conds, " and ") + `)`
	vis := make([]bool, len(keys))
	err = a.asRole(ctx, role, claims, "", func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, q, arr)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var i int64
			if err := rows.Scan(&i); err != nil {
				return err
			}
			if i >= 1 && int(i) <= len(vis) {
				vis[i-1] = true
			}
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("row-level check on %s.%s: %w", schema, table, err)
	}
	return vis, nil
}

// asRole runs fn in a transaction that is rolled back, as role, with the
// claims set where auth.uid(), auth.jwt() and policies read them, and
// realtime.topic() answering topic.
func (a *pgAuthorizer) asRole(ctx context.Context, role string, claims json.RawMessage, topic string, fn func(pgx.Tx) error) error {
	tx, err := a.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // rolled back on purpose
	if len(claims) == 0 {
		claims = json.RawMessage("{}")
	}
	if _, err := tx.Exec(ctx, `select set_config('role', $1, true),
  set_config('request.jwt.claims', $2, true),
  set_config('request.jwt.claim.sub', coalesce($2::jsonb->>'sub', ''), true),
  set_config('request.jwt.claim.role', $1, true),
  set_config('realtime.topic', $3, true)`, role, string(claims), topic); err != nil {
		return fmt.Errorf("switch to role %s: %w", role, err)
	}
	return fn(tx)
}

// channelPolicies is what a private channel's claims may do.
type channelPolicies struct {
	readBroadcast, readPresence   bool
	writeBroadcast, writePresence bool
}

// policies checks the claims against the row-level policies of
// realtime.messages for topic, as Supabase does: probe rows for each
// extension are inserted, then read back and inserted again as the
// claims' role; all of it is rolled back.
func (a *pgAuthorizer) policies(ctx context.Context, claims *auth.Claims, topic string) (channelPolicies, error) {
	var p channelPolicies
	tx, err := a.pool.Begin(ctx)
	if err != nil {
		return p, fmt.Errorf("check channel policies: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // rolled back on purpose
	var ids []string
	err = func() error {
		rows, err := tx.Query(ctx, `insert into realtime.messages (topic, extension, private)
values ($1, 'broadcast', true), ($1, 'presence', true) returning id::text`, topic)
		if err != nil {
			return err
		}
		ids, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	}()
	if err != nil {
		return p, fmt.Errorf("check channel policies: probe rows: %w", err)
	}
	raw := claims.Raw
	if len(raw) == 0 {
		raw = json.RawMessage("{}")
	}
	if _, err := tx.Exec(ctx, `select set_config('role', $1, true),
  set_config('request.jwt.claims', $2, true),
  set_config('request.jwt.claim.sub', coalesce($2::jsonb->>'sub', ''), true),
  set_config('request.jwt.claim.role', $1, true),
  set_config('realtime.topic', $3, true)`, claims.Role, string(raw), topic); err != nil {
		return p, fmt.Errorf("check channel policies: switch role: %w", err)
	}
	rows, err := tx.Query(ctx, `select extension from realtime.messages where id = any($1::uuid[])`, ids)
	if err != nil && !isPermissionDenied(err) {
		return p, fmt.Errorf("check channel policies: read: %w", err)
	}
	if err == nil {
		exts, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil && !isPermissionDenied(err) {
			return p, fmt.Errorf("check channel policies: read: %w", err)
		}
		for _, e := range exts {
			switch e {
			case "broadcast":
				p.readBroadcast = true
			case "presence":
				p.readPresence = true
			}
		}
	}
	for _, ext := range []string{"broadcast", "presence"} {
		if _, err := tx.Exec(ctx, `savepoint probe`); err != nil {
			return p, fmt.Errorf("check channel policies: %w", err)
		}
		_, err := tx.Exec(ctx, `insert into realtime.messages (topic, extension, private) values ($1, $2, true)`, topic, ext)
		ok := err == nil
		if err != nil && !isPermissionDenied(err) {
			return p, fmt.Errorf("check channel policies: write: %w", err)
		}
		if _, err := tx.Exec(ctx, `rollback to savepoint probe`); err != nil {
			return p, fmt.Errorf("check channel policies: %w", err)
		}
		if ext == "broadcast" {
			p.writeBroadcast = ok
		} else {
			p.writePresence = ok
		}
	}
	return p, nil
}

// isPermissionDenied reports a refusal by privileges or policies
// (insufficient_privilege, which a row-level security violation also raises).
func isPermissionDenied(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "42501"
}
