package e2e

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
)

// The tests of this file are the realtime leaks found by trying the node
// as an attacker would: two users under the row-level policy
// owner = auth.uid() of notesSQL, with a column grant that hides secret,
// signed in with the anon key. Each asserts what user B may receive and
// nothing more. Absence is asserted without waiting on a clock: each test
// ends with a sentinel change B may see, and a channel receives its
// changes in log order, so whatever B was going to receive before the
// sentinel has arrived when the sentinel does.

// A's private note, in the states it goes through.
const (
	privateNote = "private note of A: salary 9000"
	privateEdit = "private note of A: salary 9500"
	scrubbed    = "for B"
	sentinel    = "sentinel for B"
)

// bindingIDs is the ids the join reply r gave the bindings, in order.
func bindingIDs(t *testing.T, r *msg) []uint32 {
	t.Helper()
	resp, _ := r.Payload["response"].(map[string]any)
	pc, _ := resp["postgres_changes"].([]any)
	ids := make([]uint32, len(pc))
	for i, b := range pc {
		id, ok := b.(map[string]any)["id"].(float64)
		if !ok {
			t.Fatalf("binding %d has no id: %s", i, r.Raw)
		}
		ids[i] = uint32(id)
	}
	return ids
}

// changeData is the data object of a postgres_changes message.
func changeData(m *msg) map[string]any {
	d, _ := m.Payload["data"].(map[string]any)
	return d
}

// payloadIDs is the binding ids a postgres_changes message matched.
func payloadIDs(m *msg) []uint32 {
	raw, _ := m.Payload["ids"].([]any)
	ids := make([]uint32, 0, len(raw))
	for _, v := range raw {
		f, _ := v.(float64)
		ids = append(ids, uint32(f))
	}
	sort.Slice(ids, func(a, b int) bool { return ids[a] < ids[b] })
	return ids
}

// untilSentinel inserts a row of user B with body sentinel and returns
// the changes c received before it, which it must receive.
func untilSentinel(t *testing.T, n *solo, c *client) []*msg {
	t.Helper()
	if _, err := n.db.Exec(context.Background(), `insert into public.notes (owner, body, secret) values ($1, $2, 'classified')`, userB, sentinel); err != nil {
		t.Fatal(err)
	}
	var got []*msg
	for {
		m := c.expect("the sentinel change", isChange)
		if rec := record(m); rec["body"] == sentinel {
			return got
		}
		got = append(got, m)
	}
}

// noneCarries fails when a received frame carries one of A's private
// values anywhere: record, old_record, or otherwise.
func noneCarries(t *testing.T, got []*msg, private ...string) {
	t.Helper()
	for _, m := range got {
		for _, p := range private {
			if strings.Contains(string(m.Raw), p) {
				t.Fatalf("B received A's private %q: %s", p, m.Raw)
			}
		}
	}
}

// describe lists the changes as "TYPE body" for failure messages.
func describe(got []*msg) string {
	var s []string
	for _, m := range got {
		d := changeData(m)
		body := record(m)["body"]
		if d["type"] == "DELETE" {
			body = d["old_record"]
		}
		s = append(s, fmt.Sprintf("%v %v", d["type"], body))
	}
	return "[" + strings.Join(s, ", ") + "]"
}

// onlyKey fails unless old is exactly the primary key of notes, id.
func onlyKey(t *testing.T, m *msg) {
	t.Helper()
	old, _ := changeData(m)["old_record"].(map[string]any)
	if len(old) != 1 || old["id"] == nil {
		t.Fatalf("old_record is %v, want only the primary key: %s", old, m.Raw)
	}
}

// onlyHandover fails unless got is the one UPDATE that handed A's row to
// B, with the key only as old_record, and carries none of private.
func onlyHandover(t *testing.T, got []*msg, private ...string) {
	t.Helper()
	noneCarries(t, got, private...)
	if len(got) != 1 || changeData(got[0])["type"] != "UPDATE" || record(got[0])["body"] != scrubbed {
		t.Fatalf("B received %s, want only the handover UPDATE", describe(got))
	}
	onlyKey(t, got[0])
}

// handOver gives A's row id to B with its note scrubbed.
func handOver(t *testing.T, n *solo, id int64) {
	t.Helper()
	if _, err := n.db.Exec(context.Background(), `update public.notes set owner = $1, body = $2 where id = $3`, userB, scrubbed, id); err != nil {
		t.Fatal(err)
	}
}

