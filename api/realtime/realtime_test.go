package realtime

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/fluxbase/fluxbase/api"
	"github.com/fluxbase/fluxbase/auth"
	"github.com/fluxbase/fluxbase/broker/fanout"
	"github.com/fluxbase/fluxbase/internal/apitest"
)

var secret, sign, get = apitest.Secret, apitest.Sign, apitest.Get

// rtEnv is a realtime endpoint behind the real server and guard.
type rtEnv struct {
	reg  *prometheus.Registry
	srv  *httptest.Server
	rt   *Endpoint
	log  *fanout.MemLog
	anon string
}

func newRTEnv(t *testing.T, cfg Config) *rtEnv {
	t.Helper()
	v := apitest.Verifier(t)
	env := &rtEnv{}
	if cfg.Source == nil {
		env.log = fanout.NewMemLog()
		cfg.Source = env.log
	}
	cfg.Verifier = v
	env.reg = prometheus.NewRegistry()
	cfg.Registerer = env.reg
	env.rt = New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- env.rt.Run(ctx) }()
	env.srv = httptest.NewServer(api.New(api.Config{Surfaces: []api.Surface{env.rt.Surface()}}, v, zap.NewNop(), prometheus.NewRegistry()))
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("realtime run: %v", err)
		}
		env.srv.Close()
	})
	// As /ready gates a node's traffic: until the hub reads the log, a
	// change appended now could fall before the position it starts from.
	deadline := time.Now().Add(10 * time.Second)
	for env.rt.Hub().Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatal("the realtime hub did not start reading the log in 10 s")
		}
		time.Sleep(time.Millisecond)
	}
	env.anon = apitest.Key(t, auth.RoleAnon)
	return env
}

// post sends body to path with the anon key, and a Content-Type when ct
// is not empty, and returns the status.
func (e *rtEnv) post(t *testing.T, path, ct, body string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+path, strings.NewReader(body))
	req.Header.Set("apikey", e.anon)
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// wsClient is a raw Phoenix client for tests.
type wsClient struct {
	t   *testing.T
	ws  *websocket.Conn
	vsn string
	ref int
	// seen holds messages read while waiting for another, for a later
	// expect.
	seen []*rtMsg
}

// rtMsg is a received message, whatever the serializer.
type rtMsg struct {
	JoinRef, Ref   *string
	Topic, Event   string
	Payload        map[string]any
	Binary         bool
	BroadcastEvent string
	Raw            []byte
}

func (e *rtEnv) dial(t *testing.T, vsn string) *wsClient {
	t.Helper()
	u := "ws" + strings.TrimPrefix(e.srv.URL, "http") + "/realtime/v1/websocket?apikey=" + e.anon + "&vsn=" + vsn
	// Headers a browser sends on an upgrade, gzip included: the edge's
	// compression must let the upgrade through.
	h := http.Header{"Accept-Encoding": {"gzip, deflate, br"}, "Origin": {"https://app.example"}}
	ws, resp, err := websocket.DefaultDialer.Dial(u, h)
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	t.Cleanup(func() { ws.Close() })
	return &wsClient{t: t, ws: ws, vsn: vsn}
}

func (c *wsClient) nextRef() string { c.ref++; return fmt.Sprint(c.ref) }

// send sends a message and returns its ref.
func (c *wsClient) send(joinRef, topic, event string, payload any) string {
	c.t.Helper()
	ref := c.nextRef()
	if joinRef == "=" {
		joinRef = ref
	}
	var jr any
	if joinRef != "" {
		jr = joinRef
	}
	var msg any
	if c.vsn == "2.0.0" {
		msg = []any{jr, ref, topic, event, payload}
	} else {
		msg = map[string]any{"topic": topic, "event": event, "payload": payload, "ref": ref, "join_ref": jr}
	}
	if err := c.ws.WriteJSON(msg); err != nil {
		c.t.Fatal(err)
	}
	return ref
}

func (c *wsClient) sendRaw(mt int, data []byte) {
	c.t.Helper()
	if err := c.ws.WriteMessage(mt, data); err != nil {
		c.t.Fatal(err)
	}
}

