package cdc

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/fluxbase/fluxbase/bench"
	"github.com/fluxbase/fluxbase/bench/harness"
	"github.com/fluxbase/fluxbase/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// pg_recvlogical drains a known backlog to its end; the counts in the
// report are the backlog's.
func TestRecvLogicalDrainsBacklog(t *testing.T) {
	if _, err := harness.PGBin("pg_recvlogical"); err != nil {
		t.Skip(err)
	}
	env := &harness.Env{DatabaseURL: pgtest.NewDB(t)}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rep, err := Run(ctx, Config{Changes: 2500, TxRows: 100, Targets: []string{"pg_recvlogical"}}, env, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Targets[0].Status != bench.StatusOK {
		t.Fatalf("outcome %+v", rep.Targets[0])
	}
	r := rep.Data.([]*Result)[0]
	if r.Changes != 2500 || r.Transactions != 25 || r.WALBytes <= 0 || r.DrainSeconds <= 0 || r.ChangesPerSec <= 0 {
		t.Errorf("result %+v", r)
	}
	if last := r.Progress[len(r.Progress)-1]; last[1] != 1 {
		t.Errorf("progress ends at %v", last)
	}
}
