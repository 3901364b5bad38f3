package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/fluxbase/fluxbase/auth"
	"github.com/fluxbase/fluxbase/node"
)

// drainSQL is a function whose call blocks until the test lets it go: it
// waits for a shared advisory lock the test holds.
const drainSQL = `
create table public.drain_items (id serial primary key, title text);
create function public.wait_for_test() returns text language sql volatile
  as $$ select 'done' from (select pg_advisory_xact_lock_shared(4242)) s $$;
`

// TestDrainServe drains the slot holder of two `fluxbase serve` nodes
// with SIGTERM: its /ready turns 503 and new websockets are refused while
// a request in flight still completes; the other node takes the slot and
// delivers the next change; the drained node's websocket client gets
// 1001 (going away), and its presence leaves the other node's channel.
func TestDrainServe(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL, pool := migratedDB(t, drainSQL)
	bin := buildFluxbase(t)
	nodes := startServeCluster(t, bin, dbURL, []string{"a", "b"},
		// Long enough to look at the draining node before it stops
		// listening; its request in flight outlasts it.
		"FLUXBASE_DRAIN_DELAY=8s", "FLUXBASE_SHUTDOWN_TIMEOUT=60s")
	for _, n := range nodes {
		waitHTTP(t, n.url+"/ready", 90*time.Second)
	}
	holder, other := waitHolder(t, nodes)
	anon, _ := auth.APIKey(jwtSecret, auth.RoleAnon)
	checkClusterStatus(t, bin, other, holder, anon)

	// A subscriber and a presence observer on the other node; a tracked
	// client on the holder.
	watcher := dial(t, other.url, anon)
	watcher.mustJoin("realtime:drain", map[string]any{
		"postgres_changes": []any{map[string]any{"event": "INSERT", "schema": "public", "table": "drain_items"}},
		"presence":         map[string]any{"key": "watcher"},
	}, "")
	leaving := dial(t, holder.url, anon)
	jr := leaving.mustJoin("realtime:drain", map[string]any{"presence": map[string]any{"key": "leaving"}}, "")
	leaving.send(jr, "realtime:drain", "presence", map[string]any{"type": "presence", "event": "track", "payload": map[string]any{"on": holder.name}})
	watcher.expect("the holder's client joining presence", func(m *msg) bool {
		return m.Event == "presence_diff" && presenceKeys(m, "joins")["leaving"]
	})

	// A request in flight on the holder, blocked in the database.
	lock, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Release()
	if _, err := lock.Exec(ctx, "select pg_advisory_lock(4242)"); err != nil {
		t.Fatal(err)
	}
	type result struct {
		status int
		body   string
		err    error
	}
	slow := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, holder.url+"/rest/v1/rpc/wait_for_test", strings.NewReader("{}"))
		req.Header.Set("apikey", anon)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			slow <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		slow <- result{status: resp.StatusCode, body: string(b)}
	}()
	waitFor(t, "the request to wait in the database", func() bool {
		var n int
		_ = pool.QueryRow(ctx, `select count(*) from pg_stat_activity where wait_event_type = 'Lock' and wait_event = 'advisory'`).Scan(&n)
		return n == 1
	})

	go holder.stop(90 * time.Second)

	// /ready turns 503, naming the drain, and websockets are refused.
	waitFor(t, "/ready to answer 503", func() bool {
		status, body := get(t, holder.url+"/ready")
		return status == http.StatusServiceUnavailable && strings.Contains(body, `"draining"`)
	})
	_, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(holder.url, "http")+"/realtime/v1/websocket?vsn=2.0.0&apikey="+anon, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("websocket on a draining node: err %v, response %v", err, resp)
	}

	// The client on the drained node is told to go away; its presence
	// leaves the channel on the other node.
	if _, err := leaving.recvUntil(30*time.Second, func(*msg) bool { return false }); !websocket.IsCloseError(errors.Unwrap(err), websocket.CloseGoingAway) {
		t.Fatalf("the drained node's client: %v, want close 1001", err)
	}
	watcher.expect("the drained client's presence leaving", func(m *msg) bool {
		return m.Event == "presence_diff" && presenceKeys(m, "leaves")["leaving"]
	})

	// The other node holds the slot and delivers what is written now.
	waitFor(t, "the other node to hold the slot", func() bool { return metric(t, other.url, "fluxbase_replication_holder") == "1" })
	if _, err := pool.Exec(ctx, `insert into public.drain_items (title) values ('after the drain')`); err != nil {
		t.Fatal(err)
	}
	ch := watcher.expect("the change written after the drain", isChange)
	if rec := record(ch); rec["title"] != "after the drain" {
		t.Fatalf("change %s", ch.Raw)
	}

	// The request in flight finishes, and the node exits cleanly.
	if _, err := lock.Exec(ctx, "select pg_advisory_unlock(4242)"); err != nil {
		t.Fatal(err)
	}
	r := <-slow
	if r.err != nil || r.status != http.StatusOK || strings.TrimSpace(r.body) != `"done"` {
		t.Fatalf("the request in flight: status %d, body %q, err %v", r.status, r.body, r.err)
	}
	select {
	case <-holder.done:
	case <-time.After(90 * time.Second):
		t.Fatal("the drained node did not exit")
	}
	if !holder.cmd.ProcessState.Success() {
		t.Fatalf("the drained node exited with %v", holder.cmd.ProcessState)
	}
}

