package realtime

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fluxbase/fluxbase/broker/fanout"
	"github.com/fluxbase/fluxbase/internal/apitest"
)

// newAuthDB returns a pool on a fresh, migrated database in which setup
// has run.
var newAuthDB = apitest.NewDB

// userID is the uuid of test user n.
func userID(n int) string { return fmt.Sprintf("00000000-0000-0000-0000-%012d", n) }

// msgsSQL makes public.msgs, messages in rooms, and public.members, who
// is in which room, both empty, with row-level security on public.msgs
// and no policy.
const msgsSQL = `
create table public.msgs (id bigint primary key, room_id int not null, owner uuid,
  visibility text not null default 'private', body text);
create table public.members (room_id int, user_id uuid, primary key (room_id, user_id));
create index on public.members (user_id);
grant select on public.msgs, public.members to authenticated;
alter table public.msgs enable row level security;
`

// roomsSQL makes public.msgs: row n (1 to users) is in room n, owned by
// user n, who is the only member of room n; row 0 is public. It leaves
// row-level security on with no policy.
func roomsSQL(users int) string {
	return msgsSQL + fmt.Sprintf(`
insert into public.members select n, ('00000000-0000-0000-0000-' || lpad(n::text, 12, '0'))::uuid
  from generate_series(1, %[1]d) n;
insert into public.msgs (id, room_id, owner, body) select n, n, ('00000000-0000-0000-0000-' || lpad(n::text, 12, '0'))::uuid, 'hi'
  from generate_series(1, %[1]d) n;
insert into public.msgs (id, room_id, visibility) values (0, 0, 'public');
analyze public.msgs, public.members;
`, users)
}

// Each of many users sees exactly its own rows and the public one, under
// policies of every shape: those whose parts that do not refer to the row
// PostgreSQL computes once per statement ("(select auth.uid())", "in
// (select ...)") included, which one statement checking every claims
// would get wrong.
func TestVisibleManyEachUserSeesOnlyItsRows(t *testing.T) {
	t.Parallel()
	const users = 300
	policies := []struct{ name, using string }{
		{"owner", `owner = auth.uid() or visibility = 'public'`},
		{"owner-initplan", `owner = (select auth.uid()) or visibility = 'public'`},
		{"member-exists", `exists (select 1 from public.members m where m.room_id = msgs.room_id and m.user_id = auth.uid()) or visibility = 'public'`},
		{"member-in", `room_id in (select room_id from public.members where user_id = auth.uid()) or visibility = 'public'`},
		{"member-in-initplan", `room_id in (select room_id from public.members where user_id = (select auth.uid())) or visibility = 'public'`},
		{"claims", `room_id = (auth.jwt() ->> 'room')::int or visibility = 'public'`},
	}
	for _, p := range policies {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			pool := newAuthDB(t, roomsSQL(users)+`create policy p on public.msgs for select to authenticated using (`+p.using+`);`)
			az := &pgAuthorizer{pool: pool}
			claims := make([]json.RawMessage, users)
			for n := 1; n <= users; n++ {
				claims[n-1] = json.RawMessage(fmt.Sprintf(`{"sub":%q,"role":"authenticated","room":%d}`, userID(n), n))
			}
			// The rows' images in reverse, and the public row last: answers
			// must follow positions, not ids.
			keys := storedImages(t, pool, `select to_jsonb(m) from public.msgs m order by id desc`)
			vis, err := az.VisibleMany(context.Background(), "authenticated", access(t, az, "msgs"), claims, "public", "msgs", keys)
			if err != nil {
				t.Fatal(err)
			}
			if len(vis) != users {
				t.Fatalf("%d answers for %d claims", len(vis), users)
			}
			for c, row := range vis {
				user := c + 1
				if len(row) != len(keys) {
					t.Fatalf("user %d: %d answers for %d keys", user, len(row), len(keys))
				}
				for k, ok := range row {
					id := users - k
					if want := id == user || id == 0; ok != want {
						t.Fatalf("user %d sees row %d: %v, want %v", user, id, ok, want)
					}
				}
			}
		})
	}
}

