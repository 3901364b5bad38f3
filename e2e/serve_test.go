package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fluxbase/fluxbase/auth"
	"github.com/fluxbase/fluxbase/internal/pgcluster"
	"github.com/fluxbase/fluxbase/internal/pgtest"
)

// TestSupabaseJSServe runs the Node tests against two `fluxbase serve`
// processes clustered by routes on one PostgreSQL: the real binary, its
// embedded brokers and its wiring. It skips while the binary does not
// serve /realtime/v1.
func TestSupabaseJSServe(t *testing.T) {
	t.Parallel()
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed")
	}
	dir, _ := filepath.Abs("node")
	ensureNodeModules(t, dir)
	bin := buildFluxbase(t)
	ctx := context.Background()
	dbURL := pgtest.NewDB(t)
	// Migrate here, one database at a time (see migrate); the nodes then
	// find nothing to apply.
	if err := migrate(ctx, dbURL); err != nil {
		t.Fatal(err)
	}
	ports := make([]int, 4) // two HTTP ports, two cluster ports
	for i := range ports {
		if ports[i], err = pgcluster.FreePort(); err != nil {
			t.Fatal(err)
		}
	}
	routes := fmt.Sprintf("nats://127.0.0.1:%d,nats://127.0.0.1:%d", ports[2], ports[3])
	var urls []string
	for i, name := range []string{"a", "b"} {
		url := "http://127.0.0.1:" + strconv.Itoa(ports[i])
		urls = append(urls, url)
		cmd := exec.Command(bin, "serve")
		cmd.Env = append(os.Environ(),
			"DATABASE_URL="+dbURL,
			"FLUXBASE_JWT_SECRET="+jwtSecret,
			"FLUXBASE_HTTP_ADDR=127.0.0.1:"+strconv.Itoa(ports[i]),
			"FLUXBASE_DATA_DIR="+t.TempDir(),
			"FLUXBASE_NODE_NAME=e2e-"+name,
			"FLUXBASE_NATS_PORT=-1",
			"FLUXBASE_CLUSTER_PORT="+strconv.Itoa(ports[2+i]),
			"FLUXBASE_CLUSTER_ROUTES="+routes,
			"FLUXBASE_REPLICA_IDENTITY_FULL=true",
			"FLUXBASE_AUTH_ANONYMOUS_USERS=true",
		)
		var logs bytes.Buffer
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		t.Cleanup(func() {
			_ = cmd.Process.Signal(os.Interrupt)
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
			if t.Failed() {
				t.Logf("node %s log:\n%s", name, logs.String())
			}
		})
	}
	anon, _ := auth.APIKey(jwtSecret, auth.RoleAnon)
	for _, u := range urls {
		waitHTTP(t, u+"/health", 90*time.Second)
	}
	resp, err := http.Get(urls[0] + "/realtime/v1/websocket?apikey=" + anon)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		t.Fatal("fluxbase serve does not mount /realtime/v1")
	}
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	// The nodes set REPLICA IDENTITY FULL on new tables on their next
	// reconcile pass; the table is made with it here so the UPDATE below
	// carries its old row whatever the timing.
	if _, err := pool.Exec(ctx, `create table public.todos (id serial primary key, owner text not null, title text, done boolean not null default false);
		alter table public.todos replica identity full;`+restItemsSQL+authNotesSQL); err != nil {
		t.Fatal(err)
	}
	runNodeTests(t, nodeBin, dir, urls[0], urls[1], anon, dbURL)
}

func waitHTTP(t *testing.T, url string, limit time.Duration) {
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
