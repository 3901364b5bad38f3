package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/fluxbase/fluxbase/auth"
	"github.com/fluxbase/fluxbase/internal/pgcluster"
)

// TestSupabaseJSServe runs the Node tests against two `fluxbase serve`
// processes clustered by routes on one PostgreSQL: the real binary, its
// embedded brokers and its wiring. It skips while the binary does not
// serve /realtime/v1.
func TestSupabaseJSServe(t *testing.T) {
	t.Parallel()
	nodeBin, dir := nodeTests(t)
	// Migrated here, one database at a time (see migrate); the nodes then
	// find nothing to apply.
	dbURL, pool := migratedDB(t, "")
	nodes := startServeCluster(t, buildFluxbase(t), dbURL, []string{"a", "b"}, "FLUXBASE_REPLICA_IDENTITY_FULL=true", "FLUXBASE_AUTH_ANONYMOUS_USERS=true")
	anon, _ := auth.APIKey(jwtSecret, auth.RoleAnon)
	for _, n := range nodes {
		waitHTTP(t, n.url+"/health", 90*time.Second)
	}
	resp, err := http.Get(nodes[0].url + "/realtime/v1/websocket?apikey=" + anon)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		t.Fatal("fluxbase serve does not mount /realtime/v1")
	}
	// The nodes set REPLICA IDENTITY FULL on new tables on their next
	// reconcile pass; the table is made with it here so the UPDATE below
	// carries its old row whatever the timing.
	if _, err := pool.Exec(context.Background(), `create table public.todos (id serial primary key, owner text not null, title text, done boolean not null default false);
		alter table public.todos replica identity full;`+restItemsSQL+authNotesSQL); err != nil {
		t.Fatal(err)
	}
	runNodeTests(t, nodeBin, dir, nodes[0].url, nodes[1].url, anon, dbURL)
}

// serveNode is one `fluxbase serve` process, which may be restarted.
type serveNode struct {
	name, url string
	bin, slot string
	env       []string
	cmd       *exec.Cmd
	done      chan struct{} // closed when the process has exited
	logs      syncBuffer    // its output, across restarts
}

// start starts the process (again, after it exited: same name, ports
// and data directory).
func (n *serveNode) start(t testing.TB) {
	t.Helper()
	n.cmd = exec.Command(n.bin, "serve")
	n.cmd.Env = n.env
	n.cmd.Stdout, n.cmd.Stderr = &n.logs, &n.logs
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cmd, done := n.cmd, make(chan struct{})
	n.done = done
	go func() { _ = cmd.Wait(); close(done) }()
}

// stop sends SIGTERM and waits for the process to exit, killing it after
// limit. It reports whether it exited by itself with status 0.
func (n *serveNode) stop(limit time.Duration) bool {
	cmd := n.cmd
	return stopProcess(cmd.Process, n.done, syscall.SIGTERM, limit) && cmd.ProcessState.Success()
}

// startServeCluster starts a `fluxbase serve` node per name on dbURL,
// routed into one cluster on free loopback ports, with env added to each
// node's environment. The nodes stop (and show their logs if the test
// failed) at the test's end.
func startServeCluster(t testing.TB, bin, dbURL string, names []string, env ...string) []*serveNode {
	t.Helper()
	ports := make([]int, 2*len(names)) // HTTP ports, then cluster ports
	for i := range ports {
		var err error
		if ports[i], err = pgcluster.FreePort(); err != nil {
			t.Fatal(err)
		}
	}
	var routes string
	for i := range names {
		if i > 0 {
			routes += ","
		}
		routes += fmt.Sprintf("nats://127.0.0.1:%d", ports[len(names)+i])
	}
	// Slot names are the PostgreSQL cluster's, which the tests' databases
	// share: each cluster of nodes gets its own.
	slot := slotName()
	nodes := make([]*serveNode, len(names))
	for i, name := range names {
		n := &serveNode{name: "e2e-" + name, url: "http://127.0.0.1:" + strconv.Itoa(ports[i]), bin: bin, slot: slot}
		nodes[i] = n
		n.env = append(os.Environ(),
			"DATABASE_URL="+dbURL,
			"FLUXBASE_JWT_SECRET="+jwtSecret,
			"FLUXBASE_HTTP_ADDR=127.0.0.1:"+strconv.Itoa(ports[i]),
			"FLUXBASE_DATA_DIR="+t.TempDir(),
			"FLUXBASE_NODE_NAME="+n.name,
			"FLUXBASE_NATS_PORT=-1",
			"FLUXBASE_CLUSTER_PORT="+strconv.Itoa(ports[len(names)+i]),
			"FLUXBASE_CLUSTER_ROUTES="+routes,
			"FLUXBASE_REPLICATION_SLOT="+slot,
		)
		n.env = append(n.env, env...)
		n.start(t)
		t.Cleanup(func() {
			n.stop(30 * time.Second)
			if t.Failed() {
				t.Logf("node %s log:\n%s", n.name, n.logs.String())
			}
		})
	}
	return nodes
}

func waitHTTP(t testing.TB, url string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s did not answer in %v", url, limit)
}