// waitHolder waits until one of nodes holds the replication slot and
// returns it and another node.
func waitHolder(t testing.TB, nodes []*serveNode) (holder, other *serveNode) {
	t.Helper()
	waitFor(t, "a node to hold the slot", func() bool {
		for i, n := range nodes {
			if metric(t, n.url, "fluxbase_replication_holder") == "1" {
				holder, other = n, nodes[(i+1)%len(nodes)]
				return true
			}
		}
		return false
	})
	return holder, other
}

// metric is the value of an unlabelled metric on a node's /metrics, or
// "" when the node does not answer or lacks it.
func metric(t testing.TB, base, name string) string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return v
		}
	}
	return ""
}

// get returns a GET's status and body; 0 when the request failed.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// presenceKeys is the set of presence keys of a presence_diff's joins or
// leaves.
func presenceKeys(m *msg, side string) map[string]bool {
	keys := map[string]bool{}
	var p map[string]json.RawMessage
	if json.Unmarshal(m.Raw, &[]any{nil, nil, nil, nil, &p}) != nil {
		return keys
	}
	var entries map[string]json.RawMessage
	_ = json.Unmarshal(p[side], &entries)
	for k := range entries {
		keys[k] = true
	}
	return keys
}

// waitFor polls cond until it holds, failing the test after a minute.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: gave up after a minute", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkClusterStatus asks a node for the cluster's state, as JSON on
// /cluster (the service key's only) and printed by `fluxbase status`: both
// nodes, the holder, the stream's two current replicas, the active slot.
func checkClusterStatus(t *testing.T, bin string, ask, holder *serveNode, anon string) {
	t.Helper()
	service, _ := auth.APIKey(jwtSecret, auth.RoleServiceRole)
	fetch := func(key string) (int, node.ClusterStatus) {
		req, _ := http.NewRequest(http.MethodGet, ask.url+"/cluster", nil)
		req.Header.Set("apikey", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var cs node.ClusterStatus
		_ = json.NewDecoder(resp.Body).Decode(&cs)
		return resp.StatusCode, cs
	}
	if status, _ := fetch(anon); status != http.StatusForbidden {
		t.Fatalf("/cluster with the anon key: %d, want 403", status)
	}
	var cs node.ClusterStatus
	waitFor(t, "/cluster to show both nodes and two current replicas", func() bool {
		var status int
		status, cs = fetch(service)
		current := 0
		for _, r := range cs.JetStream.Replicas {
			if r.Current {
				current++
			}
		}
		return status == http.StatusOK && len(cs.Nodes) == 2 && current == 2
	})
	if cs.Replication.Holder != holder.name || !cs.Replication.Active || cs.Missing != 0 || cs.JetStream.MetaLeader == "" {
		t.Fatalf("/cluster: %+v", cs)
	}
	for _, n := range cs.Nodes {
		if !n.Ready || n.Version == "" || n.Uptime <= 0 || n.SlotHolder != (n.Name == holder.name) {
			t.Fatalf("/cluster node %+v", n)
		}
	}
	cmd := exec.Command(bin, "status")
	cmd.Env = append(os.Environ(), "FLUXBASE_URL="+ask.url, "FLUXBASE_JWT_SECRET="+jwtSecret)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("fluxbase status: %v\n%s", err, out)
	}
	for _, want := range []string{"e2e-a", "e2e-b", "slot holder", "slot " + holder.slot + ": holder " + holder.name + ", active yes"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("fluxbase status lacks %q:\n%s", want, out)
		}
	}
}
