package rest

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fluxbase/fluxbase/auth"
	"github.com/fluxbase/fluxbase/internal/apitest"
	"github.com/fluxbase/fluxbase/internal/pgcluster"
	"github.com/fluxbase/fluxbase/migrations"
)

// Reads go to a streaming replica, writes to the primary; a replica that
// cannot be reached sends its reads to the primary.
func TestRESTReadReplica(t *testing.T) {
	t.Parallel()
	if _, err := pgcluster.FindBinDir(); err != nil {
		t.Skip(err)
	}
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "fluxbase-replica-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	_ = os.Chmod(dir, 0o755) // the postgres user reaches the data directories
	primary, err := pgcluster.Start(ctx, pgcluster.Options{Dir: filepath.Join(dir, "primary"), Ephemeral: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { primary.Stop() })
	if err := primary.CreateDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if _, err := migrations.Up(ctx, primary.URL("app")); err != nil {
		t.Fatal(err)
	}
	standby, err := primary.StartStandby(ctx, pgcluster.Options{Dir: filepath.Join(dir, "standby"), Ephemeral: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { standby.Stop() })

	pools := map[string]*pgxpool.Pool{}
	for name, url := range map[string]string{
		"primary": primary.URL("app"), "replica": standby.URL("app"),
		"dead": "postgres://postgres@127.0.0.1:1/app?connect_timeout=2",
	} {
		p, err := pgxpool.New(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		pools[name] = p
	}
	if _, err := pools["primary"].Exec(ctx, `
		create table notes (id int primary key, body text);
		create view whereami as select pg_catalog.pg_is_in_recovery() as replica;
		create function am_i_replica() returns boolean language sql stable as $$ select pg_catalog.pg_is_in_recovery() $$;`); err != nil {
		t.Fatal(err)
	}
	service := apitest.Key(t, auth.RoleServiceRole)
	serveReplicas := func(replicas ...*pgxpool.Pool) *restEnv {
		return &restEnv{srv: serve(t, Config{Pool: pools["primary"], Replicas: replicas})}
	}
	e := serveReplicas(pools["replica"])
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 20 s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("the view on the replica", func() bool { return e.do(t, "GET", "/whereami", service, "").status == 200 })
	if r := e.do(t, "GET", "/whereami", service, ""); string(r.body) != `[{"replica":true}]` {
		t.Errorf("a read ran on %s", r.body)
	}
	if r := e.do(t, "GET", "/rpc/am_i_replica", service, ""); string(r.body) != `true` {
		t.Errorf("a GET call ran with pg_is_in_recovery() = %s", r.body)
	}
	if r := e.do(t, "POST", "/rpc/am_i_replica", service, ""); string(r.body) != `false` {
		t.Errorf("a POST call ran with pg_is_in_recovery() = %s", r.body)
	}
	if r := e.do(t, "POST", "/notes", service, `{"id":1,"body":"hello"}`); r.status != 201 {
		t.Fatalf("a write: status %d body %s", r.status, r.body)
	}
	waitFor("the write on the replica", func() bool {
		return string(e.do(t, "GET", "/notes?select=body", service, "").body) == `[{"body":"hello"}]`
	})

	// Only a dead replica: every read still answers, from the primary.
	dead := serveReplicas(pools["dead"])
	for range 2 {
		if r := dead.do(t, "GET", "/whereami", service, ""); r.status != 200 || string(r.body) != `[{"replica":false}]` {
			t.Errorf("with the replica down: status %d body %s", r.status, r.body)
		}
	}
}
