package realtime

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// teamsSQL makes public.notes under row-level security with policies of
// every shape a check must combine as PostgreSQL does: a permissive one
// on the owner, a permissive one for PUBLIC whose subquery reads the row
// unqualified, a restrictive one, and policies that do not apply to
// SELECTs of authenticated (another role's, an UPDATE one). The table
// holds row 1, owned by user 2.
var teamsSQL = `
create table public.notes (id int primary key, owner uuid, team_id int, secret text, body text);
create table public.members (team int, user_id uuid, primary key (team, user_id));
grant select on public.notes, public.members to anon, authenticated;
alter table public.notes enable row level security;
create policy own on public.notes for select to authenticated using (owner = (select auth.uid()));
create policy team on public.notes for select using (exists (select 1 from public.members m where m.team = team_id and m.user_id = auth.uid()));
create policy not_banned on public.notes as restrictive for select to authenticated using (secret is distinct from 'banned');
create policy everyone_writes on public.notes for update to authenticated using (true);
create policy service on public.notes for select to service_role using (true);
insert into public.members values (7, '` + userID(3) + `');
insert into public.notes values (1, '` + userID(2) + `', null, null, 'stored');
`

// images is rows as JSON images.
func images(rows ...string) []json.RawMessage {
	out := make([]json.RawMessage, len(rows))
	for i, r := range rows {
		out[i] = json.RawMessage(r)
	}
	return out
}

func claimsOf(subs ...string) []json.RawMessage {
	out := make([]json.RawMessage, len(subs))
	for i, s := range subs {
		if s == "" {
			out[i] = nil
			continue
		}
		out[i] = json.RawMessage(fmt.Sprintf(`{"sub":%q,"role":"authenticated"}`, s))
	}
	return out
}

// The check judges the image it is given, not the stored row, by the
// policies that apply to the role's SELECTs: permissive ones or-ed,
// restrictive ones and-ed, subqueries reading the row resolved against
// the image.
func TestVisibleManyJudgesTheImage(t *testing.T) {
	t.Parallel()
	pool := newAuthDB(t, teamsSQL)
	az := &pgAuthorizer{pool: pool}
	ctx := context.Background()
	acc, err := az.Access(ctx, "authenticated", "public", "notes")
	if err != nil {
		t.Fatal(err)
	}
	if !acc.RLS || acc.Policy == nil || acc.Policy.WholeRow {
		t.Fatalf("access %+v, policy %+v", acc, acc.Policy)
	}
	// Read under an empty search_path, every name is qualified: the rule
	// means the same in the check function whatever its search_path.
	if !strings.Contains(acc.Policy.Expr, "public.members") {
		t.Fatalf("rule %s names members unqualified", acc.Policy.Expr)
	}
	if got := fmt.Sprint(acc.Policy.Columns); got != "[owner secret team_id]" {
		t.Fatalf("the policies read %s, want [owner secret team_id]", got)
	}
	rows := images(
		// Row 1 as user 1 owns it in the image; the table says user 2.
		`{"id":1,"owner":"`+userID(1)+`"}`,
		`{"id":2,"owner":"`+userID(1)+`","secret":"banned"}`,
		`{"id":3,"team_id":7}`,
		`{"id":4,"team_id":7,"secret":"banned"}`,
		`{"id":5,"owner":"`+userID(2)+`","team_id":8}`,
	)
	vis, err := az.VisibleMany(ctx, "authenticated", acc, claimsOf(userID(1), userID(2), userID(3), ""), "public", "notes", rows)
	if err != nil {
		t.Fatal(err)
	}
	want := [][]bool{
		{true, false, false, false, false},  // user 1: its row, not the banned one
		{false, false, false, false, true},  // user 2: not row 1, which the table says it owns
		{false, false, true, false, false},  // user 3: its team's row, through the subquery
		{false, false, false, false, false}, // no claims
	}
	if fmt.Sprint(vis) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", vis, want)
	}

	// anon has only the PUBLIC policy, with no restrictive one.
	anon, err := az.Access(ctx, "anon", "public", "notes")
	if err != nil {
		t.Fatal(err)
	}
	vis, err = az.VisibleMany(ctx, "anon", anon, claimsOf(userID(3)), "public", "notes", rows)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(vis); got != "[[false false true true false]]" {
		t.Fatalf("anon with user 3's claims sees %s, want rows 3 and 4", got)
	}

	// The service role bypasses row-level security: nothing to check.
	if svc, err := az.Access(ctx, "service_role", "public", "notes"); err != nil || svc.RLS || svc.Policy != nil {
		t.Fatalf("service role access %+v, %v", svc, err)
	}

	// A changed policy is a new rule, checked by a new function on the
	// connections that have the old one.
	if _, err := pool.Exec(ctx, `alter policy own on public.notes using (owner = auth.uid() or owner is null)`); err != nil {
		t.Fatal(err)
	}
	acc2, err := az.Access(ctx, "authenticated", "public", "notes")
	if err != nil {
		t.Fatal(err)
	}
	if acc2.Policy.Expr == acc.Policy.Expr {
		t.Fatalf("the rule did not change: %s", acc2.Policy.Expr)
	}
	vis, err = az.VisibleMany(ctx, "authenticated", acc2, claimsOf(userID(2)), "public", "notes", rows)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(vis); got != "[[false false true false true]]" {
		t.Fatalf("after the change user 2 sees %s, want rows 3 (no owner) and 5", got)
	}
}

// No permissive policy lets nothing through, without asking the database;
// a policy reading the whole row needs every column.
func TestVisibleManyNoPermissivePolicyAndWholeRow(t *testing.T) {
	t.Parallel()
	pool := newAuthDB(t, `
create table public.locked (id int primary key, owner uuid);
grant select on public.locked to authenticated;
alter table public.locked enable row level security;
create policy only_restrictive on public.locked as restrictive for select to authenticated using (true);
create table public.rows (id int primary key, owner uuid, n int);
grant select on public.rows to authenticated;
alter table public.rows enable row level security;
create function public.mine(r public.rows) returns boolean language sql stable as 'select r.owner = auth.uid() and r.n > 0';
create policy p on public.rows for select to authenticated using (public.mine(rows));`)
	az := &pgAuthorizer{pool: pool}
	ctx := context.Background()
	acc, err := az.Access(ctx, "authenticated", "public", "locked")
	if err != nil {
		t.Fatal(err)
	}
	if acc.Policy == nil || acc.Policy.Expr != "" {
		t.Fatalf("policy %+v, want one that lets nothing through", acc.Policy)
	}
	vis, err := az.VisibleMany(ctx, "authenticated", acc, claimsOf(userID(1)), "public", "locked", images(`{"id":1,"owner":"`+userID(1)+`"}`))
	if err != nil || fmt.Sprint(vis) != "[[false]]" {
		t.Fatalf("got %v, %v; want nothing visible", vis, err)
	}
	acc, err = az.Access(ctx, "authenticated", "public", "rows")
	if err != nil {
		t.Fatal(err)
	}
	if !acc.Policy.WholeRow {
		t.Fatalf("policy %+v does not read the whole row", acc.Policy)
	}
	vis, err = az.VisibleMany(ctx, "authenticated", acc, claimsOf(userID(1)), "public", "rows",
		images(`{"id":1,"owner":"`+userID(1)+`","n":1}`, `{"id":2,"owner":"`+userID(1)+`","n":0}`, `{"id":3,"owner":"`+userID(2)+`","n":1}`))
	if err != nil || fmt.Sprint(vis) != "[[true false false]]" {
		t.Fatalf("got %v, %v; want row 1 only", vis, err)
	}
}