// Composite keys, images of rows the table does not hold, empty claims, a
// second call on a connection that has the function already, and a table
// dropped and made again with other types and another policy while
// connections keep the function.
func TestVisibleManyCompositeKeys(t *testing.T) {
	t.Parallel()
	pool := newAuthDB(t, `
create table public.seats (room int, seat int, owner uuid, primary key (room, seat));
grant select on public.seats to authenticated;
alter table public.seats enable row level security;
create policy p on public.seats for select to authenticated using (owner = auth.uid() or owner is null);
insert into public.seats values (1, 1, '`+userID(1)+`'), (1, 2, '`+userID(2)+`'), (2, 1, null);`)
	az := &pgAuthorizer{pool: pool}
	claims := []json.RawMessage{
		json.RawMessage(`{"sub":"` + userID(1) + `"}`),
		json.RawMessage(`{"sub":"` + userID(2) + `"}`),
		nil,
	}
	keys := []json.RawMessage{
		json.RawMessage(`{"seat":1,"room":1,"owner":"` + userID(1) + `"}`),
		json.RawMessage(`{"room":1,"seat":2,"owner":"` + userID(2) + `"}`),
		json.RawMessage(`{"room":2,"seat":1,"owner":null}`),
		json.RawMessage(`{"room":9,"seat":9,"owner":"` + userID(3) + `"}`),
	}
	want := [][]bool{
		{true, false, true, false},
		{false, true, true, false},
		{false, false, true, false},
	}
	check := func() {
		t.Helper()
		vis, err := az.VisibleMany(context.Background(), "authenticated", access(t, az, "seats"), claims, "public", "seats", keys)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(vis) != fmt.Sprint(want) {
			t.Fatalf("got %v, want %v", vis, want)
		}
	}
	check()
	check()
	if _, err := pool.Exec(context.Background(), `drop table public.seats;
create table public.seats (room text, seat bigint, owner uuid, primary key (room, seat));
grant select on public.seats to authenticated;
alter table public.seats enable row level security;
create policy p on public.seats for select to authenticated using (owner = auth.uid());
insert into public.seats values ('1', 2, '`+userID(1)+`');`); err != nil {
		t.Fatal(err)
	}
	// Images of the new table's rows; user 1 owns the second only.
	keys[0] = json.RawMessage(`{"room":"1","seat":1,"owner":"` + userID(3) + `"}`)
	keys[1] = json.RawMessage(`{"room":"1","seat":2,"owner":"` + userID(1) + `"}`)
	want = [][]bool{
		{false, true, false, false},
		{false, false, false, false},
		{false, false, false, false},
	}
	check()
}

// countingAuthz counts the VisibleMany calls of an Authorizer.
type countingAuthz struct {
	fanout.Authorizer
	calls atomic.Int64
}

func (c *countingAuthz) VisibleMany(ctx context.Context, role string, acc *fanout.Access, claims []json.RawMessage, schema, table string, rows []json.RawMessage) ([][]bool, error) {
	c.calls.Add(1)
	return c.Authorizer.VisibleMany(ctx, role, acc, claims, schema, table, rows)
}

// access is what authenticated may read of public.<table>.
func access(t testing.TB, az *pgAuthorizer, table string) *fanout.Access {
	t.Helper()
	acc, err := az.Access(context.Background(), "authenticated", "public", table)
	if err != nil {
		t.Fatal(err)
	}
	return acc
}

// storedImages is the JSON images of rows, as query (a select of one
// jsonb column) reads them.
func storedImages(t testing.TB, pool *pgxpool.Pool, query string) []json.RawMessage {
	t.Helper()
	rows, err := pool.Query(context.Background(), query)
	if err != nil {
		t.Fatal(err)
	}
	imgs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (json.RawMessage, error) {
		var b []byte
		err := r.Scan(&b)
		return json.RawMessage(b), err
	})
	if err != nil {
		t.Fatal(err)
	}
	return imgs
}

