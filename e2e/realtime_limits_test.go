package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fluxbase/fluxbase/auth"
)

// These tests hold a node to its per-client realtime limits at their
// defaults: what one anonymous connection may ask of a node is bounded,
// and what goes beyond is refused with Supabase's reasons.

// replyReason is the reason of an error reply, or "" for an ok one.
func replyReason(m *msg) string {
	if m.Payload["status"] == "ok" {
		return ""
	}
	resp, _ := m.Payload["response"].(map[string]any)
	return fmt.Sprint(resp["reason"])
}

// One connection may join at most 100 channels at once (Supabase's
// max_channels_per_client), and a presence it tracks is bounded in size.
func TestRealtimeChannelsPerClientLimited(t *testing.T) {
	t.Parallel()
	n := startNode(t, "")
	c := dial(t, n.url, n.anon)
	for i := range 100 {
		c.mustJoin(fmt.Sprintf("realtime:room-%d", i), map[string]any{}, "")
	}
	// Let the join rate's bucket refill (waiting only adds tokens), so
	// that the channel limit is what refuses the next join.
	time.Sleep(1100 * time.Millisecond)
	_, r := c.join("realtime:room-100", map[string]any{}, "")
	if reason := replyReason(r); !strings.HasPrefix(reason, "ChannelRateLimitReached: Too many channels") {
		t.Fatalf("101st channel of one connection: %s, want ChannelRateLimitReached", r.Raw)
	}
	// The limit counts channels joined now: after a leave there is room.
	ref := c.send("room-0-join", "realtime:room-0", "phx_leave", map[string]any{})
	c.expect("leave reply", func(m *msg) bool { return m.Event == "phx_reply" && m.Ref != nil && *m.Ref == ref })
	jr := c.mustJoin("realtime:room-100", map[string]any{}, "")

	// A presence of 900 KB is refused; a small one is tracked.
	big := strings.Repeat("x", 900<<10)
	ref = c.send(jr, "realtime:room-100", "presence", map[string]any{"type": "presence", "event": "track", "payload": map[string]any{"blob": big}})
	m := c.expect("reply to a large track", func(m *msg) bool { return m.Event == "phx_reply" && m.Ref != nil && *m.Ref == ref })
	if reason := replyReason(m); !strings.HasPrefix(reason, "Track message size exceeded") {
		t.Fatalf("900 KB presence: %s, want Track message size exceeded", truncate(m.Raw))
	}
	ref = c.send(jr, "realtime:room-100", "presence", map[string]any{"type": "presence", "event": "track", "payload": map[string]any{"name": "ann"}})
	m = c.expect("reply to a small track", func(m *msg) bool { return m.Event == "phx_reply" && m.Ref != nil && *m.Ref == ref })
	if m.Payload["status"] != "ok" {
		t.Fatalf("small presence refused: %s", m.Raw)
	}
	// A connection holds one presence per channel: tracks replace it.
	for i := range 20 {
		ref = c.send(jr, "realtime:room-100", "presence", map[string]any{"type": "presence", "event": "track", "payload": map[string]any{"n": i}})
		c.expect("track reply", func(m *msg) bool { return m.Event == "phx_reply" && m.Ref != nil && *m.Ref == ref })
	}
	other := dial(t, n.url, n.anon)
	other.send("=", "realtime:room-100", "phx_join", map[string]any{"config": map[string]any{}})
	st := other.expect("presence state", func(m *msg) bool { return m.Event == "presence_state" })
	if len(st.Payload) != 1 {
		t.Fatalf("presence state of a channel one connection tracked 22 times: %s", st.Raw)
	}
	for _, v := range st.Payload {
		metas, _ := v.(map[string]any)["metas"].([]any)
		if len(metas) != 1 || metas[0].(map[string]any)["n"] != float64(19) {
			t.Fatalf("presence state %s, want the last track only", st.Raw)
		}
	}
}

// A client that joins faster than its join rate has joins refused with
// Supabase's reason, and one that keeps going is disconnected.
func TestRealtimeJoinRateLimited(t *testing.T) {
	t.Parallel()
	n := startNode(t, "")
	c := dial(t, n.url, n.anon)
	// Rejoins of one topic replace the channel, so only the rate limit
	// can refuse them. They are sent without waiting for the replies.
	const joins = 2000
	for i := range joins {
		if c.trySend([]any{fmt.Sprint(i), fmt.Sprint(i), "realtime:again", "phx_join", map[string]any{"config": map[string]any{}}}) != nil {
			break // closed by the server
		}
	}
	refused, ok := 0, 0
	for {
		m, err := c.recvUntil(20*time.Second, func(m *msg) bool { return m.Event == "phx_reply" || m.Event == "system" })
		if err != nil {
			break // the connection ended, or nothing more came
		}
		if m.Event != "phx_reply" {
			continue
		}
		switch reason := replyReason(m); {
		case reason == "":
			ok++
		case strings.HasPrefix(reason, "ClientJoinRateLimitReached: Too many joins per second"):
			refused++
		default:
			t.Fatalf("unexpected join reply %s", m.Raw)
		}
	}
	if ok == 0 || refused == 0 || ok+refused == joins {
		t.Fatalf("%d of %d joins answered ok, %d refused: want some refused and the connection closed before the end", ok, joins, refused)
	}
	if c.err == nil || !strings.Contains(c.err.Error(), "ClientJoinRateLimitReached") {
		t.Fatalf("connection ended with %v, want a close naming ClientJoinRateLimitReached", c.err)
	}
}

