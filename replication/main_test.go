package replication

import (
	"os"
	"testing"

	"github.com/fluxbase/fluxbase/internal/pgtest"
)

func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		os.Exit(childMain(role))
	}
	code := pgtest.Main(m)
	stopBench()
	os.Exit(code)
}