// msgsChange is a change event of the log inserting row id of
// public.msgs, in room, owned by owner, with visibility.
func msgsChange(id, room int, owner, visibility string) []byte {
	return fmt.Appendf(nil, `{"commit_lsn":"0/1","lsn":"0/1","xid":1,"commit_ts":"2024-05-01T10:00:00.123456Z","tx_index":0,"tx_last":true,"schema":"public","table":"msgs","op":"insert","pk":{"id":%d},"record":{"id":%d,"room_id":%d,"owner":%q,"visibility":%q,"body":"hi"},"old_record":null,"columns":[{"name":"id","type":"int8"},{"name":"room_id","type":"int4"},{"name":"owner","type":"uuid"},{"name":"visibility","type":"text"},{"name":"body","type":"text"}],"unchanged_toast":[]}`, id, id, room, owner, visibility)
}

// Through the hub: 300 users under a membership policy each receive
// exactly their row and the public one, for a handful of checks, not one
// per user; a user whose claims make the policy fail (a sub that is not a
// uuid) costs only itself its changes.
func TestHubRowLevelSecurityManyUsers(t *testing.T) {
	t.Parallel()
	const users = 300
	pool := newAuthDB(t, roomsSQL(users)+`create policy p on public.msgs for select to authenticated using (
  exists (select 1 from public.members m where m.room_id = msgs.room_id and m.user_id = auth.uid()) or visibility = 'public');`)
	az := &countingAuthz{Authorizer: &pgAuthorizer{pool: pool}}
	h := fanout.New(fanout.Config{AuthChunk: 64}, nil, nil, az, nil)
	defer h.Close()
	join := func(sub string) *fanout.Client {
		c := h.NewClient(fanout.V2)
		_, err := c.Join(fanout.JoinSpec{Topic: "realtime:msgs",
			Changes: []fanout.Binding{{ID: 1, Event: "*", Schema: "public", Table: "msgs"}},
			Auth:    fanout.Auth{Role: "authenticated", Claims: json.RawMessage(`{"sub":"` + sub + `","role":"authenticated"}`)}})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	clients := make([]*fanout.Client, users+1)
	for n := 1; n <= users; n++ {
		clients[n] = join(userID(n))
	}
	bad := join("not-a-uuid")
	var batch []fanout.Msg
	for id := 0; id <= users; id++ {
		vis := "private"
		if id == 0 {
			vis = "public"
		}
		batch = append(batch, fanout.Msg{Seq: uint64(id + 1), Data: msgsChange(id, id, userID(id), vis)})
	}
	h.Dispatch(context.Background(), batch)

	for n := 1; n <= users; n++ {
		got := changeIDs(t, clients[n])
		if len(got) != 2 || got[0] != 0 || got[1] != n {
			t.Fatalf("user %d received rows %v, want [0 %d]", n, got, n)
		}
	}
	if got := changeIDs(t, bad); len(got) != 0 {
		t.Fatalf("the user whose claims fail the policy received rows %v", got)
	}
	// 301 groups in chunks of 64 make 5 calls; the chunk holding the
	// failing user is split down to it: 2 more calls each of 6 halvings.
	if n := az.calls.Load(); n > 5+12 {
		t.Fatalf("%d row-level checks for %d claims groups, want at most 17", n, users+1)
	}
	t.Logf("%d row-level checks for %d claims groups", az.calls.Load(), users+1)
}

// changeIDs is the ids of the rows of the postgres_changes frames queued
// to c, in order.
func changeIDs(t *testing.T, c *fanout.Client) []int {
	t.Helper()
	var ids []int
	for _, f := range c.Queue.Take(nil) {
		var arr []json.RawMessage
		if err := json.Unmarshal(f.Bytes(), &arr); err != nil || len(arr) != 5 {
			t.Fatalf("frame %s", f.Bytes())
		}
		var ev string
		_ = json.Unmarshal(arr[3], &ev)
		if ev != "postgres_changes" {
			continue
		}
		var p struct {
			Data struct {
				Record struct{ ID int }
			}
		}
		if err := json.Unmarshal(arr[4], &p); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, p.Data.Record.ID)
	}
	return ids
}
