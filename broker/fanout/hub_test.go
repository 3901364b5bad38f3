package fanout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fluxbase/fluxbase/change"
)

// changeJSON builds a change event of the contract for table public.<table>.
func changeJSON(op, table string, id int, cols map[string]any) []byte {
	rec := map[string]any{"id": id}
	for k, v := range cols {
		rec[k] = v
	}
	b, _ := json.Marshal(rec)
	recs := `"record":` + string(b) + `,"old_record":null`
	switch op {
	case "delete":
		recs = `"record":null,"old_record":` + string(b)
	case "update":
		recs = `"record":` + string(b) + `,"old_record":{"id":` + fmt.Sprint(id) + `}`
	}
	return []byte(fmt.Sprintf(`{"commit_lsn":"0/10","lsn":"0/10","xid":5,"commit_ts":"2024-05-01T10:00:00.123456Z","tx_index":0,"tx_last":true,"schema":"public","table":%q,"op":%q,"pk":{"id":%d},%s,"columns":[{"name":"id","type":"int4"},{"name":"owner","type":"text"},{"name":"n","type":"int4"},{"name":"secret","type":"text"}],"unchanged_toast":[]}`, table, op, id, recs))
}

// drain decodes the postgres_changes frames queued to c.
func drain(t *testing.T, c *Client) []map[string]any {
	t.Helper()
	var out []map[string]any
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
		var p map[string]any
		_ = json.Unmarshal(arr[4], &p)
		out = append(out, p)
	}
	return out
}

func TestHubIndexMatchesLikeAScan(t *testing.T) {
	t.Parallel()
	h := New(Config{}, nil, nil, nil, nil)
	defer h.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	owners := []string{"ann", "bob", "cy", "dee"}
	type sub struct {
		c       *Client
		filters []Filter
		events  []string
		tables  []string
	}
	var subs []*sub
	for i := 0; i < 200; i++ {
		s := &sub{c: h.NewClient(V2)}
		var binds []Binding
		for j := 0; j < 1+rng.IntN(3); j++ {
			var fs string
			switch rng.IntN(6) {
			case 0:
			case 1, 2:
				fs = "owner=eq." + owners[rng.IntN(len(owners))]
			case 3:
				fs = fmt.Sprintf("n=gt.%d", rng.IntN(10))
			case 4:
				fs = fmt.Sprintf("owner=eq.%s,n=lte.%d", owners[rng.IntN(len(owners))], rng.IntN(10))
			case 5:
				fs = "owner=in.(ann,cy)"
			}
			ev := []string{"*", "INSERT", "UPDATE", "DELETE"}[rng.IntN(4)]
			table := []string{"todos", "notes", "*"}[rng.IntN(3)]
			f, err := ParseFilter(fs)
			if err != nil {
				t.Fatal(err)
			}
			binds = append(binds, Binding{ID: BindingID(ev, "public", table, fs), Event: ev, Schema: "public", Table: table, Filter: f})
			s.filters, s.events, s.tables = append(s.filters, f), append(s.events, ev), append(s.tables, table)
		}
		if _, err := s.c.Join(JoinSpec{Topic: fmt.Sprintf("realtime:s%d", i), Changes: binds}); err != nil {
			t.Fatal(err)
		}
		subs = append(subs, s)
	}
	for seq := uint64(1); seq <= 300; seq++ {
		op := []string{"insert", "update", "delete"}[rng.IntN(3)]
		table := []string{"todos", "notes"}[rng.IntN(2)]
		data := changeJSON(op, table, int(seq), map[string]any{"owner": owners[rng.IntN(len(owners))], "n": rng.IntN(12)})
		h.Dispatch(context.Background(), []Msg{{Seq: seq, Subject: change.Subject("public", table, op), Data: data}})
		c, _ := DecodeChange(seq, data)
		for i, s := range subs {
			var want []float64
			for j, f := range s.filters {
				if (s.events[j] == "*" || s.events[j] == c.event()) && (s.tables[j] == "*" || s.tables[j] == table) && f.Match(c.lookup) {
					want = append(want, float64(BindingID(s.events[j], "public", s.tables[j], filterString(f))))
				}
			}
			got := drain(t, s.c)
			if len(want) == 0 {
				if len(got) != 0 {
					t.Fatalf("seq %d: subscriber %d got %v, want nothing", seq, i, got)
				}
				continue
			}
			if len(got) != 1 {
				t.Fatalf("seq %d: subscriber %d got %d messages, want 1", seq, i, len(got))
			}
			var ids []float64
			for _, id := range got[0]["ids"].([]any) {
				ids = append(ids, id.(float64))
			}
			sort.Float64s(want)
			want = dedupe(want)
			if fmt.Sprint(ids) != fmt.Sprint(want) {
				t.Fatalf("seq %d: subscriber %d ids %v, want %v", seq, i, ids, want)
			}
		}
	}
}

