package replication

import (
	"os"
	"testing"

	"github.com/fluxbase/fluxbase/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