func (c *wsClient) recv(timeout time.Duration) (*rtMsg, error) {
	_ = c.ws.SetReadDeadline(time.Now().Add(timeout))
	mt, data, err := c.ws.ReadMessage()
	if err != nil {
		return nil, err
	}
	m := &rtMsg{Raw: data}
	if mt == websocket.BinaryMessage {
		if len(data) < 5 || data[0] != 4 {
			return nil, fmt.Errorf("binary frame of kind %d", data[0])
		}
		tl, el, ml, enc := int(data[1]), int(data[2]), int(data[3]), data[4]
		rest := data[5:]
		m.Binary = true
		m.Topic = string(rest[:tl])
		m.Event = "broadcast"
		m.BroadcastEvent = string(rest[tl : tl+el])
		body := rest[tl+el+ml:]
		m.Payload = map[string]any{"type": "broadcast", "event": m.BroadcastEvent}
		if enc == 1 {
			var p any
			if err := json.Unmarshal(body, &p); err != nil {
				return nil, err
			}
			m.Payload["payload"] = p
		} else {
			m.Payload["payload"] = body
		}
		return m, nil
	}
	if c.vsn == "2.0.0" {
		var arr []json.RawMessage
		if err := json.Unmarshal(data, &arr); err != nil || len(arr) != 5 {
			return nil, fmt.Errorf("not a vsn 2 array: %s", data)
		}
		_ = json.Unmarshal(arr[0], &m.JoinRef)
		_ = json.Unmarshal(arr[1], &m.Ref)
		_ = json.Unmarshal(arr[2], &m.Topic)
		_ = json.Unmarshal(arr[3], &m.Event)
		if err := json.Unmarshal(arr[4], &m.Payload); err != nil || m.Payload == nil {
			return nil, fmt.Errorf("payload is not an object: %s", data)
		}
	} else {
		var o struct {
			Topic, Event string
			Payload      map[string]any
			Ref          *string
			JoinRef      *string `json:"join_ref"`
		}
		if err := json.Unmarshal(data, &o); err != nil || o.Payload == nil {
			return nil, fmt.Errorf("not a vsn 1 object: %s", data)
		}
		m.Topic, m.Event, m.Payload, m.Ref, m.JoinRef = o.Topic, o.Event, o.Payload, o.Ref, o.JoinRef
	}
	if m.Event == "broadcast" {
		m.BroadcastEvent, _ = m.Payload["event"].(string)
	}
	return m, nil
}

