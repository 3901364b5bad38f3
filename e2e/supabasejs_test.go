package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fluxbase/fluxbase/api"
	"github.com/fluxbase/fluxbase/auth"
	"github.com/fluxbase/fluxbase/broker/fanout"
	"github.com/fluxbase/fluxbase/change"
	"github.com/fluxbase/fluxbase/internal/pgcluster"
	"github.com/fluxbase/fluxbase/internal/pgtest"
	"github.com/fluxbase/fluxbase/replication"
)

// startNATSCluster runs two embedded NATS servers routed into one cluster,
// with JetStream on both, and returns their client URLs.
func startNATSCluster(t *testing.T) []string {
	t.Helper()
	var ports []int
	for range 2 {
		p, err := pgcluster.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, p)
	}
	routes := server.RoutesFromStr("nats://127.0.0.1:" + itoa(ports[0]) + ",nats://127.0.0.1:" + itoa(ports[1]))
	servers := make([]*server.Server, 2)
	for i, name := range []string{"a", "b"} {
		opts := &server.Options{
			ServerName: "e2e-" + name, Host: "127.0.0.1", Port: -1,
			JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true,
			Cluster: server.ClusterOpts{Name: "fluxbase-e2e", Host: "127.0.0.1", Port: ports[i]},
			Routes:  routes,
		}
		s, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		servers[i] = s
		go s.Start()
		t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	}
	var urls []string
	for _, s := range servers {
		if !s.ReadyForConnections(20 * time.Second) {
			t.Fatal("NATS server not ready")
		}
		urls = append(urls, s.ClientURL())
	}
	return urls
}

func itoa(n int) string { return string(appendInt(nil, n)) }

func appendInt(b []byte, n int) []byte {
	if n >= 10 {
		b = appendInt(b, n/10)
	}
	return append(b, byte('0'+n%10))
}

