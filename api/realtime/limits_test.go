package realtime

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/fluxbase/fluxbase/auth"
	"github.com/fluxbase/fluxbase/broker/fanout"
)

// The bucket lets a burst of its rate through, refuses what comes faster,
// and asks for a disconnect once a client has kept going for a whole
// burst past its refusals; waiting earns tokens back.
func TestBucket(t *testing.T) {
	t.Parallel()
	b := newBucket(10)
	now := time.Unix(1000, 0)
	for i := range 10 {
		if ok, over := b.take(now); !ok || over {
			t.Fatalf("message %d of a burst of 10: ok %v, over %v", i, ok, over)
		}
	}
	for i := range 9 {
		if ok, over := b.take(now); ok || over {
			t.Fatalf("refusal %d: ok %v, over %v; want refused, not yet over", i, ok, over)
		}
	}
	// A second later ten tokens are back: the debt of nine is paid, one
	// message passes.
	now = now.Add(time.Second)
	if ok, over := b.take(now); !ok || over {
		t.Fatalf("after a second: ok %v, over %v", ok, over)
	}
	for range 9 {
		b.take(now)
	}
	if ok, over := b.take(now); ok || !over {
		t.Fatalf("a burst past the refusals: ok %v, over %v; want refused and over", ok, over)
	}
	// Tokens never pile up past a burst.
	idle := newBucket(5)
	idle.take(now)
	now = now.Add(time.Hour)
	passed := 0
	for range 20 {
		if ok, _ := idle.take(now); ok {
			passed++
		}
	}
	if passed != 5 {
		t.Fatalf("%d passed after an hour idle, want the burst of 5", passed)
	}
}

// countingAccess answers every table as readable and counts the questions.
type countingAccess struct {
	mu    sync.Mutex
	calls map[string]int
}

func (a *countingAccess) Access(_ context.Context, role, schema, table string) (*fanout.Access, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls[schema+"."+table]++
	return &fanout.Access{Columns: map[string]bool{"id": true, "owner": true}}, nil
}

// A join reads each table's privileges once, however many bindings name it.
func TestCheckBindingsOncePerTable(t *testing.T) {
	t.Parallel()
	acc := &countingAccess{calls: map[string]int{}}
	c := &rtConn{rt: &Endpoint{access: acc}}
	var bindings []joinBinding
	for i := range 100 {
		for _, table := range []string{"todos", "notes"} {
			raw, _ := json.Marshal(map[string]any{"event": "*", "schema": "public", "table": table, "filter": fmt.Sprintf("id=neq.%d", i)})
			jb, err := parseBinding(raw)
			if err != nil {
				t.Fatal(err)
			}
			bindings = append(bindings, jb)
		}
	}
	claims := &auth.Claims{Role: "authenticated"}
	if reason := c.checkBindings(context.Background(), claims, bindings); reason != "" {
		t.Fatalf("refused: %s", reason)
	}
	if len(acc.calls) != 2 || acc.calls["public.todos"] != 1 || acc.calls["public.notes"] != 1 {
		t.Fatalf("privilege reads %v, want one per table", acc.calls)
	}
}

// Past MaxConnections an upgrade is refused before it happens, with 503,
// Retry-After and the edge's error shape; a connection that leaves makes
// room for another.
func TestConnectionLimit(t *testing.T) {
	t.Parallel()
	env := newRTEnv(t, Config{Limits: Limits{MaxConnections: 2}})
	a := env.dial(t, "2.0.0")
	env.dial(t, "2.0.0")
	u := "ws" + strings.TrimPrefix(env.srv.URL, "http") + "/realtime/v1/websocket?apikey=" + env.anon + "&vsn=2.0.0"
	_, resp, err := websocket.DefaultDialer.Dial(u, nil)
	if err == nil || resp == nil {
		t.Fatalf("a third connection over a limit of 2: err %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var e struct{ Code, Message string }
	_ = json.Unmarshal(body, &e)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || e.Code != "FB092" {
		t.Fatalf("refusal: %d, Retry-After %q, body %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	// The upgrade's answer may reach a client before its handler has
	// registered it with the hub: wait for the two, then see no third.
	for deadline := time.Now().Add(10 * time.Second); env.rt.hub.Clients() < 2 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if n := env.rt.hub.Clients(); n != 2 {
		t.Fatalf("the hub holds %d clients, want 2: a refused connection must not join it", n)
	}
	a.ws.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ws, _, err := websocket.DefaultDialer.Dial(u, nil)
		if err == nil {
			ws.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no room after a connection left: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := gauge(t, env, "fluxbase_realtime_connections_refused_total"); got < 1 {
		t.Fatalf("refusals counted: %v", got)
	}
}

// A resume further back than MaxResumeChanges is refused in the join's
// reply; one within it replays exactly what was missed.
func TestResumeLimit(t *testing.T) {
	t.Parallel()
	env := newRTEnv(t, Config{Hub: fanout.Config{MaxResumeChanges: 5}})
	for i := 1; i <= 10; i++ {
		env.log.Append([]byte(fmt.Sprintf(`{"commit_lsn":"0/1","lsn":"0/1","xid":1,"commit_ts":"2024-05-01T10:00:00Z","tx_index":0,"tx_last":true,"schema":"public","table":"todos","op":"insert","pk":{"id":%d},"record":{"id":%d},"old_record":null,"columns":[{"name":"id","type":"int4"}],"unchanged_toast":[]}`, i, i)))
	}
	c := env.dial(t, "2.0.0")
	join := func(topic string, after int) *rtMsg {
		_, r := c.join(topic, map[string]any{
			"postgres_changes":        []any{map[string]any{"event": "*", "schema": "public", "table": "todos"}},
			"postgres_changes_resume": map[string]any{"log_seq": after},
		})
		return r
	}
	if r := join("realtime:far", 1); status(r) != "error" || !strings.HasPrefix(reason(r), "UnableToReplayMessages") || !strings.Contains(reason(r), "more than the 5") {
		t.Fatalf("resume 9 changes back with a bound of 5: %s", r.Raw)
	}
	if r := join("realtime:beyond", 50); status(r) != "error" || !strings.HasPrefix(reason(r), "UnableToReplayMessages") || !strings.Contains(reason(r), "beyond the end") {
		t.Fatalf("resume from a position the log never gave out: %s", r.Raw)
	}
	if r := join("realtime:near", 6); status(r) != "ok" {
		t.Fatalf("resume 4 changes back: %s", r.Raw)
	}
	for want := 7; want <= 10; want++ {
		m := c.expect("replayed change", func(m *rtMsg) bool { return m.Event == "postgres_changes" })
		if id := m.Payload["data"].(map[string]any)["record"].(map[string]any)["id"]; id != float64(want) {
			t.Fatalf("replayed %v, want %d", id, want)
		}
	}
}

// gauge reads a metric's value from the endpoint's registry.
func gauge(t *testing.T, env *rtEnv, name string) float64 {
	t.Helper()
	mfs, err := env.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			if g := m.GetGauge(); g != nil {
				return g.GetValue()
			}
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
