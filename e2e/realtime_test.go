package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/fluxbase/fluxbase/auth"
)

const jwtSecret = "e2e-realtime-secret-long-enough-for-hs256"

// solo is one in-process Fluxbase node, built by package node as `fluxbase
// serve` builds one, over a fresh database, with a pool of the test's own
// for writing.
type solo struct {
	url  string // HTTP base URL
	db   *pgxpool.Pool
	anon string
}

func startNode(t *testing.T, setupSQL string) *solo {
	t.Helper()
	dbURL, pool := migratedDB(t, `create table public.e2e_ping (id serial primary key);`+setupSQL)
	cfg := nodeConfig(t, "solo", dbURL, slotName())
	anon, _ := auth.APIKey(jwtSecret, auth.RoleAnon)
	n := &solo{url: runNodes(t, cfg)[0].URL(), db: pool, anon: anon}
	n.waitReplicating(t)
	return n
}

// waitReplicating waits until a change of a scratch table comes through,
// so the slot exists and later writes are not missed.
func (n *solo) waitReplicating(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	service, _ := auth.APIKey(jwtSecret, auth.RoleServiceRole)
	c := dial(t, n.url, service)
	c.mustJoin("realtime:ping", map[string]any{"postgres_changes": []any{map[string]any{"event": "INSERT", "schema": "public", "table": "e2e_ping"}}}, "")
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := n.db.Exec(ctx, `insert into public.e2e_ping default values`); err != nil {
			t.Fatal(err)
		}
		if m, err := c.recvUntil(500*time.Millisecond, func(m *msg) bool { return m.Event == "postgres_changes" }); err == nil && m != nil {
			c.ws.Close()
			return
		}
	}
	t.Fatal("replication did not start")
}

var slots atomic.Int64

// slotName is a slot of the test's own: slot names are cluster-wide and
// the tests' databases share one cluster.
func slotName() string { return fmt.Sprintf("e2e_%d", slots.Add(1)) }

