package storage

import (
	"os"
	"testing"

	"github.com/fluxbase/fluxbase/internal/pgtest"
)

// TestMain gives the package's tests a throwaway PostgreSQL (see
// pgtest.NewDB).
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
