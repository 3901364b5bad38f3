package fanout

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"
)

// ownerAuthz judges row images by their owner column: an image passes
// for the claims whose sub is its owner. Its policy reads owner only, and
// it hides column secret; role "authenticated" is under row-level
// security. It records every image it was asked about.
type ownerAuthz struct {
	mu     sync.Mutex
	calls  int
	images []string
}

func (a *ownerAuthz) Access(_ context.Context, role, _, _ string) (*Access, error) {
	return &Access{Columns: map[string]bool{"id": true, "owner": true, "n": true}, RLS: role == "authenticated",
		Policy: &Policy{Expr: "owner = auth.uid()", Columns: []string{"owner"}}}, nil
}

func (a *ownerAuthz) VisibleMany(_ context.Context, _ string, acc *Access, claims []json.RawMessage, _, _ string, rows []json.RawMessage) ([][]bool, error) {
	if acc == nil || acc.Policy == nil {
		return nil, fmt.Errorf("no policy")
	}
	a.mu.Lock()
	a.calls++
	for _, r := range rows {
		a.images = append(a.images, string(r))
	}
	a.mu.Unlock()
	out := make([][]bool, len(claims))
	for c, cl := range claims {
		var cc struct{ Sub string }
		_ = json.Unmarshal(cl, &cc)
		out[c] = make([]bool, len(rows))
		for i, r := range rows {
			var img map[string]any
			if err := json.Unmarshal(r, &img); err != nil {
				return nil, err
			}
			out[c][i] = img["owner"] == cc.Sub
		}
	}
	return out, nil
}

// rowChange is a change of public.notes with the given rows (JSON objects
// or null).
func rowChange(op string, id int, record, old string) []byte {
	return []byte(fmt.Sprintf(`{"commit_lsn":"0/10","lsn":"0/10","xid":5,"commit_ts":"2024-05-01T10:00:00.123456Z","tx_index":0,"tx_last":true,"schema":"public","table":"notes","op":%q,"pk":{"id":%d},"record":%s,"old_record":%s,"columns":[{"name":"id","type":"int4"},{"name":"owner","type":"text"},{"name":"n","type":"int4"},{"name":"secret","type":"text"}],"unchanged_toast":[]}`, op, id, record, old))
}

// received is what c was sent, as "TYPE id old_record" lines.
func received(t *testing.T, c *Client) []string {
	t.Helper()
	return describe(drain(t, c))
}

// describe is postgres_changes payloads as "TYPE id old_record" lines.
func describe(payloads []map[string]any) []string {
	var out []string
	for _, p := range payloads {
		d := p["data"].(map[string]any)
		rec, _ := d["record"].(map[string]any)
		old, _ := json.Marshal(d["old_record"])
		id := rec["id"]
		if d["type"] == "DELETE" {
			id = d["old_record"].(map[string]any)["id"]
		}
		out = append(out, fmt.Sprintf("%v %v %s", d["type"], id, old))
	}
	return out
}

// A change is judged on the row it carries: the new row of an insert or
// update, the old row of a delete when the replica identity logged it;
// an update's old_record is the key unless its old row passes too; a
// delete that logged only its key reaches every reader with the key. The
// images sent are the columns the policy reads, all in one call.
func TestHubJudgesTheRowTheChangeCarries(t *testing.T) {
	t.Parallel()
	az := &ownerAuthz{}
	h := New(Config{}, nil, nil, az, nil)
	defer h.Close()
	join := func(sub string) *Client {
		c := h.NewClient(V2)
		if _, err := c.Join(JoinSpec{Topic: "realtime:t", Changes: []Binding{{ID: 1, Event: "*", Schema: "public", Table: "notes"}},
			Auth: Auth{Role: "authenticated", Claims: json.RawMessage(`{"sub":"` + sub + `"}`)}}); err != nil {
			t.Fatal(err)
		}
		return c
	}
	a, b := join("a"), join("b")
	batch := []Msg{
		{Seq: 1, Data: rowChange("insert", 1, `{"id":1,"owner":"a","n":1,"secret":"s"}`, `null`)},
		// a hands row 1 to b
		{Seq: 2, Data: rowChange("update", 1, `{"id":1,"owner":"b","n":2,"secret":"s"}`, `{"id":1,"owner":"a","n":1,"secret":"s"}`)},
		{Seq: 3, Data: rowChange("update", 1, `{"id":1,"owner":"b","n":3,"secret":"s"}`, `{"id":1,"owner":"b","n":2,"secret":"s"}`)},
		// an update that did not log the policy's column: not judged
		{Seq: 4, Data: rowChange("update", 1, `{"id":1,"n":4}`, `null`)},
		// an unchanged TOAST column of the new row, taken from the old one
		{Seq: 5, Data: rowChange("update", 1, `{"id":1,"n":5}`, `{"id":1,"owner":"b","n":3,"secret":"s"}`)},
		{Seq: 6, Data: rowChange("delete", 1, `null`, `{"id":1,"owner":"b","n":3,"secret":"s"}`)},
		{Seq: 7, Data: rowChange("delete", 2, `null`, `{"id":2}`)},
	}
	h.Dispatch(context.Background(), batch)
	wantA := []string{`INSERT 1 null`, `DELETE 2 {"id":2}`}
	wantB := []string{`UPDATE 1 {"id":1}`, `UPDATE 1 {"id":1,"n":2,"owner":"b"}`, `UPDATE 1 {"id":1,"n":3,"owner":"b"}`,
		`DELETE 1 {"id":1,"n":3,"owner":"b"}`, `DELETE 2 {"id":2}`}
	if got := received(t, a); fmt.Sprint(got) != fmt.Sprint(wantA) {
		t.Errorf("a received %q, want %q", got, wantA)
	}
	if got := received(t, b); fmt.Sprint(got) != fmt.Sprint(wantB) {
		t.Errorf("b received %q, want %q", got, wantB)
	}
	if az.calls != 1 {
		t.Errorf("%d checks, want one for both groups and every image", az.calls)
	}
	// Images: the insert's, 3 x (new, old) of the judged updates, the
	// delete's old row.
	want := []string{`{"owner":"a"}`, `{"owner":"b"}`, `{"owner":"a"}`, `{"owner":"b"}`, `{"owner":"b"}`, `{"owner":"b"}`, `{"owner":"b"}`, `{"owner":"b"}`}
	if fmt.Sprint(az.images) != fmt.Sprint(want) {
		t.Errorf("images %v, want %v", az.images, want)
	}
}

