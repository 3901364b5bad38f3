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
