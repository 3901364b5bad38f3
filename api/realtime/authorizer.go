package realtime

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
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
// so a subscriber receives only what its own REST SELECT would have
// returned at the change: table and column privileges and the rule of
// the row-level policies (pg_catalog, cached by the hub), row-level
// security judged on the row images the changes carry (one statement per
// table, role and chunk of claims groups for a batch of changes, run as
// the role with each group's claims in turn; docs/ARCHITECTURE.md,
// "Realtime authorization"), and the policies of private channels on
// realtime.messages, checked as Supabase does.

// errNoTable is a binding on a table that does not exist.
var errNoTable = errors.New("no such table")

// pgAuthorizer implements fanout.Authorizer on a pool whose user may
// switch to the API roles (it is granted them by the roles migration).
type pgAuthorizer struct {
	pool *pgxpool.Pool

	slotsOnce sync.Once
	slots     chan struct{} // a token for each row-level check running
}

// accessSQL reads what role $1 may SELECT of table $3 in schema $2: the
// columns it has the privilege on (none without USAGE on the schema),
// whether row-level security applies to it, and the USING expressions of
// the policies that apply to its SELECTs (FOR SELECT or FOR ALL, to
// PUBLIC or to a role whose privileges it has, as PostgreSQL picks them),
// permissive and restrictive apart, with the columns they read and
// whether one reads the row as a whole. It runs with an empty
// search_path, so the expressions come back with every name qualified and
// mean the same in the check function whatever its search_path.
const accessSQL = `
with t as (
  select c.oid, c.relrowsecurity, c.relforcerowsecurity, c.relowner, n.oid as nsp,
         r.oid as roleid, r.rolbypassrls or r.rolsuper as bypass
  from pg_catalog.pg_class c
  join pg_catalog.pg_namespace n on n.oid = c.relnamespace
  join pg_catalog.pg_roles r on r.rolname = $1
  where n.nspname = $2 and c.relname = $3 and c.relkind in ('r', 'p', 'v', 'm', 'f')
), pol as (
  select p.oid, p.polname, p.polpermissive,
         pg_catalog.pg_get_expr(p.polqual, p.polrelid) as qual,
         p.polqual::text like '%:varattno 0 %' as wholerow
  from pg_catalog.pg_policy p, t
  where p.polrelid = t.oid and p.polcmd in ('r', '*') and p.polqual is not null
    and exists (select from pg_catalog.unnest(p.polroles) as pr(oid)
                where case when pr.oid = 0 then true
                           else pg_catalog.pg_has_role(t.roleid, pr.oid, 'USAGE') end)
)
select t.relrowsecurity and not t.bypass and (t.relforcerowsecurity or t.relowner <> t.roleid),
       case when pg_catalog.has_schema_privilege(t.roleid, t.nsp, 'USAGE') then
         array(select a.attname::text from pg_catalog.pg_attribute a
               where a.attrelid = t.oid and a.attnum > 0 and not a.attisdropped
                 and pg_catalog.has_column_privilege(t.roleid, t.oid, a.attnum, 'SELECT')
               order by a.attnum)
       else '{}'::text[] end,
       array(select qual from pol where polpermissive order by polname),
       array(select qual from pol where not polpermissive order by polname),
       coalesce((select bool_or(wholerow) from pol), false),
       array(select distinct a.attname::text
             from pg_catalog.pg_depend d
             join pg_catalog.pg_attribute a on a.attrelid = d.refobjid and a.attnum = d.refobjsubid
             where d.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass and d.objid in (select oid from pol)
               and d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass and d.refobjid = t.oid
               and d.refobjsubid > 0
             order by 1)
from t`

