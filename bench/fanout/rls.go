package fanout

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fluxbase/fluxbase/auth"
	"github.com/fluxbase/fluxbase/bench/realtime"
)

// The row-level security mode: the table gets a room_id, a members table
// says which user belongs to which room, and a policy lets role
// authenticated see a row when its user is a member of the row's room, as
// a chat application would. Every subscriber joins with its own user's
// token; the rows go to room Room, whose members are the subscribers' users.
// A few outsiders, members of another room, join the same channel and must
// receive nothing.
const (
	MembersTable = "fluxbench_members"
	Room         = 1
	otherRoom    = 2
	// Policy is the row-level policy on Table, as created.
	Policy = `using (exists (select 1 from public.` + MembersTable + ` m where m.room_id = ` + Table + `.room_id and m.user_id = auth.uid()))`
)

// RLSInfo describes a row-level security run.
type RLSInfo struct {
	Users              int    `json:"users"`
	Outsiders          int    `json:"outsiders"`
	OutsidersConnected int    `json:"outsiders_connected"`
	Policy             string `json:"policy"`
}

// userID is the uuid of user i: distinct, valid and the same every run.
func userID(i int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012x", i+1) }

// createTable makes the table the changes mode writes, anew so no earlier
// run's policy or columns remain; with rls, the membership tables and
// policy too, and users members of Room, outsiders of another room.
func createTable(ctx context.Context, pool *pgxpool.Pool, rls bool, users, outsiders int) error {
	stmts := []string{
		`drop table if exists public.` + Table + `, public.` + MembersTable,
		`create table public.` + Table + ` (
			id bigserial primary key, bench_seq bigint not null, bench_ts bigint not null, pad text not null default '')`,
		`grant select on public.` + Table + ` to anon, authenticated`,
	}
	if rls {
		stmts = []string{
			stmts[0],
			`create table public.` + Table + ` (
				id bigserial primary key, bench_seq bigint not null, bench_ts bigint not null, pad text not null default '',
				room_id bigint not null)`,
			// The policy looks members up by auth.uid(): user_id needs an
			// index of its own (as Supabase's guide to row-level security
			// advises), or every check scans the whole primary key.
			`create table public.` + MembersTable + ` (room_id bigint not null, user_id uuid not null, primary key (room_id, user_id))`,
			`create index on public.` + MembersTable + ` (user_id)`,
			`alter table public.` + Table + ` enable row level security`,
			`create policy fluxbench_room_members on public.` + Table + ` for select to authenticated ` + Policy,
			`grant select on public.` + Table + `, public.` + MembersTable + ` to authenticated`,
		}
	}
	for _, q := range stmts {
		if _, err := pool.Exec(ctx, q); err != nil {
			return fmt.Errorf("prepare %s: %w", Table, err)
		}
	}
	if !rls {
		return nil
	}
	add := func(room, from, n int) error {
		ids := make([]string, n)
		for i := range ids {
			ids[i] = userID(from + i)
		}
		_, err := pool.Exec(ctx, `insert into public.`+MembersTable+` (room_id, user_id) select $1, unnest($2::uuid[])`, room, ids)
		return err
	}
	if err := add(Room, 0, users); err != nil {
		return fmt.Errorf("add room members: %w", err)
	}
	if err := add(otherRoom, users, outsiders); err != nil {
		return fmt.Errorf("add outsiders: %w", err)
	}
	if _, err := pool.Exec(ctx, `analyze public.`+MembersTable); err != nil {
		return fmt.Errorf("analyze %s: %w", MembersTable, err)
	}
	return nil
}

// userJoins signs a token for each of n users from first on (HS256 with
// the nodes' secret, claims as Supabase Auth issues them for a signed-in
// user) and makes the phx_join payload that carries it, as supabase-js
// sends it after setAuth.
func userJoins(secret string, first, n int, bindings []realtime.Binding, valid time.Duration) ([]json.RawMessage, error) {
	now := time.Now()
	out := make([]json.RawMessage, n)
	for i := range out {
		tok, err := auth.Sign(secret, map[string]any{
			"sub":  userID(first + i),
			"role": auth.RoleAuthenticated,
			"aud":  "authenticated",
			"iat":  now.Unix(),
			"exp":  now.Add(valid).Unix(),
		})
		if err != nil {
			return nil, fmt.Errorf("sign a user token: %w", err)
		}
		out[i] = realtime.JoinPayload(tok, bindings)
	}
	return out, nil
}

// subscriberJoins gives subscriber i the join of user i mod users.
func subscriberJoins(users []json.RawMessage, subscribers int) []json.RawMessage {
	out := make([]json.RawMessage, subscribers)
	for i := range out {
		out[i] = users[i%len(users)]
	}
	return out
}
