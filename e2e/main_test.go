// Package e2e drives Fluxbase as its users do: in-process nodes checked
// with a real PostgreSQL (the Go tests here), and running `fluxbase serve`
// nodes driven by the official @supabase/supabase-js client (the Node
// tests under node/, run by TestSupabaseJS).
//
// It holds tests only.
package e2e

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fluxbase/fluxbase/internal/pgtest"
	"github.com/fluxbase/fluxbase/migrations"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

var migrateMu sync.Mutex

// migrate applies the migrations to one test database at a time: the
// roles they create belong to the whole cluster, and PostgreSQL refuses
// concurrent changes to one role from two databases ("tuple concurrently
// updated"); the migrations' advisory lock only covers one database.
func migrate(ctx context.Context, dbURL string) error {
	migrateMu.Lock()
	defer migrateMu.Unlock()
	_, err := migrations.Up(ctx, dbURL)
	return err
}

// migratedDB makes a database for the test, migrates it, runs setupSQL on
// it, and returns its URL and a pool on it, closed when the test ends.
func migratedDB(t testing.TB, setupSQL string) (string, *pgxpool.Pool) {
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
	if setupSQL != "" {
		if _, err := pool.Exec(ctx, setupSQL); err != nil {
			t.Fatalf("setup: %v", err)
		}
	}
	return dbURL, pool
}

// stopProcess signals p and waits for done (closed when it exited),
// killing it after limit; it reports whether p exited by itself.
func stopProcess(p *os.Process, done <-chan struct{}, sig os.Signal, limit time.Duration) bool {
	_ = p.Signal(sig)
	select {
	case <-done:
		return true
	case <-time.After(limit):
		_ = p.Kill()
		<-done
		return false
	}
}
