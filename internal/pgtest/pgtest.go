// Package pgtest gives each test package its own throwaway PostgreSQL
// cluster, started once per package run with wal_level=logical, so tests need
// nothing running beforehand. Use it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
//
// and ask for a fresh database in each test with NewDB.
package pgtest

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fluxbase/fluxbase/internal/pgcluster"
)

var (
	cluster *pgcluster.Cluster
	counter atomic.Int64
)

// Main starts the package's cluster, runs the tests, stops the cluster and
// removes its files. It returns the exit code for os.Exit.
func Main(m *testing.M) int {
	dir, err := os.MkdirTemp("", "fluxbase-pgtest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	// The postgres user must reach the data directory when tests run as root.
	_ = os.Chmod(dir, 0o755)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	cluster, err = pgcluster.Start(ctx, pgcluster.Options{Dir: dir + "/data", Ephemeral: true})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgtest: start PostgreSQL:", err)
		return 1
	}
	code := m.Run()
	cluster.Stop()
	return code
}

// Cluster is the package's running cluster.
func Cluster() *pgcluster.Cluster {
	if cluster == nil {
		panic("pgtest: call pgtest.Main from TestMain")
	}
	return cluster
}

var unsafeChars = regexp.MustCompile(`[^a-z0-9_]+`)

// NewDB creates an empty database for the test and returns its superuser
// URL. The database is dropped when the test ends.
func NewDB(t testing.TB) string {
	t.Helper()
	c := Cluster()
	name := strings.Trim(unsafeChars.ReplaceAllString(strings.ToLower(t.Name()), "_"), "_")
	if len(name) > 40 {
		name = name[:40]
	}
	name = fmt.Sprintf("t%d_%s", counter.Add(1), name)
	ctx := context.Background()
	if err := c.CreateDatabase(ctx, name); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		conn, err := pgx.Connect(ctx, c.URL("postgres"))
		if err != nil {
			return
		}
		defer conn.Close(ctx)
		// Slots pin a database; drop them before the database itself.
		_, _ = conn.Exec(ctx, `select pg_terminate_backend(active_pid) from pg_replication_slots where database = $1 and active_pid is not null`, name)
		_, _ = conn.Exec(ctx, `select pg_drop_replication_slot(slot_name) from pg_replication_slots where database = $1`, name)
		_, _ = conn.Exec(ctx, "drop database if exists "+pgx.Identifier{name}.Sanitize()+" with (force)")
	})
	return c.URL(name)
}
