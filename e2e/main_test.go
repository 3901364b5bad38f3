// Package e2e drives Fluxbase as its users do: in-process nodes checked
// with a real PostgreSQL (the Go tests here), and running `fluxbase serve`
// nodes driven by the official @supabase/supabase-js client (the Node
// tests under node/, run by TestSupabaseJS).
//
// It holds tests only.
package e2e

import (
	"os"
	"testing"

	"github.com/fluxbase/fluxbase/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