func userToken(t *testing.T, sub string) string {
	t.Helper()
	tok, err := auth.Sign(jwtSecret, map[string]any{"role": "authenticated", "sub": sub, "exp": time.Now().Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// client is a minimal vsn 2.0.0 Phoenix client.
type client struct {
	t    *testing.T
	ws   *websocket.Conn
	ref  int
	seen []*msg
	in   chan *msg // fed by the reader goroutine; closed when it ends
	err  error     // why the reader ended; read after in is closed
}

type msg struct {
	JoinRef, Ref *string
	Topic, Event string
	Payload      map[string]any
	Raw          []byte
}

func dial(t *testing.T, base, apikey string) *client {
	t.Helper()
	u := "ws" + strings.TrimPrefix(base, "http") + "/realtime/v1/websocket?vsn=2.0.0&apikey=" + apikey
	ws, _, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, ws: ws, in: make(chan *msg, 1024)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(c.in)
		for {
			m, err := c.read()
			if err != nil {
				c.err = err
				return
			}
			c.in <- m
		}
	}()
	t.Cleanup(func() {
		ws.Close()
		for range c.in {
		}
		<-done
	})
	return c
}

func (c *client) send(joinRef, topic, event string, payload any) string {
	c.t.Helper()
	c.ref++
	ref := fmt.Sprint(c.ref)
	var jr any
	if joinRef == "=" {
		jr = ref
	} else if joinRef != "" {
		jr = joinRef
	}
	if err := c.ws.WriteJSON([]any{jr, ref, topic, event, payload}); err != nil {
		c.t.Fatal(err)
	}
	return ref
}

func (c *client) recv(timeout time.Duration) (*msg, error) {
	select {
	case m, ok := <-c.in:
		if !ok {
			return nil, fmt.Errorf("connection ended: %w", c.err)
		}
		return m, nil
	case <-time.After(timeout):
		return nil, fmt.Errorf("no message in %v", timeout)
	}
}

func (c *client) read() (*msg, error) {
	mt, data, err := c.ws.ReadMessage()
	if err != nil {
		return nil, err
	}
	if mt != websocket.TextMessage {
		return &msg{Event: "binary", Raw: data}, nil
	}
	var arr []json.RawMessage
	if err := json.Unmarshal(data, &arr); err != nil || len(arr) != 5 {
		return nil, fmt.Errorf("bad frame %s", data)
	}
	m := &msg{Raw: data}
	_ = json.Unmarshal(arr[0], &m.JoinRef)
	_ = json.Unmarshal(arr[1], &m.Ref)
	_ = json.Unmarshal(arr[2], &m.Topic)
	_ = json.Unmarshal(arr[3], &m.Event)
	_ = json.Unmarshal(arr[4], &m.Payload)
	return m, nil
}

// recvUntil returns the first message satisfying ok within timeout,
// keeping the others for later.
func (c *client) recvUntil(timeout time.Duration, ok func(*msg) bool) (*msg, error) {
	for i, m := range c.seen {
		if ok(m) {
			c.seen = append(c.seen[:i], c.seen[i+1:]...)
			return m, nil
		}
	}
	deadline := time.Now().Add(timeout)
	for {
		m, err := c.recv(time.Until(deadline))
		if err != nil {
			return nil, err
		}
		if ok(m) {
			return m, nil
		}
		c.seen = append(c.seen, m)
	}
}

// expectWait is how long expect waits for a message. It is generous: on a
// loaded machine running many clusters under the race detector, the first
// message of a resume waits for an ordered consumer to be created on a
// clustered stream, which has taken more than 10 s.
const expectWait = 45 * time.Second

func (c *client) expect(what string, ok func(*msg) bool) *msg {
	c.t.Helper()
	m, err := c.recvUntil(expectWait, ok)
	if err != nil {
		c.t.Fatalf("waiting for %s: %v", what, err)
	}
	return m
}

func (c *client) join(topic string, config map[string]any, token string) (string, *msg) {
	c.t.Helper()
	p := map[string]any{"config": config}
	if token != "" {
		p["access_token"] = token
	}
	ref := c.send("=", topic, "phx_join", p)
	r := c.expect("join reply", func(m *msg) bool { return m.Event == "phx_reply" && m.Ref != nil && *m.Ref == ref })
	return ref, r
}

func (c *client) mustJoin(topic string, config map[string]any, token string) string {
	c.t.Helper()
	ref, r := c.join(topic, config, token)
	if r.Payload["status"] != "ok" {
		c.t.Fatalf("join %s: %s", topic, r.Raw)
	}
	return ref
}

func changes(table string) map[string]any {
	return map[string]any{"postgres_changes": []any{map[string]any{"event": "*", "schema": "public", "table": table}}}
}

func record(m *msg) map[string]any {
	d, _ := m.Payload["data"].(map[string]any)
	r, _ := d["record"].(map[string]any)
	return r
}

func isChange(m *msg) bool { return m.Event == "postgres_changes" }

const notesSQL = `
create table public.notes (id bigserial primary key, owner uuid not null, body text, secret text);
alter table public.notes enable row level security;
create policy own_notes on public.notes for select to authenticated using (owner = auth.uid());
revoke all on public.notes from anon, authenticated;
grant select (id, owner, body) on public.notes to authenticated;
create table public.hidden (id int primary key);
revoke all on public.hidden from anon, authenticated;
`

const (
	userA = "00000000-0000-0000-0000-00000000000a"
	userB = "00000000-0000-0000-0000-00000000000b"
)

// A user receives only the rows its row-level policy lets it read, and
// never the columns it may not read.
func TestRealtimeRowLevelSecurity(t *testing.T) {
	t.Parallel()
	n := startNode(t, notesSQL)
	a := dial(t, n.url, n.anon)
	b := dial(t, n.url, n.anon)
	a.mustJoin("realtime:notes", changes("notes"), userToken(t, userA))
	b.mustJoin("realtime:notes", changes("notes"), userToken(t, userB))
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		for _, owner := range []string{userA, userB} {
			if _, err := n.db.Exec(ctx, `insert into public.notes (owner, body, secret) values ($1, $2, 'classified')`, owner, fmt.Sprintf("note %d", i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := n.db.Exec(ctx, `update public.notes set body = 'edited' where owner = $1`, userB); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*client{userA: a, userB: b} {
		want := 5
		if name == userB {
			want = 10 // five inserts and five updates
		}
		for i := 0; i < want; i++ {
			m := c.expect("change", isChange)
			rec := record(m)
			if rec["owner"] != name {
				t.Fatalf("user %s received a row of %v: %s", name, rec["owner"], m.Raw)
			}
			if _, ok := rec["secret"]; ok {
				t.Fatalf("user %s received a column it may not read: %s", name, m.Raw)
			}
			for _, col := range m.Payload["data"].(map[string]any)["columns"].([]any) {
				if col.(map[string]any)["name"] == "secret" {
					t.Fatalf("columns lists an unreadable column: %s", m.Raw)
				}
			}
		}
		if m, err := c.recvUntil(500*time.Millisecond, isChange); err == nil {
			t.Fatalf("user %s received more than its rows: %s", name, m.Raw)
		}
	}
}

// Joining with a binding on a table the role may not SELECT is refused.
func TestRealtimeJoinRefusedWithoutSelect(t *testing.T) {
	t.Parallel()
	n := startNode(t, notesSQL)
	c := dial(t, n.url, n.anon)
	tests := []struct {
		name, table, token, want string
	}{
		{"anon on notes", "notes", "", "no SELECT privilege"},
		{"user on hidden", "hidden", userToken(t, userA), "no SELECT privilege"},
		{"missing table", "nope", userToken(t, userA), "does not exist"},
	}
	for _, tt := range tests {
		_, r := c.join("realtime:"+tt.name, changes(tt.table), tt.token)
		resp, _ := r.Payload["response"].(map[string]any)
		if r.Payload["status"] != "error" || !strings.Contains(fmt.Sprint(resp["reason"]), tt.want) {
			t.Errorf("%s: reply %s, want an error containing %q", tt.name, r.Raw, tt.want)
		}
	}
	// A filter on a column the role may not read is refused too.
	_, r := c.join("realtime:filter", map[string]any{"postgres_changes": []any{
		map[string]any{"event": "*", "schema": "public", "table": "notes", "filter": "secret=eq.x"}}}, userToken(t, userA))
	if r.Payload["status"] != "error" {
		t.Errorf("filter on an unreadable column: %s", r.Raw)
	}
}

// Private channels follow the policies on realtime.messages.
func TestRealtimePrivateChannels(t *testing.T) {
	t.Parallel()
	n := startNode(t, `
create policy read_own_room on realtime.messages for select to authenticated
  using (realtime.topic() = 'room-' || auth.uid()::text);
create policy write_own_room on realtime.messages for insert to authenticated
  with check (realtime.topic() = 'room-' || auth.uid()::text and extension = 'broadcast');`)
	a := dial(t, n.url, n.anon)
	priv := map[string]any{"private": true, "broadcast": map[string]any{"self": true, "ack": true}}
	jr := a.mustJoin("realtime:room-"+userA, priv, userToken(t, userA))
	_, r := a.join("realtime:room-"+userB, priv, userToken(t, userA))
	resp, _ := r.Payload["response"].(map[string]any)
	if r.Payload["status"] != "error" || !strings.HasPrefix(fmt.Sprint(resp["reason"]), "Unauthorized: You do not have permissions to read from this Channel topic") {
		t.Fatalf("join of another's room: %s", r.Raw)
	}
	// Write allowed: the broadcast comes back (self) and is acked.
	ref := a.send(jr, "realtime:room-"+userA, "broadcast", map[string]any{"type": "broadcast", "event": "e", "payload": map[string]any{"x": 1}})
	a.expect("ack", func(m *msg) bool {
		return m.Event == "phx_reply" && m.Ref != nil && *m.Ref == ref && m.Payload["status"] == "ok"
	})
	// Presence writes are not allowed by the policy.
	ref = a.send(jr, "realtime:room-"+userA, "presence", map[string]any{"type": "presence", "event": "track", "payload": map[string]any{}})
	a.expect("refused track", func(m *msg) bool {
		return m.Event == "phx_reply" && m.Ref != nil && *m.Ref == ref && m.Payload["status"] == "error"
	})
	// The HTTP broadcast API applies the same policies.
	post := func(topic string) int {
		body := `{"messages":[{"topic":"` + topic + `","event":"http","payload":{"n":1},"private":true}]}`
		req, _ := http.NewRequest(http.MethodPost, n.url+"/realtime/v1/api/broadcast", strings.NewReader(body))
		req.Header.Set("apikey", n.anon)
		req.Header.Set("Authorization", "Bearer "+userToken(t, userA))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := post("room-" + userB); s != http.StatusForbidden {
		t.Fatalf("HTTP broadcast to another's room: %d", s)
	}
	if s := post("room-" + userA); s != http.StatusAccepted {
		t.Fatalf("HTTP broadcast to one's own room: %d", s)
	}
	a.expect("HTTP broadcast", func(m *msg) bool { return m.Event == "binary" && strings.Contains(string(m.Raw), "http") })
	// The anon role reads nothing: refused.
	_, r = a.join("realtime:room-x", priv, "")
	if r.Payload["status"] != "error" {
		t.Fatalf("anon joined a private channel: %s", r.Raw)
	}
}

// seenThenGone joins realtime:items on url, sees the change of one row
// written to db, disconnects, and returns that change's log_seq: the
// position a resuming client gives.
func seenThenGone(t *testing.T, url, key string, db *pgxpool.Pool) float64 {
	t.Helper()
	c := dial(t, url, key)
	c.mustJoin("realtime:items", changes("items"), "")
	if _, err := db.Exec(context.Background(), `insert into public.items values (0, 'seen')`); err != nil {
		t.Fatal(err)
	}
	m := c.expect("first change", isChange)
	c.ws.Close()
	return m.Payload["data"].(map[string]any)["log_seq"].(float64)
}

// A client that reconnects with the last position it saw receives exactly
// what it missed, in order, then live changes.
func TestRealtimeResume(t *testing.T) {
	t.Parallel()
	n := startNode(t, `create table public.items (id int primary key, v text);`)
	service, _ := auth.APIKey(jwtSecret, auth.RoleServiceRole)
	ctx := context.Background()
	last := seenThenGone(t, n.url, service, n.db)

	if _, err := n.db.Exec(ctx, `insert into public.items select g, 'missed' from generate_series(1, 500) g`); err != nil {
		t.Fatal(err)
	}
	for i := 501; i <= 1000; i++ { // and some in transactions of their own
		if _, err := n.db.Exec(ctx, `insert into public.items values ($1, 'missed')`, i); err != nil {
			t.Fatal(err)
		}
	}
	c := dial(t, n.url, service)
	cfg := changes("items")
	cfg["postgres_changes_resume"] = map[string]any{"log_seq": last}
	c.mustJoin("realtime:items", cfg, "")
	prev := last
	for want := 1; want <= 1000; want++ {
		m := c.expect(fmt.Sprintf("replayed row %d", want), isChange)
		rec := record(m)
		if int(rec["id"].(float64)) != want {
			t.Fatalf("replayed row %v, want %d", rec["id"], want)
		}
		seq := m.Payload["data"].(map[string]any)["log_seq"].(float64)
		if seq <= prev {
			t.Fatalf("seq %v after %v", seq, prev)
		}
		prev = seq
	}
	if _, err := n.db.Exec(ctx, `insert into public.items values (1001, 'live')`); err != nil {
		t.Fatal(err)
	}
	m := c.expect("live row", isChange)
	if rec := record(m); rec["id"] != float64(1001) {
		t.Fatalf("after the replay got %s, want row 1001 (a duplicate?)", m.Raw)
	}
	if m, err := c.recvUntil(300*time.Millisecond, isChange); err == nil {
		t.Fatalf("extra change %s", m.Raw)
	}
}

func testLogger(t *testing.T) *zap.Logger {
	if testing.Verbose() {
		l, _ := zap.NewDevelopment()
		return l
	}
	return zap.NewNop()
}

// A token refresh that loses access to the table closes the channel with
// a system error; one that keeps it changes whose rows arrive.
func TestRealtimeTokenRefreshReevaluates(t *testing.T) {
	t.Parallel()
	n := startNode(t, notesSQL)
	c := dial(t, n.url, n.anon)
	jr := c.mustJoin("realtime:notes", changes("notes"), userToken(t, userA))
	ctx := context.Background()
	// Switch to user B: A's rows stop, B's start.
	c.send(jr, "realtime:notes", "access_token", map[string]any{"access_token": userToken(t, userB)})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := n.db.Exec(ctx, `insert into public.notes (owner, body) values ($1, 'for a'), ($2, 'for b')`, userA, userB); err != nil {
			t.Fatal(err)
		}
		m, err := c.recvUntil(time.Second, isChange)
		if err == nil && record(m)["owner"] == userB {
			break // the refresh took effect
		}
		if time.Now().After(deadline) {
			t.Fatal("the refreshed token's rows never arrived")
		}
	}
	// The anon key has no SELECT on notes: the channel closes.
	c.send(jr, "realtime:notes", "access_token", map[string]any{"access_token": n.anon})
	sys := c.expect("system error", func(m *msg) bool { return m.Event == "system" && m.Payload["status"] == "error" })
	if !strings.Contains(fmt.Sprint(sys.Payload["message"]), "You no longer have permission to read from this Channel topic: notes") {
		t.Fatalf("system message %s", sys.Raw)
	}
	c.expect("phx_close", func(m *msg) bool { return m.Event == "phx_close" && m.JoinRef != nil && *m.JoinRef == jr })
}
