package replication

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fluxbase/fluxbase/change"
	"github.com/fluxbase/fluxbase/internal/pgcluster"
	"github.com/fluxbase/fluxbase/internal/pgtest"
)

// TestCrashExactlyOnce is the delivery guarantee under failure. Writers
// commit numbered rows (one to three per transaction, and some
// transactions rolled back) while three nodes compete for the slot; the
// slot holder is SIGKILLed four times (a standby takes over, and a fresh
// node replaces the dead one), and then every node and the NATS server are
// SIGKILLed at once and restarted, the server recovering the stream from
// disk. A consumer of the stream must then see every committed row exactly
// once, in commit order, and no row of a rolled-back transaction.
//
// The nodes run as with FLUXBASE_NATS_URL: the broker package connected to
// one NATS server that outlives them (syncing every write), provisioning
// the change stream, and a Replicator; external clients of an embedded
// broker may only read, so processes cannot share one another's.
//
// What it covers: a holder dying between publish and acknowledgement,
// between acknowledgement and slot confirmation, and in the middle of a
// transaction (PostgreSQL redelivers from the confirmed LSN; the new holder
// skips what the stream holds by position, with a one-second de-duplication
// window so that cannot be what saves it); the NATS server dying with
// publishes in flight (acknowledged durably or not at all); standby
// takeover time. What it does not cover: embedded brokers clustered by
// routes (a replica lost, or all of them at once), PostgreSQL itself
// crashing or failing over (PostgreSQL 15 does not replicate slots to
// standbys), and a network partition (TestSilentServerIsLeft covers the
// receive deadline).
func TestCrashExactlyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: skipped with -short")
	}
	t.Parallel()
	ctx := context.Background()
	dbURL := pgtest.NewDB(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, "create table crash (writer int, n int, primary key (writer, n))")
	slot := slotFor(dbURL)

	natsPort, err := pgcluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", natsPort)
	natsDir := t.TempDir()
	startBrokerChild := func() *child {
		return startChild(t, "nats", "nats", "NATS_DIR="+natsDir, "NATS_PORT="+strconv.Itoa(natsPort), "NATS_SYNC=always")
	}
	generation := 0
	startNode := func(i int) *child {
		generation++
		name := fmt.Sprintf("node%d-%d", i, generation)
		u, _ := url.Parse(dbURL)
		q := u.Query()
		q.Set("application_name", name)
		u.RawQuery = q.Encode()
		// A one-second duplicate window: exactly-once must not depend on it.
		return startChild(t, name, "node", "PG_URL="+u.String(), "NATS_URL="+natsURL, "SLOT="+slot, "NATS_DUPLICATES=1s")
	}
	broker := startBrokerChild()
	nc := connectNATS(t, natsURL)
	nodes := map[string]*child{}
	for i := range 3 {
		c := startNode(i)
		nodes[c.name] = c
	}
	holder := func() string {
		var name string
		err := conn.QueryRow(ctx, "select application_name from pg_stat_replication where application_name like 'node%'").Scan(&name)
		if err != nil {
			return ""
		}
		return name
	}
	waitFor(t, 30*time.Second, "a holder", func() bool { return nodes[holder()] != nil })

	// Writers commit (writer, n) rows with n counting up; rolled-back
	// transactions use negative n.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	committed := make([][]int, 4)
	for w := range committed {
		wg.Add(1)
		go func() {
			defer wg.Done()
			committed[w] = writeRows(t, dbURL, w, stop)
		}()
	}

	// Kill the holder four times; a standby must take over each time.
	for round := range 4 {
		time.Sleep(1500 * time.Millisecond)
		name := holder()
		victim := nodes[name]
		if victim == nil {
			t.Fatalf("round %d: no holder among the nodes (%q)", round, name)
		}
		victim.kill()
		killed := time.Now()
		delete(nodes, name)
		// A standby, not a fresh process, must take over: the replacement
		// starts afterwards.
		waitFor(t, 10*time.Second, "a standby to take over", func() bool { h := holder(); return h != "" && h != name })
		t.Logf("round %d: killed %s; %s took over in %v", round, name, holder(), time.Since(killed).Round(time.Millisecond))
		c := startNode(round % 3)
		nodes[c.name] = c
	}

	// Then everything at once, broker included.
	time.Sleep(time.Second)
	broker.kill()
	for name, c := range nodes {
		c.kill()
		delete(nodes, name)
	}
	t.Log("killed the NATS server and every node")
	time.Sleep(500 * time.Millisecond)
	startBrokerChild()
	waitFor(t, 30*time.Second, "the NATS server to recover", nc.IsConnected)
	for i := range 3 {
		c := startNode(i)
		nodes[c.name] = c
	}
	waitFor(t, 30*time.Second, "a holder after the restart", func() bool { return nodes[holder()] != nil })
	time.Sleep(1500 * time.Millisecond)
	close(stop)
	wg.Wait()

	// Ground truth: what the table holds is what was committed.
	var want int
	if err := conn.QueryRow(ctx, "select count(*) from crash").Scan(&want); err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, rows := range committed {
		total += len(rows)
	}
	if total != want {
		t.Fatalf("writers committed %d rows, the table holds %d", total, want)
	}
	changes := readStream(t, nc, want, 60*time.Second)
	checkCrashStream(t, changes, committed)
	t.Logf("%d rows in %d events, each once and in commit order", want, len(changes))
}