// expect reads until a message satisfies ok, failing after a timeout.
func (c *wsClient) expect(what string, ok func(*rtMsg) bool) *rtMsg {
	c.t.Helper()
	for i, m := range c.seen {
		if ok(m) {
			c.seen = append(c.seen[:i], c.seen[i+1:]...)
			return m
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		m, err := c.recv(time.Until(deadline))
		if err != nil {
			c.t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok(m) {
			return m
		}
		c.seen = append(c.seen, m)
	}
}

// expectNone fails if a message satisfying ok arrives within d.
func (c *wsClient) expectNone(what string, d time.Duration, ok func(*rtMsg) bool) {
	c.t.Helper()
	for _, m := range c.seen {
		if ok(m) {
			c.t.Fatalf("unexpected %s: %s", what, m.Raw)
		}
	}
	deadline := time.Now().Add(d)
	for {
		m, err := c.recv(time.Until(deadline))
		if err != nil {
			return
		}
		if ok(m) {
			c.t.Fatalf("unexpected %s: %s", what, m.Raw)
		}
	}
}

func (c *wsClient) reply(ref string) *rtMsg {
	c.t.Helper()
	return c.expect("reply to "+ref, func(m *rtMsg) bool {
		return m.Event == "phx_reply" && m.Ref != nil && *m.Ref == ref
	})
}

func status(m *rtMsg) string { s, _ := m.Payload["status"].(string); return s }

func reason(m *rtMsg) string {
	r, _ := m.Payload["response"].(map[string]any)
	s, _ := r["reason"].(string)
	return s
}

func (c *wsClient) join(topic string, config map[string]any) (string, *rtMsg) {
	c.t.Helper()
	ref := c.send("=", topic, "phx_join", map[string]any{"config": config})
	return ref, c.reply(ref)
}

func (c *wsClient) mustJoin(topic string, config map[string]any) string {
	c.t.Helper()
	ref, r := c.join(topic, config)
	if status(r) != "ok" {
		c.t.Fatalf("join %s: %s", topic, r.Raw)
	}
	return ref
}

var vsns = []string{"1.0.0", "2.0.0"}

func TestRealtimeHeartbeatAndJoin(t *testing.T) {
	t.Parallel()
	env := newRTEnv(t, Config{})
	for _, vsn := range vsns {
		t.Run(vsn, func(t *testing.T) {
			c := env.dial(t, vsn)
			ref := c.send("", "phoenix", "heartbeat", map[string]any{})
			if r := c.reply(ref); status(r) != "ok" || r.Topic != "phoenix" {
				t.Fatalf("heartbeat reply %s", r.Raw)
			}
			bindings := []any{
				map[string]any{"event": "*", "schema": "public", "table": "todos", "filter": "id=eq.1"},
				map[string]any{"event": "INSERT", "schema": "public", "table": "todos"},
			}
			ref, r := c.join("realtime:room", map[string]any{
				"broadcast": map[string]any{"ack": false, "self": false, "replication_ready": true},
				"presence":  map[string]any{"key": "", "enabled": false},
				"private":   false, "postgres_changes": bindings,
			})
			if status(r) != "ok" || r.JoinRef == nil || *r.JoinRef != ref {
				t.Fatalf("join reply %s", r.Raw)
			}
			pc := r.Payload["response"].(map[string]any)["postgres_changes"].([]any)
			if len(pc) != 2 {
				t.Fatalf("echoed bindings %v", pc)
			}
			first := pc[0].(map[string]any)
			if first["event"] != "*" || first["table"] != "todos" || first["filter"] != "id=eq.1" {
				t.Fatalf("binding not echoed: %v", first)
			}
			id, ok := first["id"].(float64)
			if !ok || id <= 0 || id != float64(int64(id)) {
				t.Fatalf("id %v is not a positive integer", first["id"])
			}
			sys := c.expect("system", func(m *rtMsg) bool { return m.Event == "system" && m.Payload["extension"] == "postgres_changes" })
			if sys.Payload["status"] != "ok" || sys.Payload["message"] != "Subscribed to PostgreSQL" || sys.Payload["channel"] != "room" {
				t.Fatalf("system message %s", sys.Raw)
			}
			ready := c.expect("replication_ready", func(m *rtMsg) bool { return m.Event == "system" && m.Payload["extension"] == "system" })
			if ready.Payload["status"] != "ok" || ready.Payload["message"] != "Replication connection established" {
				t.Fatalf("replication_ready message %s", ready.Raw)
			}
			// An unjoined topic is refused; leaving replies ok.
			ref = c.send("9", "realtime:other", "broadcast", map[string]any{"type": "broadcast", "event": "x", "payload": map[string]any{}})
			if r := c.reply(ref); status(r) != "error" || reason(r) != "unmatched topic" {
				t.Fatalf("unjoined topic reply %s", r.Raw)
			}
			ref = c.send("1", "realtime:room", "phx_leave", map[string]any{})
			if r := c.reply(ref); status(r) != "ok" {
				t.Fatalf("leave reply %s", r.Raw)
			}
			mfs, err := env.reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			names := map[string]bool{}
			for _, mf := range mfs {
				names[mf.GetName()] = true
			}
			for _, n := range []string{"fluxbase_realtime_connections", "fluxbase_realtime_channels", "fluxbase_realtime_messages_sent_total", "fluxbase_realtime_slow_consumer_disconnects_total"} {
				if !names[n] {
					t.Errorf("metric %s missing (have %v)", n, names)
				}
			}
		})
	}
}

func TestRealtimeJoinErrors(t *testing.T) {
	t.Parallel()
	env := newRTEnv(t, Config{})
	expired := sign(t, secret, map[string]any{"role": "authenticated", "sub": "u", "exp": time.Now().Add(-time.Hour).Unix()})
	c := env.dial(t, "2.0.0")
	tests := []struct {
		name    string
		topic   string
		payload map[string]any
		want    string
	}{
		{"expired token", "realtime:a", map[string]any{"config": map[string]any{}, "access_token": expired}, "InvalidJWTToken: Token has expired"},
		{"bad token", "realtime:a", map[string]any{"config": map[string]any{}, "access_token": "nope"}, "InvalidJWTToken"},
		{"bad filter", "realtime:a", map[string]any{"config": map[string]any{"postgres_changes": []any{map[string]any{"event": "*", "schema": "public", "table": "t", "filter": "id=zz.1"}}}}, "unknown operator"},
		{"bad event", "realtime:a", map[string]any{"config": map[string]any{"postgres_changes": []any{map[string]any{"event": "SELECT", "schema": "public", "table": "t"}}}}, "want *, INSERT, UPDATE or DELETE"},
		{"bad config", "realtime:a", map[string]any{"config": "x"}, "InvalidJoinPayload"},
		{"not a realtime topic", "room", map[string]any{"config": map[string]any{}}, "unmatched topic"},
	}
	for _, tt := range tests {
		ref := c.send("=", tt.topic, "phx_join", tt.payload)
		r := c.reply(ref)
		if status(r) != "error" || !strings.Contains(reason(r), tt.want) {
			t.Errorf("%s: reply %s, want error containing %q", tt.name, r.Raw, tt.want)
		}
	}
}

func TestRealtimeUnsupportedVsn(t *testing.T) {
	t.Parallel()
	env := newRTEnv(t, Config{})
	resp, body := get(t, env.srv.URL+"/realtime/v1/websocket?vsn=3.0.0&apikey="+env.anon, nil)
	if resp.StatusCode != 400 || !strings.Contains(fmt.Sprint(body["details"]), "unsupported vsn") {
		t.Fatalf("status %d body %v", resp.StatusCode, body)
	}
}

func TestRealtimeMalformedFrames(t *testing.T) {
	t.Parallel()
	env := newRTEnv(t, Config{})
	for _, vsn := range vsns {
		t.Run(vsn, func(t *testing.T) {
			c := env.dial(t, vsn)
			bad := [][]byte{
				[]byte("not json"), []byte("[1,2]"), []byte("{}"), []byte(`[null,"5","t","e",3]`),
				[]byte(`{"topic":"t","event":"e","payload":[],"ref":"6"}`), []byte("\xff\xfe"), []byte("null"),
			}
			for _, b := range bad {
				c.sendRaw(websocket.TextMessage, b)
				m := c.expect("error for "+string(b), func(m *rtMsg) bool { return m.Event == "phx_reply" })
				if status(m) != "error" || !strings.HasPrefix(reason(m), "malformed message") {
					t.Fatalf("reply to %q: %s", b, m.Raw)
				}
			}
			c.sendRaw(websocket.BinaryMessage, []byte{9, 9, 9})
			m := c.expect("error for binary", func(m *rtMsg) bool { return m.Event == "phx_reply" })
			if !strings.HasPrefix(reason(m), "malformed message") {
				t.Fatalf("reply to binary: %s", m.Raw)
			}
			// The connection still works.
			ref := c.send("", "phoenix", "heartbeat", map[string]any{})
			if r := c.reply(ref); status(r) != "ok" {
				t.Fatalf("heartbeat after garbage: %s", r.Raw)
			}
		})
	}
}

// kind3 builds a vsn 2 binary user broadcast push.
func kind3(joinRef, ref, topic, event string, payload []byte, encoding byte) []byte {
	b := []byte{3, byte(len(joinRef)), byte(len(ref)), byte(len(topic)), byte(len(event)), 0, encoding}
	b = append(b, joinRef...)
	b = append(b, ref...)
	b = append(b, topic...)
	b = append(b, event...)
	return append(b, payload...)
}

func TestRealtimeBroadcast(t *testing.T) {
	t.Parallel()
	env := newRTEnv(t, Config{})
	v2 := env.dial(t, "2.0.0")
	v1 := env.dial(t, "1.0.0")
	sender := env.dial(t, "2.0.0")
	cfg := map[string]any{"broadcast": map[string]any{"self": false}}
	v2.mustJoin("realtime:room", cfg)
	v1.mustJoin("realtime:room", cfg)
	jr := sender.mustJoin("realtime:room", map[string]any{"broadcast": map[string]any{"self": true, "ack": true}})

	// Binary push from the sender, acked, delivered to everyone (the
	// sender too, it asked for self).
	ref := sender.nextRef()
	sender.sendRaw(websocket.BinaryMessage, kind3(jr, ref, "realtime:room", "cursor", []byte(`{"x":1}`), 1))
	if r := sender.reply(ref); status(r) != "ok" {
		t.Fatalf("ack %s", r.Raw)
	}
	for name, c := range map[string]*wsClient{"v2": v2, "v1": v1, "self": sender} {
		m := c.expect("broadcast on "+name, func(m *rtMsg) bool { return m.Event == "broadcast" })
		if m.BroadcastEvent != "cursor" || m.Topic != "realtime:room" {
			t.Fatalf("%s got %s", name, m.Raw)
		}
		if p, _ := m.Payload["payload"].(map[string]any); p["x"] != float64(1) {
			t.Fatalf("%s payload %v", name, m.Payload)
		}
		if name != "v1" && !m.Binary {
			t.Fatalf("vsn 2 client got a text broadcast: %s", m.Raw)
		}
	}
	// A text push from a client without self: others get it, it does not.
	v1.send("1", "realtime:room", "broadcast", map[string]any{"type": "broadcast", "event": "hi", "payload": map[string]any{"a": "b"}})
	v2.expect("text broadcast", func(m *rtMsg) bool { return m.BroadcastEvent == "hi" })
	v1.expectNone("own broadcast", 300*time.Millisecond, func(m *rtMsg) bool { return m.BroadcastEvent == "hi" })

	// HTTP broadcast, both forms.
	if s := env.post(t, "/realtime/v1/api/broadcast", "application/json", `{"messages":[{"topic":"room","event":"rest","payload":{"n":2}}]}`); s != 202 {
		t.Fatalf("POST broadcast: %d", s)
	}
	v2.expect("REST broadcast", func(m *rtMsg) bool { return m.BroadcastEvent == "rest" })
	if s := env.post(t, "/realtime/v1/api/broadcast/room/events/bin", "application/octet-stream", "\x00\x01"); s != 202 {
		t.Fatalf("POST broadcast event: %d", s)
	}
	m := v2.expect("binary REST broadcast", func(m *rtMsg) bool { return m.BroadcastEvent == "bin" })
	if b, _ := m.Payload["payload"].([]byte); !bytes.Equal(b, []byte{0, 1}) {
		t.Fatalf("binary payload %v", m.Payload["payload"])
	}
	if s := env.post(t, "/realtime/v1/api/broadcast", "application/json", `{"messages":[{"event":"x"}]}`); s != 400 {
		t.Fatalf("bad broadcast: %d", s)
	}
}

func TestRealtimePresence(t *testing.T) {
	t.Parallel()
	env := newRTEnv(t, Config{})
	a := env.dial(t, "2.0.0")
	b := env.dial(t, "1.0.0")
	cfg := func(key string) map[string]any {
		return map[string]any{"presence": map[string]any{"key": key, "enabled": true}}
	}
	jr := a.mustJoin("realtime:lobby", cfg("alice"))
	a.expect("empty presence_state", func(m *rtMsg) bool { return m.Event == "presence_state" && len(m.Payload) == 0 })
	ref := a.send(jr, "realtime:lobby", "presence", map[string]any{"type": "presence", "event": "track", "payload": map[string]any{"online": true}})
	if r := a.reply(ref); status(r) != "ok" {
		t.Fatalf("track reply %s", r.Raw)
	}
	a.expect("own join diff", func(m *rtMsg) bool { return m.Event == "presence_diff" })

	b.mustJoin("realtime:lobby", cfg("bob"))
	st := b.expect("presence_state", func(m *rtMsg) bool { return m.Event == "presence_state" })
	alice, _ := st.Payload["alice"].(map[string]any)
	metas, _ := alice["metas"].([]any)
	if len(metas) != 1 || metas[0].(map[string]any)["online"] != true || metas[0].(map[string]any)["phx_ref"] == "" {
		t.Fatalf("presence_state %s", st.Raw)
	}
	// A track payload that is not a map is refused.
	ref = a.send(jr, "realtime:lobby", "presence", map[string]any{"type": "presence", "event": "track", "payload": []any{1}})
	if r := a.reply(ref); status(r) != "error" || reason(r) != "Presence track payload must be a map" {
		t.Fatalf("bad track reply %s", r.Raw)
	}
	// Leaving untracks.
	a.send(jr, "realtime:lobby", "phx_leave", map[string]any{})
	d := b.expect("leave diff", func(m *rtMsg) bool {
		l, _ := m.Payload["leaves"].(map[string]any)
		return m.Event == "presence_diff" && l["alice"] != nil
	})
	_ = d
}

func TestRealtimeAccessTokenRefresh(t *testing.T) {
	t.Parallel()
	env := newRTEnv(t, Config{})
	c := env.dial(t, "2.0.0")
	user := sign(t, secret, map[string]any{"role": "authenticated", "sub": "u1", "exp": time.Now().Add(time.Hour).Unix()})
	ref := c.send("=", "realtime:r", "phx_join", map[string]any{"config": map[string]any{}, "access_token": user})
	if r := c.reply(ref); status(r) != "ok" {
		t.Fatalf("join %s", r.Raw)
	}
	c.send(ref, "realtime:r", "access_token", map[string]any{"access_token": "garbage"})
	sys := c.expect("system error", func(m *rtMsg) bool { return m.Event == "system" })
	if sys.Payload["status"] != "error" || !strings.Contains(fmt.Sprint(sys.Payload["message"]), "InvalidJWTToken") {
		t.Fatalf("system %s", sys.Raw)
	}
	cl := c.expect("phx_close", func(m *rtMsg) bool { return m.Event == "phx_close" })
	if cl.JoinRef == nil || *cl.JoinRef != ref {
		t.Fatalf("phx_close without the join ref: %s", cl.Raw)
	}
	// A token that expires closes the channel when it does.
	soon := sign(t, secret, map[string]any{"role": "authenticated", "sub": "u1", "exp": time.Now().Add(1 * time.Second).Unix()})
	ref = c.send("=", "realtime:s", "phx_join", map[string]any{"config": map[string]any{}, "access_token": soon})
	if r := c.reply(ref); status(r) != "ok" {
		t.Fatalf("join %s", r.Raw)
	}
	c.expect("expiry", func(m *rtMsg) bool {
		return m.Event == "system" && strings.Contains(fmt.Sprint(m.Payload["message"]), "expired")
	})
}

func TestRealtimeSlowConsumer(t *testing.T) {
	t.Parallel()
	// The slow client reads only once the fast one has all 300 frames,
	// which takes long on a loaded machine: a write timeout that passed
	// meanwhile would end its socket before the close frame could tell it
	// why.
	env := newRTEnv(t, Config{Hub: fanout.Config{QueueFrames: 8}, WriteTimeout: 2 * time.Minute})
	fast := env.dial(t, "2.0.0")
	slow := env.dial(t, "2.0.0")
	fast.mustJoin("realtime:flood", nil)
	slow.mustJoin("realtime:flood", nil)
	// The slow client stops reading; the hub's frames pile up in its
	// queue once the socket buffers are full.
	big := `{"messages":[{"topic":"flood","event":"e","payload":{"pad":"` + strings.Repeat("x", 60000) + `"}}]}`
	got := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		for got < 300 {
			m, err := fast.recv(5 * time.Second)
			if err != nil {
				return
			}
			if m.Event == "broadcast" {
				got++
			}
		}
	}()
	for i := 0; i < 300; i++ {
		env.post(t, "/realtime/v1/api/broadcast", "", big)
	}
	<-done
	if got != 300 {
		t.Fatalf("fast client got %d of 300 broadcasts", got)
	}
	// The slow client is eventually told why it was dropped.
	var closeErr *websocket.CloseError
	var readErr error
	// The deadline of the join's read may have passed while the fast
	// client was served.
	_ = slow.ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		_, _, err := slow.ws.ReadMessage()
		if err != nil {
			if ce, ok := err.(*websocket.CloseError); ok {
				closeErr = ce
			}
			readErr = err
			break
		}
	}
	if closeErr == nil || closeErr.Code != websocket.ClosePolicyViolation || !strings.Contains(closeErr.Text, "slow consumer") {
		t.Fatalf("slow client closed with %v (read error %v)", closeErr, readErr)
	}
}