// Access reads what role may SELECT of schema.table and, when row-level
// security applies, the rule its policies make for its reads (see
// accessSQL and policyExpr).
func (a *pgAuthorizer) Access(ctx context.Context, role, schema, table string) (*fanout.Access, error) {
	var rls, whole bool
	var cols, permissive, restrictive, read []string
	// One round trip: a batch sent with one Sync is one implicit
	// transaction, so the local search_path holds for the query.
	b := &pgx.Batch{}
	b.Queue(`select pg_catalog.set_config('search_path', '', true)`)
	b.Queue(accessSQL, role, schema, table)
	br := a.pool.SendBatch(ctx, b)
	_, err := br.Exec()
	if err == nil {
		err = br.QueryRow().Scan(&rls, &cols, &permissive, &restrictive, &whole, &read)
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
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
	if rls {
		acc.Policy = &fanout.Policy{Expr: policyExpr(permissive, restrictive), Columns: read, WholeRow: whole}
	}
	return acc, nil
}

// policyExpr combines the USING expressions of the policies that apply as
// PostgreSQL does: a row passes when one permissive policy lets it and
// every restrictive one does; with no permissive policy, none passes ("").
func policyExpr(permissive, restrictive []string) string {
	if len(permissive) == 0 {
		return ""
	}
	expr := "((" + strings.Join(permissive, ") or (") + "))"
	if len(restrictive) > 0 {
		expr += " and ((" + strings.Join(restrictive, ") and (") + "))"
	}
	return expr
}

// VisibleMany reports, for each of claims and each row image, whether the
// image passes acc's policies as role with those claims. All the claims
// are answered by one statement, in one transaction as role that is
// rolled back: it calls the connection's check function of the rule (see
// checkFunc) once for each claims. The images are judged as they are,
// not looked up in the table: a change is judged on the row it carries.
func (a *pgAuthorizer) VisibleMany(ctx context.Context, role string, acc *fanout.Access, claims []json.RawMessage, schema, table string, rows []json.RawMessage) ([][]bool, error) {
	out := make([][]bool, len(claims))
	for c := range out {
		out[c] = make([]bool, len(rows))
	}
	if len(claims) == 0 || len(rows) == 0 {
		return out, nil
	}
	if acc == nil || acc.Policy == nil {
		return nil, fmt.Errorf("row-level check on %s.%s: its policies were not read", schema, table)
	}
	if acc.Policy.Expr == "" {
		return out, nil // no permissive policy: no row passes
	}
	fn, ddl := checkFunc(table, acc.Policy.Expr)
	rel := pgx.Identifier{schema, table}.Sanitize()
	texts := make([]string, len(claims))
	for c, cl := range claims {
		texts[c] = string(cl)
		if len(cl) == 0 {
			texts[c] = "{}"
		}
	}
	arr, err := json.Marshal(rows)
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
	// The images become rows of the table's type once, not once per
	// claims.
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
		// A connection new to this rule: make the function, then ask
		// again.
		if _, err = conn.Exec(ctx, ddl); err != nil {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("row-level check on %s.%s: %w", schema, table, err)
	}
	for _, p := range pairs {
		if c, i := p[0]-1, p[1]-1; c >= 0 && c < int64(len(out)) && i >= 0 && i < int64(len(rows)) {
			out[c][i] = true
		}
	}
	return out, nil
}

// visiblePairs runs the check query q as role in a transaction that is
// rolled back, and returns its (claims, image) pairs, both numbered from
// 1.
func visiblePairs(ctx context.Context, conn *pgx.Conn, role, q string, claims []string, rows string) ([][2]int64, error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // rolled back on purpose
	// The claims are set by the check function, once for each.
	if err := (pgrole.As{Role: role, Settings: map[string]string{"realtime.topic": ""}}).Set(ctx, tx); err != nil {
		return nil, err
	}
	// Planned afresh each time: a plan kept by the connection would refer
	// to the table's type by its oid, gone once the table is made again.
	res, err := tx.Query(ctx, q, pgx.QueryExecModeExec, claims, rows)
	if err != nil {
		return nil, err
	}
	var pairs [][2]int64
	var p [2]int64
	_, err = pgx.ForEachRow(res, []any{&p[0], &p[1]}, func() error {
		pairs = append(pairs, p)
		return nil
	})
	return pairs, err
}

// checkFunc returns the name and the definition of the temporary function
// that tells which of an array of rows of a table (the images of changes)
// one claims may see, by their positions. Its first statement sets the
// claims where auth.uid(), auth.jwt() and policies read them; its second
// evaluates expr, the rule of the table's policies, on each row, exposed
// under the table's own name so that the expression's references to the
// row, qualified or not, and those of its subqueries, resolve as in the
// policies (unnest, not a sub-select, so that the row as a whole, as in
// "f(notes)", is of the table's type). The array is polymorphic so that
// the function does not depend on the table's type, which would keep the
// table from being dropped.
//
// A function, not a subquery of the calling statement, because each call
// runs its statements afresh: within one statement PostgreSQL computes a
// part of a policy that does not refer to the row once (an InitPlan such
// as "(select auth.uid())", the hash table of "col in (select ...)"), and
// would answer every claims after the first with the first one's rows.
//
// The EXISTS has "offset 0" so that it stays a test of each row on its
// own: pulled up into a semi-join, PostgreSQL may plan a hash join of the
// rows with a scan of a whole table the policy reads (a membership table,
// say), once per claims.
//
// It lives in pg_temp, so on one connection until that closes; its name
// is a digest of its body, so a changed policy makes a new function.
func checkFunc(table, expr string) (name, ddl string) {
	body := `select ` + pgrole.ClaimsSQL("$1") + `;
select s.i from pg_catalog.generate_subscripts($2, 1) as s(i)
where exists (select from pg_catalog.unnest(array[($2)[s.i]]) as ` + pgx.Identifier{table}.Sanitize() + `
  where ` + expr + ` offset 0)`
	sum := sha256.Sum256([]byte(body))
	name = "pg_temp.fluxbase_check_" + hex.EncodeToString(sum[:12])
	tag := "$body$"
	for n := 0; strings.Contains(body, tag); n++ {
		tag = "$body" + strconv.Itoa(n) + "$"
	}
	ddl = `create or replace function ` + name + `(claims text, rows anyarray) returns setof int
language sql volatile as ` + tag + body + tag + `;
grant execute on function ` + name + `(text, anyarray) to public`
	return name, ddl
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
