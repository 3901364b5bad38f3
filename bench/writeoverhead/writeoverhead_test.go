package writeoverhead

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/fluxbase/fluxbase/bench"
	"github.com/fluxbase/fluxbase/bench/harness"
	"github.com/fluxbase/fluxbase/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// Every committed insert is counted once, and with the notify capture
// every insert (warm-up included) arrives as a notification.
func TestCapturesCountWrites(t *testing.T) {
	env := &harness.Env{DatabaseURL: pgtest.NewDB(t)}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rep, err := Run(ctx, Config{Writers: 2, Duration: 500 * time.Millisecond, Warmup: -1, Captures: []string{"off", "notify"}}, env, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range rep.Targets {
		if o.Status != bench.StatusOK {
			t.Fatalf("outcome %+v", o)
		}
	}
	results := rep.Data.([]*Result)
	for _, r := range results {
		if r.Transactions <= 0 || r.Errors != 0 || r.Latency.Count != uint64(r.Transactions) || r.TPS <= 0 {
			t.Errorf("%s: %+v", r.Capture, r)
		}
	}
	if results[0].Relative != 1 {
		t.Errorf("off relative to itself: %v", results[0].Relative)
	}
	// The trigger is installed for the notify run only and there is no
	// warm-up, so every one of its inserts is one notification.
	var got int64
	if _, err := fmt.Sscanf(results[1].Note, "%d notifications", &got); err != nil || got != results[1].Transactions {
		t.Errorf("note %q, want %d notifications", results[1].Note, results[1].Transactions)
	}
}