// Replay goes through the same check: a resuming reader gets what it
// would have got live, the handover and not the history before it.
func TestHubReplayJudgesLikeLive(t *testing.T) {
	t.Parallel()
	log := NewMemLog()
	az := &ownerAuthz{}
	h := New(Config{}, log, nil, az, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	defer func() { cancel(); <-done; h.Close() }()
	log.Append(changeJSON("insert", "other", 1, nil)) // seq 1, where the reader resumes after
	log.Append(rowChange("insert", 1, `{"id":1,"owner":"a","n":1}`, `null`))
	log.Append(rowChange("update", 1, `{"id":1,"owner":"a","n":2}`, `{"id":1,"owner":"a","n":1}`))
	log.Append(rowChange("update", 1, `{"id":1,"owner":"b","n":3}`, `{"id":1,"owner":"a","n":2}`))
	log.Append(rowChange("insert", 2, `{"id":2,"owner":"b","n":1}`, `null`))
	c := h.NewClient(V2)
	if _, err := c.Join(JoinSpec{Topic: "realtime:t", Resume: 1,
		Changes: []Binding{{ID: 1, Event: "*", Schema: "public", Table: "notes"}},
		Auth:    Auth{Role: "authenticated", Claims: json.RawMessage(`{"sub":"b"}`)}}); err != nil {
		t.Fatal(err)
	}
	var got []string
	deadline := time.After(10 * time.Second)
	for len(got) < 2 {
		got = append(got, describe(drainWait(t, c, deadline))...)
	}
	want := []string{`UPDATE 1 {"id":1}`, `INSERT 2 null`}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("replayed %q, want %q", got, want)
	}
}

// Filters read only what the reader may read: a filter on a column it may
// not SELECT never matches, even in bindings on every table or schema;
// on a DELETE from a table under row-level security only filters on the
// key match. Bindings on every schema are matched like the others.
func TestHubFiltersReadOnlyReadableColumns(t *testing.T) {
	t.Parallel()
	az := &ownerAuthz{}
	h := New(Config{}, nil, nil, az, nil)
	defer h.Close()
	bind := func(id uint32, event, schema, table, filter string) Binding {
		f, err := ParseFilter(filter)
		if err != nil {
			t.Fatal(err)
		}
		return Binding{ID: id, Event: event, Schema: schema, Table: table, Filter: f}
	}
	c := h.NewClient(V2)
	if _, err := c.Join(JoinSpec{Topic: "realtime:t", Auth: Auth{Role: "authenticated", Claims: json.RawMessage(`{"sub":"b"}`)},
		Changes: []Binding{
			bind(1, "*", "public", "*", "secret=like.s%"),
			bind(2, "*", "*", "notes", "secret=eq.s"),
			bind(3, "*", "*", "*", "n=gte.0"),
			bind(4, "*", "*", "notes", "id=eq.1"),
			bind(5, "*", "public", "notes", ""),
		}}); err != nil {
		t.Fatal(err)
	}
	if !h.wants("fluxbase.changes.public.notes.insert") {
		t.Fatal("the hub does not want the changes its bindings on every schema match")
	}
	h.Dispatch(context.Background(), []Msg{
		{Seq: 1, Data: rowChange("insert", 1, `{"id":1,"owner":"b","n":1,"secret":"s"}`, `null`)},
		{Seq: 2, Data: rowChange("delete", 1, `null`, `{"id":1,"owner":"b","n":1,"secret":"s"}`)},
	})
	var ids []string
	for _, p := range drain(t, c) {
		ids = append(ids, fmt.Sprint(p["ids"]))
	}
	if want := []string{"[3 4 5]", "[4 5]"}; fmt.Sprint(ids) != fmt.Sprint(want) {
		t.Fatalf("ids %v, want %v", ids, want)
	}
}