// filterString rebuilds the source of the filters the test made; it only
// needs to reproduce BindingID's input.
func filterString(f Filter) string {
	var parts []string
	for _, c := range f {
		switch c.op {
		case opEq:
			parts = append(parts, c.Column+"=eq."+c.value)
		case opGt:
			parts = append(parts, c.Column+"=gt."+c.value)
		case opLte:
			parts = append(parts, c.Column+"=lte."+c.value)
		case opIn:
			parts = append(parts, c.Column+"=in.(ann,cy)")
		}
	}
	s := ""
	for i, p := range parts {
		if i > 0 {
			s += ","
		}
		s += p
	}
	return s
}

func dedupe(v []float64) []float64 {
	out := v[:0]
	for i, x := range v {
		if i == 0 || x != v[i-1] {
			out = append(out, x)
		}
	}
	return out
}

func TestHubSlowConsumerDoesNotStallOthers(t *testing.T) {
	t.Parallel()
	var slowCount atomic.Int32
	h := New(Config{QueueFrames: 4, OnSlowConsumer: func() { slowCount.Add(1) }}, nil, nil, nil, nil)
	defer h.Close()
	bind := []Binding{{ID: 1, Event: "*", Schema: "public", Table: "todos"}}
	slow, fast := h.NewClient(V2), h.NewClient(V2)
	for _, c := range []*Client{slow, fast} {
		if _, err := c.Join(JoinSpec{Topic: "realtime:t", Changes: bind}); err != nil {
			t.Fatal(err)
		}
	}
	got := 0
	for seq := uint64(1); seq <= 20; seq++ {
		h.Dispatch(context.Background(), []Msg{{Seq: seq, Data: changeJSON("insert", "todos", int(seq), nil)}})
		got += len(drain(t, fast)) // fast keeps up; slow never reads
	}
	if got != 20 {
		t.Fatalf("fast client got %d of 20", got)
	}
	if !slow.Queue.Closed() {
		t.Fatal("slow client not disconnected") // its overflowing push closed it
	}
	if slow.Queue.Reason() != SlowConsumerReason || slowCount.Load() != 1 {
		t.Fatalf("reason %q, count %d", slow.Queue.Reason(), slowCount.Load())
	}
	deadline := time.Now().Add(time.Second)
	for h.Clients() != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if h.Clients() != 1 || h.Channels() != 1 {
		t.Fatalf("clients %d channels %d after the slow one left", h.Clients(), h.Channels())
	}
}

// fakeAuthz lets rows whose id is even through to claims {"sub":"0"},
// odd ones to {"sub":"1"}, and row n to {"sub":"u<n>"}, under role
// "authenticated"; it hides column "secret". It counts VisibleMany calls,
// the claims and keys they asked about, and the most calls at once; a
// call including a claims with sub "fail" fails. Its first call waits
// for gate, when there is one.
type fakeAuthz struct {
	mu      sync.Mutex
	calls   int
	claims  int
	keys    int
	running int
	most    int
	delay   time.Duration
	gate    chan struct{}
}

func (f *fakeAuthz) count() (calls, keys int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls, f.keys
}