// TestRealtimeBacklogAndPing pauses a client until the kernel's socket
// buffers are full (the writers hand it to a slow writer), then reads
// everything: every broadcast arrives once, in order, and a ping sent
// meanwhile is answered by a pong.
func TestRealtimeBacklogAndPing(t *testing.T) {
	t.Parallel()
	env := newRTEnv(t, Config{})
	paused := env.dial(t, "1.0.0")
	paused.mustJoin("realtime:backlog", nil)
	pong := make(chan string, 1)
	paused.ws.SetPongHandler(func(data string) error { pong <- data; return nil })
	const n = 200
	pad := strings.Repeat("y", 64000) // 200 × 64 KB: more than the socket buffers hold
	for i := 0; i < n; i++ {
		body := fmt.Sprintf(`{"messages":[{"topic":"backlog","event":"e","payload":{"i":%d,"pad":"%s"}}]}`, i, pad)
		env.post(t, "/realtime/v1/api/broadcast", "", body)
	}
	if err := paused.ws.WriteControl(websocket.PingMessage, []byte("are you there"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	for want := 0; want < n; want++ {
		m := paused.expect(fmt.Sprintf("broadcast %d", want), func(m *rtMsg) bool { return m.Event == "broadcast" })
		p, _ := m.Payload["payload"].(map[string]any)
		if got := p["i"]; got != float64(want) {
			t.Fatalf("broadcast %v arrived where %d was due", got, want)
		}
	}
	// The pong is read by the library while a data frame is awaited.
	go func() { _, _ = paused.recv(2 * time.Second) }()
	select {
	case d := <-pong:
		if d != "are you there" {
			t.Fatalf("pong carried %q", d)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("no pong")
	}
}

func TestRealtimePostgresChangesFromLog(t *testing.T) {
	t.Parallel()
	env := newRTEnv(t, Config{})
	c := env.dial(t, "2.0.0")
	ref, r := c.join("realtime:todos", map[string]any{"postgres_changes": []any{
		map[string]any{"event": "*", "schema": "public", "table": "todos", "filter": "owner=eq.ann"},
	}})
	if status(r) != "ok" {
		t.Fatalf("join %s", r.Raw)
	}
	_ = ref
	id := r.Payload["response"].(map[string]any)["postgres_changes"].([]any)[0].(map[string]any)["id"].(float64)
	change := func(op, owner string, n int) []byte {
		rec := fmt.Sprintf(`{"id":%d,"owner":%q,"done":false}`, n, owner)
		recs := `"record":` + rec + `,"old_record":null`
		if op == "delete" {
			recs = `"record":null,"old_record":` + rec
		}
		return []byte(fmt.Sprintf(`{"commit_lsn":"0/1","lsn":"0/1","xid":1,"commit_ts":"2024-05-01T10:00:00.123456Z","tx_index":0,"tx_last":true,"schema":"public","table":"todos","op":%q,"pk":{"id":%d},%s,"columns":[{"name":"id","type":"int4"},{"name":"owner","type":"text"},{"name":"done","type":"bool"}],"unchanged_toast":[]}`, op, n, recs))
	}
	env.log.Append(change("insert", "bob", 1))
	env.log.Append(change("insert", "ann", 2))
	env.log.Append(change("delete", "ann", 2))
	m := c.expect("insert", func(m *rtMsg) bool { return m.Event == "postgres_changes" })
	data := m.Payload["data"].(map[string]any)
	ids := m.Payload["ids"].([]any)
	if len(ids) != 1 || ids[0] != id {
		t.Fatalf("ids %v, want [%v]", ids, id)
	}
	if data["type"] != "INSERT" || data["table"] != "todos" || data["schema"] != "public" ||
		data["commit_timestamp"] != "2024-05-01T10:00:00.123Z" || data["errors"] != nil {
		t.Fatalf("payload %s", m.Raw)
	}
	if rec := data["record"].(map[string]any); rec["id"] != float64(2) || rec["owner"] != "ann" {
		t.Fatalf("record %v", rec)
	}
	if cols := data["columns"].([]any); len(cols) != 3 {
		t.Fatalf("columns %v", cols)
	}
	m = c.expect("delete", func(m *rtMsg) bool { return m.Event == "postgres_changes" })
	data = m.Payload["data"].(map[string]any)
	if data["type"] != "DELETE" || data["old_record"].(map[string]any)["id"] != float64(2) {
		t.Fatalf("delete payload %s", m.Raw)
	}
	if _, ok := data["record"]; ok {
		t.Fatalf("a delete carries a record: %s", m.Raw)
	}
}

// memRevocations is a Revocations for one endpoint; the real, shared
// set is auth.Revocations, exercised across nodes in e2e.
type memRevocations struct {
	mu      sync.Mutex
	revoked map[string]bool
	subs    []func(string)
}

func (m *memRevocations) Revoked(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.revoked[id]
}

func (m *memRevocations) OnRevoke(fn func(string)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.subs = append(m.subs, fn)
}

func (m *memRevocations) revoke(id string) {
	m.mu.Lock()
	m.revoked[id] = true
	subs := m.subs
	m.mu.Unlock()
	for _, fn := range subs {
		fn(id)
	}
}

// A session that ends closes its open channels with the reason, and only
// its own; its tokens are refused at join and refresh from then on.
func TestRealtimeRevokedSessionCloses(t *testing.T) {
	t.Parallel()
	rv := &memRevocations{revoked: map[string]bool{}}
	env := newRTEnv(t, Config{Revocations: rv})
	c := env.dial(t, "2.0.0")
	exp := time.Now().Add(time.Hour).Unix()
	ended := sign(t, secret, map[string]any{"role": "authenticated", "sub": "u1", "session_id": "s1", "exp": exp})
	kept := sign(t, secret, map[string]any{"role": "authenticated", "sub": "u1", "session_id": "s2", "exp": exp})
	refA := c.send("=", "realtime:a", "phx_join", map[string]any{"config": map[string]any{}, "access_token": ended})
	if r := c.reply(refA); status(r) != "ok" {
		t.Fatalf("join %s", r.Raw)
	}
	refB := c.send("=", "realtime:b", "phx_join", map[string]any{"config": map[string]any{}, "access_token": kept})
	if r := c.reply(refB); status(r) != "ok" {
		t.Fatalf("join %s", r.Raw)
	}
	rv.revoke("s1")
	sys := c.expect("system error", func(m *rtMsg) bool { return m.Event == "system" })
	if sys.Topic != "realtime:a" || sys.Payload["status"] != "error" || sys.Payload["message"] != revokedReason {
		t.Fatalf("system %s", sys.Raw)
	}
	if cl := c.expect("phx_close", func(m *rtMsg) bool { return m.Event == "phx_close" }); cl.Topic != "realtime:a" {
		t.Fatalf("closed %s", cl.Raw)
	}
	ref := c.send("=", "realtime:c", "phx_join", map[string]any{"config": map[string]any{}, "access_token": ended})
	if r := c.reply(ref); status(r) != "error" || !strings.Contains(string(r.Raw), revokedReason) {
		t.Fatalf("join with a revoked token: %s", r.Raw)
	}
	c.send(refB, "realtime:b", "access_token", map[string]any{"access_token": ended})
	sys = c.expect("refresh refused", func(m *rtMsg) bool { return m.Event == "system" })
	if sys.Topic != "realtime:b" || sys.Payload["message"] != revokedReason {
		t.Fatalf("system %s", sys.Raw)
	}
	env.rt.sessions.mu.Lock()
	left := len(env.rt.sessions.m)
	env.rt.sessions.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d sessions still filed after their channels closed", left)
	}
}