// A client sending messages faster than its message rate has them refused
// with a reason, and one that keeps going is disconnected.
func TestRealtimeMessageRateLimited(t *testing.T) {
	t.Parallel()
	n := startNode(t, "")
	c := dial(t, n.url, n.anon)
	jr := c.mustJoin("realtime:chat", map[string]any{"broadcast": map[string]any{"ack": true}}, "")
	const sends = 5000
	for i := range sends {
		if c.trySend([]any{jr, fmt.Sprint(i + 100), "realtime:chat", "broadcast", map[string]any{"type": "broadcast", "event": "e", "payload": map[string]any{"x": 1}}}) != nil {
			break // closed by the server
		}
	}
	refused, ok := 0, 0
	for {
		m, err := c.recvUntil(20*time.Second, func(m *msg) bool { return m.Event == "phx_reply" })
		if err != nil {
			break
		}
		switch reason := replyReason(m); {
		case reason == "":
			ok++
		case strings.Contains(reason, "Too many messages per second"):
			refused++
		default:
			t.Fatalf("unexpected reply %s", m.Raw)
		}
	}
	if ok == 0 || refused == 0 || ok+refused == sends {
		t.Fatalf("%d of %d broadcasts acked, %d refused: want some refused and the connection closed before the end", ok, sends, refused)
	}
	if c.err == nil || !strings.Contains(c.err.Error(), "Too many messages per second") {
		t.Fatalf("connection ended with %v, want a close naming the message rate", c.err)
	}
}

// A join with 10,000 bindings is refused at once; a join at the limit is
// served, and its changes carry only the ids of its bindings.
func TestRealtimeBindingsPerJoinLimited(t *testing.T) {
	t.Parallel()
	n := startNode(t, notesSQL)
	c := dial(t, n.url, n.anon)
	bindings := func(k int) map[string]any {
		bs := make([]any, k)
		for i := range bs {
			bs[i] = map[string]any{"event": "*", "schema": "public", "table": "notes", "filter": fmt.Sprintf("id=neq.%d", -i)}
		}
		return map[string]any{"postgres_changes": bs}
	}
	_, r := c.join("realtime:many", bindings(10000), userToken(t, userA))
	if reason := replyReason(r); !strings.Contains(reason, "bindings") || !strings.Contains(reason, "100") {
		t.Fatalf("join with 10000 bindings: %s, want an error naming the limit of bindings", truncate(r.Raw))
	}
	c.mustJoin("realtime:hundred", bindings(100), userToken(t, userA))
	if _, err := n.db.Exec(context.Background(), `insert into public.notes (owner, body) values ($1, 'mine')`, userA); err != nil {
		t.Fatal(err)
	}
	m := c.expect("change", isChange)
	if ids, _ := m.Payload["ids"].([]any); len(ids) != 100 {
		t.Fatalf("change with %d ids, want the 100 bindings: %s", len(ids), truncate(m.Raw))
	}
}

// A resume that would scan more of the log than a resume may is refused
// at once with UnableToReplayMessages, however little the bindings
// match; the client is told to read afresh rather than the node scanning
// the whole log.
func TestRealtimeResumeBounded(t *testing.T) {
	t.Parallel()
	n := startNode(t, `create table public.items (id int primary key, v text);`)
	service, _ := auth.APIKey(jwtSecret, auth.RoleServiceRole)
	last := seenThenGone(t, n.url, service, n.db)
	// More changes than the default bound of 10,000 since that position.
	if _, err := n.db.Exec(context.Background(), `insert into public.items select g, 'missed' from generate_series(1, 12000) g`); err != nil {
		t.Fatal(err)
	}
	// Wait until the log holds them: a change written now arrives after them.
	w := dial(t, n.url, service)
	w.mustJoin("realtime:marker", map[string]any{"postgres_changes": []any{map[string]any{"event": "INSERT", "schema": "public", "table": "items", "filter": "id=eq.20000"}}}, "")
	if _, err := n.db.Exec(context.Background(), `insert into public.items values (20000, 'marker')`); err != nil {
		t.Fatal(err)
	}
	w.expectWithin(60*time.Second, "marker", isChange)

	c := dial(t, n.url, service)
	cfg := map[string]any{
		"postgres_changes":        []any{map[string]any{"event": "*", "schema": "public", "table": "items", "filter": "id=eq.-1"}},
		"postgres_changes_resume": map[string]any{"log_seq": last},
	}
	_, r := c.join("realtime:items", cfg, "")
	if reason := replyReason(r); !strings.HasPrefix(reason, "UnableToReplayMessages") {
		t.Fatalf("resume over 12,000 changes: %s, want UnableToReplayMessages", r.Raw)
	}
	// Without the resume the same join is served.
	delete(cfg, "postgres_changes_resume")
	c.mustJoin("realtime:items", cfg, "")
}

// trySend writes a frame and reports a failed write instead of failing
// the test: the server may close the connection meanwhile.
func (c *client) trySend(frame []any) error {
	_ = c.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return c.ws.WriteJSON(frame)
}

// expectWithin is expect with a longer bound.
func (c *client) expectWithin(d time.Duration, what string, ok func(*msg) bool) *msg {
	c.t.Helper()
	m, err := c.recvUntil(d, ok)
	if err != nil {
		c.t.Fatalf("waiting for %s: %v", what, err)
	}
	return m
}

func truncate(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "..."
	}
	return string(b)
}