func (f *fakeAuthz) Access(_ context.Context, role, _, _ string) (*Access, error) {
	if role == "nobody" {
		return &Access{}, nil
	}
	return &Access{Columns: map[string]bool{"id": true, "owner": true, "n": true}, RLS: role == "authenticated"}, nil
}

func (f *fakeAuthz) VisibleMany(_ context.Context, _ string, _ *Access, claims []json.RawMessage, _, _ string, keys []json.RawMessage) ([][]bool, error) {
	f.mu.Lock()
	f.calls++
	f.claims += len(claims)
	f.keys += len(keys)
	f.running++
	f.most = max(f.most, f.running)
	first := f.calls == 1
	f.mu.Unlock()
	if first && f.gate != nil {
		<-f.gate
	}
	time.Sleep(f.delay)
	defer func() {
		f.mu.Lock()
		f.running--
		f.mu.Unlock()
	}()
	out := make([][]bool, len(claims))
	for c, cl := range claims {
		var cc struct{ Sub string }
		_ = json.Unmarshal(cl, &cc)
		if cc.Sub == "fail" {
			return nil, errors.New("invalid input syntax for type uuid")
		}
		out[c] = make([]bool, len(keys))
		for i, k := range keys {
			var pk struct{ ID int }
			_ = json.Unmarshal(k, &pk)
			out[c][i] = fmt.Sprint(pk.ID%2) == cc.Sub || fmt.Sprintf("u%d", pk.ID) == cc.Sub
		}
	}
	return out, nil
}

// Deliveries leave as their chunk of checks is answered, chunks answered
// in any order, yet every channel gets its changes in log order: deletes
// (which need no check) wait behind the checked inserts before them.
func TestHubRowChecksKeepChannelOrder(t *testing.T) {
	t.Parallel()
	az := &fakeAuthz{delay: 2 * time.Millisecond}
	h := New(Config{AuthChunk: 1, AuthParallel: 4}, nil, nil, az, nil)
	defer h.Close()
	bind := []Binding{{ID: 1, Event: "*", Schema: "public", Table: "todos"}}
	var evens, odds []*Client
	for i := 0; i < 10; i++ {
		for _, sub := range []string{"0", "1"} {
			c := h.NewClient(V2)
			claims := json.RawMessage(fmt.Sprintf(`{"sub":%q,"session":%d}`, sub, i)) // a group each
			if _, err := c.Join(JoinSpec{Topic: "realtime:t", Changes: bind, Auth: Auth{Role: "authenticated", Claims: claims}}); err != nil {
				t.Fatal(err)
			}
			if sub == "0" {
				evens = append(evens, c)
			} else {
				odds = append(odds, c)
			}
		}
	}
	batch := []Msg{
		{Seq: 1, Data: changeJSON("insert", "todos", 2, nil)},
		{Seq: 2, Data: changeJSON("delete", "todos", 3, nil)},
		{Seq: 3, Data: changeJSON("insert", "todos", 4, nil)},
		{Seq: 4, Data: changeJSON("delete", "todos", 5, nil)},
		{Seq: 5, Data: changeJSON("insert", "todos", 6, nil)},
		{Seq: 6, Data: changeJSON("insert", "todos", 7, nil)},
	}
	h.Dispatch(context.Background(), batch)
	if calls, _ := az.count(); calls != 20 {
		t.Fatalf("%d checks, want one per group (chunks of 1)", calls)
	}
	seqs := func(c *Client) []float64 {
		var out []float64
		for _, p := range drain(t, c) {
			out = append(out, p["data"].(map[string]any)["log_seq"].(float64))
		}
		return out
	}
	for _, c := range evens {
		if got := seqs(c); fmt.Sprint(got) != "[1 2 3 4 5]" {
			t.Fatalf("even subscriber got log_seq %v, want [1 2 3 4 5]", got)
		}
	}
	for _, c := range odds {
		if got := seqs(c); fmt.Sprint(got) != "[2 4 6]" {
			t.Fatalf("odd subscriber got log_seq %v, want [2 4 6]", got)
		}
	}
}