// Finding 1, replayed: A writes a row with a private note, edits it, then
// hands it to B with the note scrubbed. B resuming from the start of the
// log receives the handover only, judged on the row it carries, not A's
// insert and edit because the row is B's now.
func TestLeakHistoryOnResume(t *testing.T) {
	t.Parallel()
	n := startNode(t, notesSQL)
	ctx := context.Background()
	var id int64
	if err := n.db.QueryRow(ctx, `insert into public.notes (owner, body, secret) values ($1, $2, 'classified') returning id`, userA, privateNote).Scan(&id); err != nil {
		t.Fatal(err)
	}
	if _, err := n.db.Exec(ctx, `update public.notes set body = $1 where id = $2`, privateEdit, id); err != nil {
		t.Fatal(err)
	}
	handOver(t, n, id)

	b := dial(t, n.url, n.anon)
	cfg := changes("notes")
	cfg["postgres_changes_resume"] = map[string]any{"log_seq": 1}
	b.mustJoin("realtime:notes", cfg, userToken(t, userB))
	onlyHandover(t, untilSentinel(t, n, b), privateNote, privateEdit)
}

// Finding 1, live: an insert and its handover in one transaction. B
// receives the handover, not A's insert.
func TestLeakInsertAndHandoverInOneTransaction(t *testing.T) {
	t.Parallel()
	n := startNode(t, notesSQL)
	b := dial(t, n.url, n.anon)
	b.mustJoin("realtime:notes", changes("notes"), userToken(t, userB))
	ctx := context.Background()
	tx, err := n.db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // committed below
	var id int64
	if err := tx.QueryRow(ctx, `insert into public.notes (owner, body, secret) values ($1, $2, 'classified') returning id`, userA, privateNote).Scan(&id); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `update public.notes set owner = $1, body = $2 where id = $3`, userB, scrubbed, id); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	onlyHandover(t, untilSentinel(t, n, b), privateNote)
}

// Finding 2: an UPDATE that hands A's row to B carries only the primary
// key in old_record, not A's row; an UPDATE of B's own row, whose old row
// B could read, carries that old row (without the unreadable column).
func TestLeakUpdateOldRecord(t *testing.T) {
	t.Parallel()
	n := startNode(t, notesSQL)
	b := dial(t, n.url, n.anon)
	b.mustJoin("realtime:notes", map[string]any{"postgres_changes": []any{
		map[string]any{"event": "UPDATE", "schema": "public", "table": "notes"},
		map[string]any{"event": "INSERT", "schema": "public", "table": "notes"},
	}}, userToken(t, userB))
	theirs, mine := twoRows(t, n, b, privateNote, "my draft")
	handOver(t, n, theirs)
	if _, err := n.db.Exec(context.Background(), `update public.notes set body = 'my final' where id = $1`, mine); err != nil {
		t.Fatal(err)
	}
	got := untilSentinel(t, n, b)
	noneCarries(t, got, privateNote, userA)
	if len(got) != 2 {
		t.Fatalf("B received %s, want the handover and its own edit", describe(got))
	}
	onlyKey(t, got[0])
	old, _ := changeData(got[1])["old_record"].(map[string]any)
	if old["body"] != "my draft" || old["owner"] != userB {
		t.Fatalf("the edit of B's own row has old_record %v, want its old row: %s", old, got[1].Raw)
	}
	if _, ok := old["secret"]; ok {
		t.Fatalf("old_record carries a column B may not read: %s", got[1].Raw)
	}
}

// twoRows inserts a row of A's with body theirs and one of B's with body
// mine, once b (joined with a binding on INSERT) has seen B's: it sees
// B's insert only.
func twoRows(t *testing.T, n *solo, b *client, theirs, mine string) (int64, int64) {
	t.Helper()
	ctx := context.Background()
	var a, own int64
	if err := n.db.QueryRow(ctx, `insert into public.notes (owner, body, secret) values ($1, $2, 'classified') returning id`, userA, theirs).Scan(&a); err != nil {
		t.Fatal(err)
	}
	if err := n.db.QueryRow(ctx, `insert into public.notes (owner, body, secret) values ($1, $2, 'classified') returning id`, userB, mine).Scan(&own); err != nil {
		t.Fatal(err)
	}
	got := untilSentinel(t, n, b)
	noneCarries(t, got, theirs)
	if len(got) != 1 || record(got[0])["body"] != mine {
		t.Fatalf("B received %s, want its own insert only", describe(got))
	}
	return a, own
}

// Finding 3: filters may name only columns the subscriber may read, in
// every form of binding. Filters on the hidden column secret in bindings
// on every table ("table": "*") or every schema ("schema": "*") never
// match, so the ids of the changes B receives do not tell which probe of
// the value matched.
func TestLeakFilterOnUnreadableColumn(t *testing.T) {
	t.Parallel()
	n := startNode(t, notesSQL)
	b := dial(t, n.url, n.anon)
	probes := []string{"secret=eq.alice-secret-1", "secret=like.alice%", "secret=like.bob%", "secret=like.a%"}
	var bindings []any
	for _, f := range probes {
		bindings = append(bindings,
			map[string]any{"event": "INSERT", "schema": "public", "table": "*", "filter": f},
			map[string]any{"event": "INSERT", "schema": "*", "table": "notes", "filter": f},
			map[string]any{"event": "INSERT", "schema": "*", "table": "*", "filter": f})
	}
	// The one binding that may match: no filter.
	bindings = append(bindings, map[string]any{"event": "INSERT", "schema": "public", "table": "notes"})
	_, r := b.join("realtime:probe", map[string]any{"postgres_changes": bindings}, userToken(t, userB))
	if r.Payload["status"] != "ok" {
		t.Fatalf("join: %s", r.Raw)
	}
	ids := bindingIDs(t, r)
	plain := ids[len(ids)-1]
	if _, err := n.db.Exec(context.Background(), `insert into public.notes (owner, body, secret) values ($1, 'probed', 'alice-secret-1')`, userB); err != nil {
		t.Fatal(err)
	}
	got := untilSentinel(t, n, b)
	if len(got) != 1 || record(got[0])["body"] != "probed" {
		t.Fatalf("B received %s, want its probed row", describe(got))
	}
	if ids := payloadIDs(got[0]); !slices.Equal(ids, []uint32{plain}) {
		t.Fatalf("the probed row matched bindings %v, want only the unfiltered one %d (filters on secret matched): %s", ids, plain, got[0].Raw)
	}
	noneCarries(t, got, "alice-secret-1")
}

