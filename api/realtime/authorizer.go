package realtime

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fluxbase/fluxbase/auth"
	"github.com/fluxbase/fluxbase/broker/fanout"
	"github.com/fluxbase/fluxbase/pgrole"
)

// This file answers realtime's authorization questions from PostgreSQL,
// so a subscriber receives only what its own REST SELECT would return:
// table and column privileges (pg_catalog, cached by the hub), row-level
// security (one statement per table, role and chunk of claims groups for
// a batch of changes, run as the role with each group's claims in turn),
// and the policies of private channels on realtime.messages, checked as
// Supabase does.

// errNoTable is a binding on a table that does not exist.
var errNoTable = errors.New("no such table")

// pgAuthorizer implements fanout.Authorizer on a pool whose user may
// switch to the API roles (it is granted them by the roles migration).
type pgAuthorizer struct {
	pool *pgxpool.Pool

	slotsOnce sync.Once
	slots     chan struct{} // a token for each row-level check running
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

// VisibleMany reports, for each of claims and each keyed row, whether a
// SELECT on schema.table as role with those claims returns the row. All
// the claims are answered by one statement, in one transaction as role
// that is rolled back: it calls the connection's visibility function of
// the table (see visibleFunc) once for each claims.
func (a *pgAuthorizer) VisibleMany(ctx context.Context, role string, claims []json.RawMessage, schema, table string, keys []json.RawMessage) ([][]bool, error) {
	out := make([][]bool, len(claims))
	for c := range out {
		out[c] = make([]bool, len(keys))
	}
	if len(claims) == 0 || len(keys) == 0 {
		return out, nil
	}
	fn, ddl, err := visibleFunc(schema, table, keys[0])
	if err != nil {
		return nil, err
	}
	rel := pgx.Identifier{schema, table}.Sanitize()
	texts := make([]string, len(claims))
	for c, cl := range claims {
		texts[c] = string(cl)
		if len(cl) == 0 {
			texts[c] = "{}"
		}
	}
	arr, err := json.Marshal(keys)
	if err != nil {
		return nil, err
	}
	release, err := a.acquireSlot(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	conn, err := a.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("row-level check on %s.%s: %w", schema, table, err)
	}
	defer conn.Release()
	// The keys become rows of the table's type once, not once per claims.
	q := `select c.g, v.i from unnest($1::text[]) with ordinality as c(claims, g)
cross join lateral ` + fn + `(c.claims, array(
  select pg_catalog.jsonb_populate_record(null::` + rel + `, k.v)
  from pg_catalog.jsonb_array_elements($2::jsonb) with ordinality as k(v, n) order by k.n)) as v(i)`
	var pairs [][2]int64
	for attempt := 0; ; attempt++ {
		pairs, err = visiblePairs(ctx, conn.Conn(), role, q, texts, string(arr))
		if attempt > 0 || !isMissingFunction(err) {
			break
		}
		// A connection new to this table: make the function, then ask
		// again.
		if _, err = conn.Exec(ctx, ddl); err != nil {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("row-level check on %s.%s: %w", schema, table, err)
	}
	for _, p := range pairs {
		if c, i := p[0]-1, p[1]-1; c >= 0 && c < int64(len(out)) && i >= 0 && i < int64(len(keys)) {
			out[c][i] = true
		}
	}
	return out, nil
}

// visiblePairs runs the visibility query q as role in a transaction that
// is rolled back, and returns its (claims, key) pairs, both numbered from
// 1.
func visiblePairs(ctx context.Context, conn *pgx.Conn, role, q string, claims []string, keys string) ([][2]int64, error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // rolled back on purpose
	// The claims are set by the visibility function, once for each.
	if err := (pgrole.As{Role: role, Settings: map[string]string{"realtime.topic": ""}}).Set(ctx, tx); err != nil {
		return nil, err
	}
	// Planned afresh each time: a plan kept by the connection would refer
	// to the table's type by its oid, gone once the table is made again.
	rows, err := tx.Query(ctx, q, pgx.QueryExecModeExec, claims, keys)
	if err != nil {
		return nil, err
	}
	var pairs [][2]int64
	var p [2]int64
	_, err = pgx.ForEachRow(rows, []any{&p[0], &p[1]}, func() error {
		pairs = append(pairs, p)
		return nil
	})
	return pairs, err
}

// visibleFunc returns the name and the definition of the temporary
// function that tells which of an array of rows of schema.table (only
// their key columns filled in) one claims may see, by their positions.
// key is one of the keys, for the names of the key columns. The
// function's first statement sets the claims where auth.uid(), auth.jwt()
// and policies read them; its second selects the keyed rows, so
// row-level security filters them as for those claims. The array is
// polymorphic so that the function does not depend on the table's type,
// which would keep the table from being dropped.
//
// A function, not a subquery of the calling statement, because each call
// runs its statements afresh: within one statement PostgreSQL computes a
// part of a policy that does not refer to the row once (an InitPlan such
// as "(select auth.uid())", the hash table of "col in (select ...)", the
// inner side of a hash join), and would answer every claims after the
// first with the first one's rows.
//
// The EXISTS has "offset 0" so that it stays a probe of the primary key
// for each key: pulled up into a semi-join, PostgreSQL may plan a hash
// join over a scan of the whole table, the policy evaluated on every row
// — cheap on a small table, and as slow as the table is large.
//
// It lives in pg_temp, so on one connection until that closes; its name
// is a digest of its body.
func visibleFunc(schema, table string, key json.RawMessage) (name, ddl string, err error) {
	var first map[string]json.RawMessage
	if err := json.Unmarshal(key, &first); err != nil {
		return "", "", fmt.Errorf("primary key: %w", err)
	}
	if len(first) == 0 {
		return "", "", fmt.Errorf("%s.%s has no primary key to check rows by", schema, table)
	}
	cols := make([]string, 0, len(first))
	for col := range first {
		cols = append(cols, col)
	}
	sort.Strings(cols)
	rel := pgx.Identifier{schema, table}.Sanitize()
	conds := make([]string, len(cols))
	for i, col := range cols {
		id := pgx.Identifier{col}.Sanitize()
		conds[i] = "t." + id + " = ($2)[s.i]." + id
	}
	body := `select ` + pgrole.ClaimsSQL("$1") + `;
select s.i from pg_catalog.generate_subscripts($2, 1) as s(i)
where exists (select 1 from ` + rel + ` t where ` + strings.Join(conds, " and ") + ` offset 0)`
	sum := sha256.Sum256([]byte(body))
	name = "pg_temp.fluxbase_visible_" + hex.EncodeToString(sum[:12])
	tag := "$body$"
	for n := 0; strings.Contains(body, tag); n++ {
		tag = "$body" + strconv.Itoa(n) + "$"
	}
	ddl = `create or replace function ` + name + `(claims text, keys anyarray) returns setof int
language sql volatile as ` + tag + body + tag + `;
grant execute on function ` + name + `(text, anyarray) to public`
	return name, ddl, nil
}

// acquireSlot waits for one of the row-level checks that may run at once:
// half the pool, so that the checks of a large batch leave connections
// to other requests.
func (a *pgAuthorizer) acquireSlot(ctx context.Context) (release func(), err error) {
	a.slotsOnce.Do(func() {
		a.slots = make(chan struct{}, max(1, int(a.pool.Config().MaxConns)/2))
	})
	select {
	case a.slots <- struct{}{}:
		return func() { <-a.slots }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
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
	as := pgrole.As{Role: claims.Role, Claims: claims.Raw, Settings: map[string]string{"realtime.topic": topic}}
	if err := as.Set(ctx, tx); err != nil {
		return p, fmt.Errorf("check channel policies: %w", err)
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

// isMissingFunction reports a call of a function that does not exist,
// or of one in pg_temp on a connection that has no temporary schema yet.
func isMissingFunction(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "42883" || pe.Code == "3F000")
}
