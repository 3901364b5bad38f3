package replication

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fluxbase/fluxbase/broker"
	"github.com/fluxbase/fluxbase/change"
	"github.com/fluxbase/fluxbase/internal/pgcluster"
	"github.com/fluxbase/fluxbase/internal/pgtest"
)

var (
	million           = flag.Bool("million", false, "run TestMillionRowTransaction")
	millionDuplicates = flag.Duration("million-duplicates", 0, "the broker's duplicate window in TestMillionRowTransaction (0: the broker's default)")
)

// TestMillionRowTransaction streams one transaction of a million rows
// through a node process that runs the embedded broker and the replicator
// together, as `fluxbase serve` does, and checks the node's peak resident memory
// (VmHWM) stays under 300 MB: events are published as they are decoded,
// never buffered per transaction. It takes a minute or two, so it runs only
// when asked:
//
//	go test ./replication -run TestMillionRowTransaction -million -v
//
// The broker runs with `fluxbase serve`'s defaults: it syncs every 100 ms
// and keeps a one-second duplicate window (broker.DefaultDuplicateWindow).
// JetStream holds every message id of the window in memory, so a longer
// window adds memory that belongs to the broker's configuration, not to
// the pipeline (-million-duplicates=2m shows it). Replication does not
// rely on the window (see TestCrashExactlyOnce).
func TestMillionRowTransaction(t *testing.T) {
	if !*million {
		t.Skip("run with -million")
	}
	const rows = 1_000_000
	ctx := context.Background()
	dbURL := pgtest.NewDB(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, "create table big (id int primary key, payload text, created_at timestamptz default now())")
	natsPort, err := pgcluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	node := startChild(t, "node", "embedded", "NATS_DIR="+t.TempDir(), "NATS_PORT="+strconv.Itoa(natsPort),
		"NATS_SYNC=100ms", "NATS_DUPLICATES="+millionDuplicates.String(), "PG_URL="+dbURL, "SLOT="+slotFor(dbURL))
	nc := connectNATS(t, fmt.Sprintf("nats://127.0.0.1:%d", natsPort))
	waitFor(t, 30*time.Second, "the slot holder", func() bool {
		var n int
		_ = conn.QueryRow(ctx, "select count(*) from pg_stat_replication").Scan(&n)
		return n > 0
	})
	before, err := vmHWM(node.cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	mustExec(t, conn, fmt.Sprintf("insert into big select g, repeat('x', 40) || g, now() from generate_series(1, %d) g", rows))
	committed := time.Since(began)

	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var peak int64
	waitFor(t, 10*time.Minute, "a million events", func() bool {
		if hwm, err := vmHWM(node.cmd.Process.Pid); err == nil {
			peak = hwm
		}
		s, err := js.Stream(ctx, change.Stream)
		if err != nil {
			return false
		}
		info, err := s.Info(ctx)
		return err == nil && info.State.Msgs >= rows
	})
	if hwm, err := vmHWM(node.cmd.Process.Pid); err == nil {
		peak = hwm
	}
	window := *millionDuplicates
	if window == 0 {
		window = broker.DefaultDuplicateWindow
	}
	t.Logf("duplicate window %v: insert committed in %v; %d events stored %v after the commit; node VmHWM %d MB (%d MB before)",
		window, committed.Round(time.Millisecond), rows, (time.Since(began) - committed).Round(time.Millisecond), peak>>20, before>>20)
	if peak > 300<<20 {
		t.Fatalf("node peak RSS %d MB, want under 300 MB", peak>>20)
	}
	// The last event closes the transaction.
	s, _ := js.Stream(ctx, change.Stream)
	last, err := s.GetLastMsgForSubject(ctx, ">")
	if err != nil {
		t.Fatal(err)
	}
	if id := last.Header.Get(jetstream.MsgIDHeader); id[len(id)-7:] != "/999999" {
		t.Fatalf("last message id %s, want tx_index 999999", id)
	}
}