// Finding 4: a filter on another column than the key never matches a
// DELETE from a table under row-level security, and a DELETE whose old
// row B may not read does not reach B at all.
func TestLeakDeleteFilter(t *testing.T) {
	t.Parallel()
	n := startNode(t, notesSQL)
	ctx := context.Background()
	// The rows are made in a fresh database: A's is row 1, B's row 2.
	const mine = 2
	b := dial(t, n.url, n.anon)
	_, r := b.join("realtime:deletes", map[string]any{"postgres_changes": []any{
		map[string]any{"event": "DELETE", "schema": "public", "table": "notes", "filter": "body=like.%salary 9%"},
		map[string]any{"event": "DELETE", "schema": "public", "table": "notes", "filter": fmt.Sprintf("id=eq.%d", mine)},
		map[string]any{"event": "DELETE", "schema": "public", "table": "notes"},
		map[string]any{"event": "INSERT", "schema": "public", "table": "notes"},
	}}, userToken(t, userB))
	if r.Payload["status"] != "ok" {
		t.Fatalf("join: %s", r.Raw)
	}
	ids := bindingIDs(t, r)
	theirs, own := twoRows(t, n, b, privateNote, "salary 9100 of B")
	if theirs != 1 || own != mine {
		t.Fatalf("rows %d and %d, want 1 and %d", theirs, own, mine)
	}
	for _, id := range []int64{theirs, mine} {
		if _, err := n.db.Exec(ctx, `delete from public.notes where id = $1`, id); err != nil {
			t.Fatal(err)
		}
	}
	got := untilSentinel(t, n, b)
	noneCarries(t, got, privateNote)
	if len(got) != 1 || changeData(got[0])["type"] != "DELETE" {
		t.Fatalf("B received %s, want only the DELETE of its own row", describe(got))
	}
	old, _ := changeData(got[0])["old_record"].(map[string]any)
	if old["id"] != float64(mine) {
		t.Fatalf("B received the DELETE of row %v, want its own %d: %s", old["id"], mine, got[0].Raw)
	}
	want := []uint32{ids[1], ids[2]}
	sort.Slice(want, func(a, b int) bool { return want[a] < want[b] })
	if got := payloadIDs(got[0]); !slices.Equal(got, want) {
		t.Fatalf("B's DELETE matched bindings %v, want the key filter's and the unfiltered one's %v (not the filter on body %d)", got, want, ids[0])
	}
}

// Bindings on every schema receive what the subscriber may see, as those
// naming the schema do: B's rows, not A's.
func TestRealtimeEverySchemaBindings(t *testing.T) {
	t.Parallel()
	n := startNode(t, notesSQL)
	b := dial(t, n.url, n.anon)
	_, r := b.join("realtime:wild", map[string]any{"postgres_changes": []any{
		map[string]any{"event": "INSERT", "schema": "*", "table": "notes"},
		map[string]any{"event": "*", "schema": "*", "table": "*"},
		map[string]any{"event": "INSERT", "schema": "*", "table": "notes", "filter": "body=eq.mine"},
	}}, userToken(t, userB))
	if r.Payload["status"] != "ok" {
		t.Fatalf("join: %s", r.Raw)
	}
	ids := bindingIDs(t, r)
	ctx := context.Background()
	for _, owner := range []string{userA, userB} {
		if _, err := n.db.Exec(ctx, `insert into public.notes (owner, body) values ($1, 'mine')`, owner); err != nil {
			t.Fatal(err)
		}
	}
	got := untilSentinel(t, n, b)
	if len(got) != 1 || record(got[0])["owner"] != userB {
		t.Fatalf("B received %s, want its own row once", describe(got))
	}
	want := slices.Clone(ids)
	sort.Slice(want, func(a, b int) bool { return want[a] < want[b] })
	if got := payloadIDs(got[0]); !slices.Equal(got, want) {
		t.Fatalf("B's row matched bindings %v, want all three %v", got, want)
	}
}