func connectNATS(t *testing.T, natsURL string) *nats.Conn {
	t.Helper()
	var nc *nats.Conn
	waitFor(t, 30*time.Second, "the NATS server", func() bool {
		var err error
		nc, err = connectTestBroker(natsURL)
		return err == nil
	})
	t.Cleanup(nc.Close)
	return nc
}

// writeRows commits rows for writer w until stop closes and returns the n
// of every committed row, in commit order.
func writeRows(t *testing.T, dbURL string, w int, stop <-chan struct{}) []int {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Error(err)
		return nil
	}
	defer conn.Close(ctx)
	rnd := rand.New(rand.NewPCG(uint64(w), 7))
	var done []int
	n, aborted := 0, 0
	for {
		select {
		case <-stop:
			return done
		case <-time.After(2 * time.Millisecond):
		}
		k := 1 + rnd.IntN(3)
		rollback := rnd.IntN(10) == 0
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Error(err)
			return done
		}
		var rows []int
		for range k {
			v := n + 1 + len(rows)
			if rollback {
				aborted++
				v = -aborted
			}
			if _, err := tx.Exec(ctx, "insert into crash values ($1, $2)", w, v); err != nil {
				t.Error(err)
				return done
			}
			rows = append(rows, v)
		}
		if rollback {
			err = tx.Rollback(ctx)
		} else {
			err = tx.Commit(ctx)
		}
		if err != nil {
			t.Error(err)
			return done
		}
		if !rollback {
			n += k
			done = append(done, rows...)
		}
	}
}

// readStream reads the whole change stream once it holds want events.
func readStream(t *testing.T, nc *nats.Conn, want int, timeout time.Duration) []change.Event {
	t.Helper()
	ctx := context.Background()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var s jetstream.Stream
	waitFor(t, timeout, fmt.Sprintf("%d events in the stream", want), func() bool {
		if s, err = js.Stream(ctx, change.Stream); err != nil {
			return false
		}
		info, err := s.Info(ctx)
		return err == nil && info.State.Msgs >= uint64(want)
	})
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []change.Event
	for uint64(len(out)) < info.State.Msgs {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range batch.Messages() {
			var c change.Event
			if err := json.Unmarshal(m.Data(), &c); err != nil {
				t.Fatalf("message: %v", err)
			}
			if id := m.Headers().Get(jetstream.MsgIDHeader); id != c.Position().MsgID() {
				t.Fatalf("message id %s for a change at %s", id, c.Position().MsgID())
			}
			out = append(out, c)
			got++
		}
		if err := batch.Error(); err != nil {
			t.Fatal(err)
		}
		if got == 0 {
			t.Fatalf("the stream stopped after %d of %d messages", len(out), info.State.Msgs)
		}
	}
	return out
}

// checkCrashStream checks the stream against what the writers committed.
func checkCrashStream(t *testing.T, changes []change.Event, committed [][]int) {
	t.Helper()
	checkTransactions(t, changes)
	seen := map[[2]int]bool{}
	next := make([]int, len(committed)) // index into committed[w] expected next
	for i, c := range changes {
		if i > 0 && !changes[i-1].Position().Less(c.Position()) {
			t.Fatalf("event %d at %s does not follow %s", i, c.Position().MsgID(), changes[i-1].Position().MsgID())
		}
		var w, n int
		wv, _ := c.Record.Get("writer")
		nv, _ := c.Record.Get("n")
		if err := json.Unmarshal(wv, &w); err != nil || c.Op != change.OpInsert {
			t.Fatalf("event %d: %s %v", i, c.Op, err)
		}
		if err := json.Unmarshal(nv, &n); err != nil {
			t.Fatal(err)
		}
		key := [2]int{w, n}
		if seen[key] {
			t.Fatalf("row %v appears twice (event %d)", key, i)
		}
		seen[key] = true
		if n < 0 {
			t.Fatalf("row %v of a rolled-back transaction appears (event %d)", key, i)
		}
		// A writer commits its rows in order, so its rows appear in the
		// order it committed them.
		if next[w] >= len(committed[w]) || committed[w][next[w]] != n {
			t.Fatalf("writer %d: event %d has row %d, expected the writer's next committed row", w, i, n)
		}
		next[w]++
	}
	for w, rows := range committed {
		if next[w] != len(rows) {
			t.Fatalf("writer %d committed %d rows, the stream has %d", w, len(rows), next[w])
		}
	}
}