// clusterNode is one in-process node wired as `fluxbase serve` wires one:
// its own NATS connection to its own server of the cluster, the
// replication reader (every node runs one; one holds the slot), and the
// realtime endpoint reading the shared change stream.
func startClusterNode(t *testing.T, ctx context.Context, name, dbURL, natsURL, slot string, v *auth.Verifier) string {
	t.Helper()
	nc, err := nats.Connect(natsURL, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	jsLog, err := replication.NewJetStreamLog(nc, replication.JetStreamLogOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := replication.New(replication.Config{DatabaseURL: dbURL, SlotName: slot, ReplicaIdentityFull: true, StatusInterval: 200 * time.Millisecond, StandbyRetry: 200 * time.Millisecond}, jsLog)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	rt := api.NewRealtime(api.RealtimeConfig{
		Verifier: v, Pool: pool, Log: testLogger(t),
		Source: fanout.NewJetStreamSource(js, ""), Bus: fanout.NewNATSBus(nc),
		Hub:        fanout.Config{NodeID: name, PresenceInterval: time.Second},
		Registerer: prometheus.NewRegistry(),
	})
	return serveNode(t, rep, rt, v, pool)
}

// cluster is two nodes sharing one PostgreSQL and a two-server NATS
// cluster with the change stream.
type cluster struct {
	a, b string // the nodes' base URLs
	db   *pgxpool.Pool
	url  string // the database's URL
}

func startCluster(t *testing.T, setupSQL string) *cluster {
	t.Helper()
	ctx := context.Background()
	dbURL := pgtest.NewDB(t)
	if err := migrate(ctx, dbURL); err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if _, err := pool.Exec(ctx, `create table public.e2e_ping (id serial primary key);`+setupSQL); err != nil {
		t.Fatal(err)
	}
	natsURLs := startNATSCluster(t)
	nc, err := nats.Connect(natsURLs[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		rctx, rcancel := context.WithTimeout(sctx, 5*time.Second)
		_, err = js.CreateOrUpdateStream(rctx, jetstream.StreamConfig{
			Name: change.Stream, Subjects: []string{change.SubjectWildcard}, Duplicates: time.Minute,
		})
		rcancel()
		if err == nil || sctx.Err() != nil {
			break
		}
		time.Sleep(time.Second) // the JetStream cluster elects its leader
	}
	if err != nil {
		t.Fatalf("create stream: %v", err)
	}
	v, err := auth.NewVerifier(jwtSecret)
	if err != nil {
		t.Fatal(err)
	}
	slot := slotName()
	c := &cluster{db: pool, url: dbURL}
	c.a = startClusterNode(t, ctx, "node-a", dbURL, natsURLs[0], slot, v)
	c.b = startClusterNode(t, ctx, "node-b", dbURL, natsURLs[1], slot, v)
	waitStreaming(t, pool, js)
	return c
}

// TestSupabaseJS runs the Node tests in node/ against a cluster of two
// nodes: subscribe on one node, write and broadcast through the other.
func TestSupabaseJS(t *testing.T) {
	t.Parallel()
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed")
	}
	dir, _ := filepath.Abs("node")
	ensureNodeModules(t, dir)
	c := startCluster(t, `create table public.todos (id serial primary key, owner text not null, title text, done boolean not null default false);`+notesSQL+restItemsSQL)
	anon, _ := auth.APIKey(jwtSecret, auth.RoleAnon)
	runNodeTests(t, nodeBin, dir, c.a, c.b, anon, c.url,
		"USER_A_ID="+userA, "USER_A_TOKEN="+userToken(t, userA), "USER_B_ID="+userB, "USER_B_TOKEN="+userToken(t, userB))
}

// ensureNodeModules installs the Node tests' locked dependencies once.
func ensureNodeModules(t *testing.T, dir string) {
	t.Helper()
	nodeModulesOnce.Do(func() {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", "@supabase", "supabase-js")); err == nil {
			return
		}
		npm := exec.Command("npm", "ci", "--no-audit", "--no-fund")
		npm.Dir = dir
		out, err := npm.CombinedOutput()
		if err != nil {
			nodeModulesErr = fmt.Errorf("npm ci: %w\n%s", err, out)
		}
	})
	if nodeModulesErr != nil {
		t.Fatal(nodeModulesErr)
	}
}

var (
	nodeModulesOnce sync.Once
	nodeModulesErr  error
)

// restItemsSQL is the table of node/rest.test.mjs: each user's own items,
// and items without an owner that anyone may read.
const restItemsSQL = `
create table public.rest_items (
  id bigint generated by default as identity primary key,
  owner uuid default auth.uid(),
  title text not null,
  n int,
  done boolean not null default false,
  tags text[] not null default '{}',
  meta jsonb
);
alter table public.rest_items enable row level security;
create policy own on public.rest_items to authenticated using (owner = auth.uid()) with check (owner = auth.uid());
create policy shared on public.rest_items for select using (owner is null);
create table public.rest_notes (id serial primary key, item_id bigint not null references public.rest_items on delete cascade, body text);
create function public.rest_add(a int, b int) returns int language sql immutable as $$ select a + b $$;
create function public.rest_items_over(min int) returns setof public.rest_items language sql stable
  as $$ select * from public.rest_items where n > min $$;
`

// runNodeTests runs node/*.test.mjs against nodes a and b (the REST
// tests need restItemsSQL in the database); env
// adds variables (the user tokens of the row-level security test).
func runNodeTests(t *testing.T, nodeBin, dir, a, b, anon, dbURL string, env ...string) {
	t.Helper()
	cmd := exec.Command(nodeBin, "--test", "--test-reporter=spec", "realtime.test.mjs", "rest.test.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "FLUXBASE_A="+a, "FLUXBASE_B="+b, "ANON_KEY="+anon, "DATABASE_URL="+dbURL,
		"REST_A_ID="+userA, "REST_A_TOKEN="+userToken(t, userA), "REST_B_TOKEN="+userToken(t, userB))
	cmd.Env = append(cmd.Env, env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(3 * time.Minute):
		_ = cmd.Process.Kill()
		err = <-done
	}
	t.Logf("node --test:\n%s", out.String())
	if err != nil {
		t.Fatalf("supabase-js tests failed: %v", err)
	}
}

// A client resumes on the other node from the position it saw on the
// first: the change stream's positions are the same on every node.
func TestRealtimeClusterResume(t *testing.T) {
	t.Parallel()
	c := startCluster(t, `create table public.items (id int primary key, v text)`)
	service, _ := auth.APIKey(jwtSecret, auth.RoleServiceRole)
	ctx := context.Background()
	last := seenThenGone(t, c.a, service, c.db)
	if _, err := c.db.Exec(ctx, `insert into public.items select g, 'missed' from generate_series(1, 1000) g`); err != nil {
		t.Fatal(err)
	}
	b := dial(t, c.b, service)
	cfg := changes("items")
	cfg["postgres_changes_resume"] = map[string]any{"log_seq": last}
	b.mustJoin("realtime:items", cfg, "")
	for want := 1; want <= 1000; want++ {
		m := b.expect(fmt.Sprintf("row %d", want), isChange)
		if id := record(m)["id"]; id != float64(want) {
			t.Fatalf("got row %v, want %d", id, want)
		}
	}
	if _, err := c.db.Exec(ctx, `insert into public.items values (1001, 'live')`); err != nil {
		t.Fatal(err)
	}
	if m := b.expect("live row", isChange); record(m)["id"] != float64(1001) {
		t.Fatalf("after the replay got %s", m.Raw)
	}
}

// waitStreaming waits until the slot holder publishes: a row written now
// reaches the stream.
func waitStreaming(t *testing.T, pool *pgxpool.Pool, js jetstream.JetStream) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := pool.Exec(ctx, `insert into public.e2e_ping default values`); err != nil {
			t.Fatal(err)
		}
		if s, err := js.Stream(ctx, change.Stream); err == nil {
			if info, err := s.Info(ctx); err == nil && info.State.Msgs > 0 {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatal("no change reached the stream")
}