func TestHubAuthorizationBatchesByClaims(t *testing.T) {
	t.Parallel()
	az := &fakeAuthz{}
	h := New(Config{}, nil, nil, az, nil)
	defer h.Close()
	bind := []Binding{{ID: 1, Event: "*", Schema: "public", Table: "todos"}}
	join := func(role, sub string) *Client {
		c := h.NewClient(V2)
		_, err := c.Join(JoinSpec{Topic: "realtime:t", Changes: bind,
			Auth: Auth{Role: role, Claims: json.RawMessage(`{"sub":"` + sub + `"}`)}})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	var evens, odds []*Client
	for i := 0; i < 5; i++ {
		evens = append(evens, join("authenticated", "0"))
		odds = append(odds, join("authenticated", "1"))
	}
	anon := join("anon", "")
	nobody := join("nobody", "")
	var batch []Msg
	for seq := uint64(1); seq <= 10; seq++ {
		batch = append(batch, Msg{Seq: seq, Data: changeJSON("insert", "todos", int(seq), map[string]any{"secret": "s"})})
	}
	h.Dispatch(context.Background(), batch)
	if az.calls != 1 || az.claims != 2 || az.keys != 10 {
		t.Fatalf("%d VisibleMany calls for %d claims and %d keys, want 1 call for both claims groups and the 10 keys", az.calls, az.claims, az.keys)
	}
	for _, c := range evens {
		got := drain(t, c)
		if len(got) != 5 {
			t.Fatalf("even subscriber got %d rows, want 5", len(got))
		}
		for _, p := range got {
			rec := p["data"].(map[string]any)["record"].(map[string]any)
			if int(rec["id"].(float64))%2 != 0 {
				t.Fatalf("even subscriber got row %v", rec)
			}
			if _, ok := rec["secret"]; ok {
				t.Fatalf("unreadable column delivered: %v", rec)
			}
		}
	}
	for _, c := range odds {
		if n := len(drain(t, c)); n != 5 {
			t.Fatalf("odd subscriber got %d rows", n)
		}
	}
	if n := len(drain(t, anon)); n != 10 {
		t.Fatalf("anon (no RLS) got %d rows, want 10", n)
	}
	if n := len(drain(t, nobody)); n != 0 {
		t.Fatalf("a role without SELECT got %d rows", n)
	}
}

// Claims groups are checked AuthChunk at a time, at most AuthParallel
// calls at once; groups that need other changes are asked about apart;
// a failing call is split so that only the group that makes it fail goes
// without its changes.
func TestHubAuthorizationChunks(t *testing.T) {
	t.Parallel()
	az := &fakeAuthz{delay: 5 * time.Millisecond}
	h := New(Config{AuthChunk: 16, AuthParallel: 3}, nil, nil, az, nil)
	defer h.Close()
	join := func(claims, filter string) *Client {
		f, err := ParseFilter(filter)
		if err != nil {
			t.Fatal(err)
		}
		c := h.NewClient(V2)
		_, err = c.Join(JoinSpec{Topic: "realtime:t", Changes: []Binding{{ID: 1, Event: "*", Schema: "public", Table: "todos", Filter: f}},
			Auth: Auth{Role: "authenticated", Claims: json.RawMessage(claims)}})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	const users = 100
	clients := make([]*Client, users+1)
	for n := 1; n <= users; n++ {
		clients[n] = join(fmt.Sprintf(`{"sub":"u%d"}`, n), "")
	}
	failing := join(`{"sub":"fail"}`, "")
	five := join(`{"sub":"u5","filtered":true}`, "id=eq.5")
	none := join(`{"sub":"u6","filtered":true}`, "id=eq.7")
	var batch []Msg
	for id := 1; id <= users; id++ {
		batch = append(batch, Msg{Seq: uint64(id), Data: changeJSON("insert", "todos", id, nil)})
	}
	h.Dispatch(context.Background(), batch)

	for n := 1; n <= users; n++ {
		got := drain(t, clients[n])
		if len(got) != 1 {
			t.Fatalf("user %d got %d rows, want its own 1", n, len(got))
		}
		if id := got[0]["data"].(map[string]any)["record"].(map[string]any)["id"]; id != float64(n) {
			t.Fatalf("user %d got row %v", n, id)
		}
	}
	for _, tc := range []struct {
		who  string
		c    *Client
		want int
	}{
		{"the group whose check fails", failing, 0},
		{"a user filtering on its row", five, 1},
		{"a user filtering on another's row", none, 0},
	} {
		if n := len(drain(t, tc.c)); n != tc.want {
			t.Fatalf("%s got %d rows, want %d", tc.who, n, tc.want)
		}
	}
	// 101 groups needing every change: 7 calls of at most 16, the one
	// with the failing group split 4 times down to it (8 more); one call
	// for each filtered group.
	if az.calls > 7+8+2 {
		t.Errorf("%d VisibleMany calls, want at most 17", az.calls)
	}
	if az.most > 3 {
		t.Errorf("%d calls at once, want at most 3", az.most)
	}
}

func TestHubBroadcastAndPresenceAcrossNodes(t *testing.T) {
	t.Parallel()
	bus := NewLocalBus()
	a := New(Config{NodeID: "a", PresenceInterval: 50 * time.Millisecond}, nil, bus, nil, nil)
	b := New(Config{NodeID: "b", PresenceInterval: 50 * time.Millisecond}, nil, bus, nil, nil)
	defer runLive(t, a)()
	defer runLive(t, b)()

	ca, cb := a.NewClient(V1), b.NewClient(V2)
	cha, err := ca.Join(JoinSpec{Topic: "realtime:room", Presence: true, PresenceKey: "ann"})
	if err != nil {
		t.Fatal(err)
	}
	if err := cha.Track(json.RawMessage(`{"status":"online"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := cb.Join(JoinSpec{Topic: "realtime:room", Presence: true, PresenceKey: "bob"}); err != nil {
		t.Fatal(err)
	}
	// Node b learns a's presence through the sync it asks for on joining.
	waitFrame(t, cb, func(s string) bool {
		return contains(s, "presence_diff") && contains(s, `"ann"`) && contains(s, "online")
	})
	if err := cha.Broadcast("hello", EncodingJSON, []byte(`{"n":1}`)); err != nil {
		t.Fatal(err)
	}
	waitFrame(t, cb, func(s string) bool { return contains(s, "hello") })
	// Leaving on a reaches b as a leave.
	ca.Close("bye")
	waitFrame(t, cb, func(s string) bool { return contains(s, `"leaves":{"ann"`) })
}

func contains(s, sub string) bool { return len(sub) == 0 || len(s) >= len(sub) && indexOf(s, sub) >= 0 }

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

func waitFrame(t *testing.T, c *Client, ok func(string) bool) {
	t.Helper()
	deadline := time.After(3 * time.Second)
	var seen []string
	for {
		for _, f := range c.Queue.Take(nil) {
			if ok(string(f.Bytes())) {
				return
			}
			seen = append(seen, string(f.Bytes()))
		}
		select {
		case <-time.After(time.Millisecond):
		case <-deadline:
			t.Fatalf("frame not seen; got %q", seen)
		}
	}
}

// runLive runs h until the returned function is called, and returns once
// the hub reads the log.
func runLive(t *testing.T, h *Hub) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	stop = func() { cancel(); <-done; h.Close() }
	for deadline := time.Now().Add(5 * time.Second); h.Ready() != nil; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			stop()
			t.Fatal("hub not ready after 5 s")
		}
	}
	return stop
}

// A change whose subject names a table no binding follows is passed
// over without being decoded; the same change under its own subject is
// delivered.
func TestHubSkipsTablesNobodyFollows(t *testing.T) {
	t.Parallel()
	h := New(Config{}, nil, nil, nil, nil)
	defer h.Close()
	c := h.NewClient(V2)
	if _, err := c.Join(JoinSpec{Topic: "realtime:t", Changes: []Binding{{ID: 1, Event: "*", Schema: "public", Table: "todos"}}}); err != nil {
		t.Fatal(err)
	}
	data := changeJSON("insert", "todos", 1, nil)
	h.Dispatch(context.Background(), []Msg{
		{Seq: 1, Subject: change.Subject("public", "archive", "insert"), Data: data},
		{Seq: 2, Subject: change.Subject("public", "archive", "insert"), Data: []byte("not even JSON")},
	})
	if got := drain(t, c); len(got) != 0 {
		t.Fatalf("changes under another table's subject were delivered: %v", got)
	}
	h.Dispatch(context.Background(), []Msg{{Seq: 3, Subject: change.Subject("public", "todos", "insert"), Data: data}})
	if got := drain(t, c); len(got) != 1 {
		t.Fatalf("got %d deliveries of a followed table's change, want 1", len(got))
	}
}

// Ready turns true once the dispatcher has fixed its place in the log,
// and a change appended right after is delivered.
func TestHubReadyMeansLive(t *testing.T) {
	t.Parallel()
	log := NewMemLog()
	log.Append(changeJSON("insert", "todos", 1, nil))
	h := New(Config{}, log, nil, nil, nil)
	if err := h.Ready(); !errors.Is(err, ErrNotLive) {
		t.Fatalf("Ready before Run = %v", err)
	}
	defer runLive(t, h)()
	c := h.NewClient(V2)
	if _, err := c.Join(JoinSpec{Topic: "realtime:t", Changes: []Binding{{ID: 1, Event: "*", Schema: "public", Table: "todos"}}}); err != nil {
		t.Fatal(err)
	}
	log.Append(changeJSON("insert", "todos", 2, nil))
	got := drainWait(t, c, time.After(5*time.Second))
	if len(got) != 1 || got[0]["data"].(map[string]any)["log_seq"] != float64(2) {
		t.Fatalf("after Ready got %v, want exactly log_seq 2", got)
	}
}

// The changes that arrive while a batch is being authorized make the
// next batch together: one row-level check for all of them, not one
// each.
func TestHubBatchesWhatArrivesWhileAuthorizing(t *testing.T) {
	t.Parallel()
	log := NewMemLog()
	az := &fakeAuthz{gate: make(chan struct{})}
	h := New(Config{}, log, nil, az, nil)
	defer runLive(t, h)()
	c := h.NewClient(V2)
	_, err := c.Join(JoinSpec{Topic: "realtime:t", Changes: []Binding{{ID: 1, Event: "*", Schema: "public", Table: "todos"}},
		Auth: Auth{Role: "authenticated", Claims: json.RawMessage(`{"sub":"0"}`)}})
	if err != nil {
		t.Fatal(err)
	}
	log.Append(changeJSON("insert", "todos", 2, nil))
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		if calls, _ := az.count(); calls == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no row-level check after 5 s")
		}
	}
	for id := 3; id <= 22; id++ {
		log.Append(changeJSON("insert", "todos", id, nil))
	}
	time.Sleep(100 * time.Millisecond) // for the dispatcher's reader to take them in
	close(az.gate)
	var got []map[string]any
	for deadline := time.After(5 * time.Second); len(got) < 11; {
		got = append(got, drainWait(t, c, deadline)...)
	}
	if calls, keys := az.count(); calls != 2 || keys != 21 {
		t.Fatalf("%d row-level checks for %d keys, want 2 for 21: one for the first change, one for the 20 that came meanwhile", calls, keys)
	}
}

func TestHubResumeNoGapNoDuplicate(t *testing.T) {
	t.Parallel()
	log := NewMemLog()
	h := New(Config{BatchSize: 64}, log, nil, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	defer func() { cancel(); <-done; h.Close() }()

	for i := 1; i <= 100; i++ {
		log.Append(changeJSON("insert", "todos", i, nil))
	}
	// Let the live dispatcher start and see part of the log move.
	time.Sleep(50 * time.Millisecond)
	c := h.NewClient(V2)
	// A writer keeps appending while the channel replays.
	var wwg sync.WaitGroup
	wwg.Add(1)
	go func() {
		defer wwg.Done()
		for i := 101; i <= 2000; i++ {
			log.Append(changeJSON("insert", "todos", i, nil))
		}
	}()
	_, err := c.Join(JoinSpec{Topic: "realtime:t", Resume: 40,
		Changes: []Binding{{ID: 1, Event: "*", Schema: "public", Table: "todos"}}})
	if err != nil {
		t.Fatal(err)
	}
	wwg.Wait()
	var seqs []uint64
	deadline := time.After(5 * time.Second)
	for len(seqs) < 1960 {
		for _, p := range drainWait(t, c, deadline) {
			seqs = append(seqs, uint64(p["data"].(map[string]any)["log_seq"].(float64)))
		}
	}
	for i, s := range seqs {
		if s != uint64(41+i) {
			t.Fatalf("position %d has seq %d, want %d (gap or duplicate)", i, s, 41+i)
		}
	}
	if len(seqs) != 1960 {
		t.Fatalf("got %d changes, want 1960", len(seqs))
	}
}

// drainWait waits until c has changes queued, then drains them.
func drainWait(t *testing.T, c *Client, deadline <-chan time.Time) []map[string]any {
	t.Helper()
	for {
		if got := drain(t, c); len(got) > 0 {
			return got
		}
		select {
		case <-time.After(time.Millisecond):
		case <-deadline:
			t.Fatal("timed out waiting for changes")
		}
	}
}

// cutBus is a node's view of a shared bus that can be cut, as if the
// node died without a word.
type cutBus struct {
	Bus
	cut atomic.Bool
}

func (b *cutBus) Publish(subject string, data []byte) error {
	if b.cut.Load() {
		return nil
	}
	return b.Bus.Publish(subject, data)
}

func (b *cutBus) Subscribe(subject string, fn func([]byte)) (func(), error) {
	return b.Bus.Subscribe(subject, func(data []byte) {
		if !b.cut.Load() {
			fn(data)
		}
	})
}

func TestHubForgetsPresenceOfASilentNode(t *testing.T) {
	t.Parallel()
	shared := NewLocalBus()
	busA := &cutBus{Bus: shared}
	a := New(Config{NodeID: "a", PresenceInterval: 30 * time.Millisecond}, nil, busA, nil, nil)
	b := New(Config{NodeID: "b", PresenceInterval: 30 * time.Millisecond}, nil, shared, nil, nil)
	defer runLive(t, a)()
	defer runLive(t, b)()

	cb := b.NewClient(V2)
	if _, err := cb.Join(JoinSpec{Topic: "realtime:room", Presence: true, PresenceKey: "bob"}); err != nil {
		t.Fatal(err)
	}
	ca := a.NewClient(V2)
	cha, err := ca.Join(JoinSpec{Topic: "realtime:room", Presence: true, PresenceKey: "ann"})
	if err != nil {
		t.Fatal(err)
	}
	if err := cha.Track(json.RawMessage(`{}`)); err != nil {
		t.Fatal(err)
	}
	waitFrame(t, cb, func(s string) bool { return contains(s, `"joins":{"ann"`) })
	busA.cut.Store(true) // node a goes silent: no leave is ever published
	waitFrame(t, cb, func(s string) bool { return contains(s, `"leaves":{"ann"`) })
}

func TestHubResumeRefusesUnknownPositions(t *testing.T) {
	t.Parallel()
	log := NewMemLog()
	for i := 1; i <= 5; i++ {
		log.Append(changeJSON("insert", "todos", i, nil))
	}
	h := New(Config{}, log, nil, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	defer func() { cancel(); <-done; h.Close() }()
	errs := make(chan error, 1)
	c := h.NewClient(V2)
	_, err := c.Join(JoinSpec{Topic: "realtime:t", Resume: 99, OnResumeError: func(err error) { errs <- err },
		Changes: []Binding{{ID: 1, Event: "*", Schema: "public", Table: "todos"}}})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errs:
		if !contains(err.Error(), "beyond the end") {
			t.Fatalf("error %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("a resume past the log's end was accepted")
	}
}
