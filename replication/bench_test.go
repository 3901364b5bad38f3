package replication

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fluxbase/fluxbase/broker"
	"github.com/fluxbase/fluxbase/change"
	"github.com/fluxbase/fluxbase/internal/pgcluster"
)

// Benchmarks of the replication pipeline against baselines on the same
// machine. They need minutes and a quiet machine; run them one at a time:
//
//	go test ./replication -run '^$' -bench BenchmarkDrain -benchtime 1x -v
//	go test ./replication -run '^$' -bench BenchmarkWriteOverhead -benchtime 1x -v
//	go test ./replication -run '^$' -bench BenchmarkCommitToStored -benchtime 1x -v
//
// They run on their own PostgreSQL cluster with the server's durable
// defaults (fsync and synchronous_commit on), not the test cluster, whose
// asynchronous commits would flatter writes and delay what the walsender
// may send by up to wal_writer_delay. Results go to
// bench/results/replication-*.md with the machine they ran on.

var (
	benchOnce    sync.Once
	benchCluster *pgcluster.Cluster
	benchErr     error
	benchDBs     atomic.Int64
)

// benchDB creates a database on the benchmark cluster.
func benchDB(b *testing.B) string {
	b.Helper()
	benchOnce.Do(func() {
		dir, err := os.MkdirTemp("", "fluxbase-bench-")
		if err != nil {
			benchErr = err
			return
		}
		_ = os.Chmod(dir, 0o755)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		benchCluster, benchErr = pgcluster.Start(ctx, pgcluster.Options{Dir: filepath.Join(dir, "data"), Settings: map[string]string{
			"max_replication_slots": "32",
			"max_wal_senders":       "32",
			"max_wal_size":          "4GB",
			"checkpoint_timeout":    "30min",
		}})
		stopBench = func() {
			benchCluster.Stop()
			os.RemoveAll(dir)
		}
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	name := fmt.Sprintf("bench%d", benchDBs.Add(1))
	if err := benchCluster.CreateDatabase(context.Background(), name); err != nil {
		b.Fatal(err)
	}
	// Slots keep WAL: drop them (and the database) when the benchmark ends.
	b.Cleanup(func() {
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, benchCluster.URL("postgres"))
		if err != nil {
			return
		}
		defer conn.Close(ctx)
		_, _ = conn.Exec(ctx, `select pg_terminate_backend(active_pid) from pg_replication_slots where database = $1 and active_pid is not null`, name)
		time.Sleep(100 * time.Millisecond)
		_, _ = conn.Exec(ctx, `select pg_drop_replication_slot(slot_name) from pg_replication_slots where database = $1`, name)
		_, _ = conn.Exec(ctx, "drop database if exists "+name+" with (force)")
	})
	return benchCluster.URL(name)
}

// waitHolder waits until r holds its slot.
func waitHolder(b *testing.B, r *Replicator) {
	b.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !r.IsHolder() {
		if time.Now().After(deadline) {
			b.Fatalf("no slot after 30s: %v", r.Ready())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stopBench stops the benchmark cluster, if one was started; TestMain
// calls it.
var stopBench = func() {}

// benchBroker is an embedded broker with the production defaults but for
// the sync mode, in the benchmark's process, as a node runs it.
type benchBroker struct {
	b  *broker.Broker
	js jetstream.JetStream
}

func startBenchBroker(b *testing.B, sync string) *benchBroker {
	b.Helper()
	cfg := broker.Config{DataDir: b.TempDir(), NodeName: "bench"}
	if sync != "always" {
		d, err := time.ParseDuration(sync)
		if err != nil {
			b.Fatal(err)
		}
		cfg.SyncInterval = d
	}
	br, err := broker.Start(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(br.Close)
	return &benchBroker{b: br, js: br.JetStream()}
}

func (bb *benchBroker) msgs(b *testing.B) uint64 {
	s, err := bb.js.Stream(context.Background(), change.Stream)
	if err != nil {
		b.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	return info.State.Msgs
}

// startBenchReplicator runs a Replicator into bb until the benchmark ends.
func startBenchReplicator(b *testing.B, dbURL, slot string, bb *benchBroker, status time.Duration) *Replicator {
	b.Helper()
	log, err := brokerLog(bb.b)
	if err != nil {
		b.Fatal(err)
	}
	r, err := New(Config{DatabaseURL: dbURL, SlotName: slot, HeartbeatInterval: -1, StatusInterval: status}, log)
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Run(context.Background()) }()
	b.Cleanup(func() {
		r.Close()
		if err := <-done; err != nil {
			b.Error(err)
		}
	})
	return r
}

func benchExec(b *testing.B, dbURL string, sqls ...string) {
	b.Helper()
	conn, err := pgx.Connect(context.Background(), dbURL)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, s := range sqls {
		if _, err := conn.Exec(context.Background(), s); err != nil {
			b.Fatalf("%s: %v", s, err)
		}
	}
}

func benchQueryLSN(b *testing.B, dbURL, sql string, args ...any) change.LSN {
	b.Helper()
	conn, err := pgx.Connect(context.Background(), dbURL)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(context.Background())
	var s *string
	if err := conn.QueryRow(context.Background(), sql, args...).Scan(&s); err != nil {
		b.Fatal(err)
	}
	if s == nil {
		return 0
	}
	l, err := change.ParseLSN(*s)
	if err != nil {
		b.Fatal(err)
	}
	return l
}

// BenchmarkDrain drains one backlog (200,000 rows: 2,000 transactions of
// 100 rows of a five-column table) through separate slots created before
// it: pg_recvlogical with pgoutput into /dev/null, the lower bound of
// reading the slot at all, and the Replicator into the broker's change
// stream with the broker syncing every write, every 100 ms and every
// second. events/s is timed until every event is durable and the slot has
// confirmed the end of the backlog; stored-events/s until the stream holds
// every event (before the last sync). Each op is one drain of the whole
// backlog.
func BenchmarkDrain(b *testing.B) {
	const txs, rowsPerTx = 2000, 100
	const maxRuns = 4
	dbURL := benchDB(b)
	benchExec(b, dbURL,
		"create table todos (id bigint primary key, title text, done bool, owner uuid, created_at timestamptz)",
		"create publication fluxbase for tables in schema public")
	variants := []string{"pg_recvlogical", "fluxbase/sync=always", "fluxbase/sync=100ms", "fluxbase/sync=1s"}
	for _, v := range variants {
		for i := range maxRuns {
			benchExec(b, dbURL, fmt.Sprintf("select pg_create_logical_replication_slot('%s', 'pgoutput')", drainSlot(v, i)))
		}
	}
	for t := range txs {
		benchExec(b, dbURL, fmt.Sprintf(`insert into todos select g, 'todo number ' || g, g %% 3 = 0, gen_random_uuid(), now()
			from generate_series(%d, %d) g`, t*rowsPerTx+1, (t+1)*rowsPerTx))
	}
	end := benchQueryLSN(b, dbURL, "select pg_current_wal_lsn()::text")
	const events = txs * rowsPerTx

	binDir, err := pgcluster.FindBinDir()
	if err != nil {
		b.Fatal(err)
	}
	u, _ := url.Parse(dbURL)
	for _, v := range variants {
		b.Run(v, func(b *testing.B) {
			if b.N > maxRuns {
				b.Skipf("at most %d drains per backlog: use -benchtime 1x", maxRuns)
			}
			var storedIn time.Duration
			for i := 0; i < b.N; i++ {
				slot := drainSlot(v, i)
				if v == "pg_recvlogical" {
					cmd := exec.Command(filepath.Join(binDir, "pg_recvlogical"), "-d", dbURL, "-S", slot, "--start",
						"-o", "proto_version=1", "-o", "publication_names=fluxbase", "-E", end.String(), "-f", "/dev/null", "--no-loop")
					cmd.Env = append(os.Environ(), "PGHOST="+u.Hostname())
					if out, err := cmd.CombinedOutput(); err != nil {
						b.Fatalf("pg_recvlogical: %v\n%s", err, out)
					}
					continue
				}
				b.StopTimer()
				bb := startBenchBroker(b, strings.TrimPrefix(v, "fluxbase/sync="))
				b.StartTimer()
				began := time.Now()
				startBenchReplicator(b, dbURL, slot, bb, 0)
				for bb.msgs(b) < events {
					time.Sleep(5 * time.Millisecond)
				}
				storedIn += time.Since(began)
				for benchQueryLSN(b, dbURL, "select confirmed_flush_lsn::text from pg_replication_slots where slot_name = $1", slot) < end {
					time.Sleep(5 * time.Millisecond)
				}
			}
			b.ReportMetric(float64(events)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
			if storedIn > 0 {
				// Stored, not yet confirmed: the rate before the durability
				// delay (a sync interval) and the last status update.
				b.ReportMetric(float64(events)*float64(b.N)/storedIn.Seconds(), "stored-events/s")
			}
		})
	}
}

func drainSlot(variant string, i int) string {
	name := strings.NewReplacer("/", "_", "=", "_", "pg_recvlogical", "recv").Replace(variant)
	return fmt.Sprintf("drain_%s_%d", name, i)
}

// BenchmarkWriteOverhead measures the insert throughput of 8 writers
// (single-row transactions) on one table with: nothing capturing changes;
// a logical slot read by pg_recvlogical (the server's share of the cost);
// the Replicator streaming into JetStream on the same machine, with the
// broker syncing every write and every 100 ms (the default); and the design the log
// replaces, an AFTER INSERT trigger calling pg_notify with the row as JSON,
// with a listener. The variants take turns, 3 s each, for 3 rounds, and the
// median of each is reported, so that drift on a shared machine hits them
// alike; overhead-% compares with "off".
func BenchmarkWriteOverhead(b *testing.B) {
	const writers, rounds = 8, 3
	const period = 3 * time.Second
	variants := []string{"off", "slot+pg_recvlogical", "fluxbase/sync=always", "fluxbase/sync=100ms", "trigger+pg_notify"}
	for i := 0; i < b.N; i++ {
		results := map[string][]float64{}
		for range rounds {
			for _, v := range variants {
				results[v] = append(results[v], writeOverheadOnce(b, v, writers, period))
			}
		}
		median := func(v string) float64 {
			x := slices.Clone(results[v])
			slices.Sort(x)
			return x[len(x)/2]
		}
		off := median("off")
		for _, v := range variants {
			name := strings.NewReplacer("/", "-", "=", "-", "+", "-").Replace(v)
			b.ReportMetric(median(v), name+"-tx/s")
			if v != "off" {
				b.ReportMetric(100*(1-median(v)/off), name+"-overhead-%")
			}
			b.Logf("%-22s %v tx/s", v, results[v])
		}
	}
}

// writeOverheadOnce sets up one variant on a fresh database and returns the
// insert rate of n writers over d.
func writeOverheadOnce(b *testing.B, v string, n int, d time.Duration) float64 {
	dbURL := benchDB(b)
	benchExec(b, dbURL, "create table w (id bigserial primary key, payload text, at timestamptz default now())")
	stop := func() {}
	switch v {
	case "slot+pg_recvlogical":
		benchExec(b, dbURL, "create publication fluxbase for tables in schema public",
			"select pg_create_logical_replication_slot('"+slotFor(dbURL)+"', 'pgoutput')")
		binDir, _ := pgcluster.FindBinDir()
		cmd := exec.Command(filepath.Join(binDir, "pg_recvlogical"), "-d", dbURL, "-S", slotFor(dbURL), "--start",
			"-o", "proto_version=1", "-o", "publication_names=fluxbase", "-f", "/dev/null", "-s", "1")
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		stop = func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
	case "fluxbase/sync=always", "fluxbase/sync=100ms":
		bb := startBenchBroker(b, strings.TrimPrefix(v, "fluxbase/sync="))
		r := startBenchReplicator(b, dbURL, slotFor(dbURL), bb, 0)
		waitHolder(b, r)
		stop = func() {
			r.Close()
			bb.b.Close()
		}
	case "trigger+pg_notify":
		benchExec(b, dbURL, `create function notify_change() returns trigger language plpgsql as $$
			begin perform pg_notify('changes', json_build_object('table', TG_TABLE_NAME, 'op', TG_OP, 'record', row_to_json(new))::text); return new; end $$`,
			"create trigger w_notify after insert on w for each row execute function notify_change()")
		stop = listen(b, dbURL)
	}
	defer stop()
	return float64(insertFor(b, dbURL, n, d)) / d.Seconds()
}

// listen drains notifications on channel "changes" until stopped.
func listen(b *testing.B, dbURL string) func() {
	conn, err := pgx.Connect(context.Background(), dbURL)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := conn.Exec(context.Background(), "listen changes"); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			_, _ = conn.WaitForNotification(ctx)
		}
	}()
	return func() {
		cancel()
		<-done
		conn.Close(context.Background())
	}
}

// insertFor runs single-row insert transactions from n connections for d
// and returns how many committed.
func insertFor(b *testing.B, dbURL string, n int, d time.Duration) int64 {
	var count atomic.Int64
	var wg sync.WaitGroup
	deadline := time.Now().Add(d)
	for range n {
		conn, err := pgx.Connect(context.Background(), dbURL)
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close(context.Background())
			for time.Now().Before(deadline) {
				if _, err := conn.Exec(context.Background(), "insert into w (payload) values ('a short payload of some forty characters')"); err != nil {
					b.Error(err)
					return
				}
				count.Add(1)
			}
		}()
	}
	wg.Wait()
	return count.Load()
}

// BenchmarkCommitToStored measures the latency from a transaction's commit
// (its commit timestamp, taken by PostgreSQL) to a stream consumer
// receiving its event from the durable stream, at 5,000 changes/s (1,000
// transactions of 5 rows per second from 4 connections) for 10 s, with the
// broker syncing every write. Reported: p50, p99 and max in ms, and the
// rate reached.
func BenchmarkCommitToStored(b *testing.B) {
	for _, mode := range []string{"always", "100ms"} {
		b.Run("sync="+mode, func(b *testing.B) { benchCommitToStored(b, mode) })
	}
}

func benchCommitToStored(b *testing.B, syncMode string) {
	const rate, rowsPerTx, conns = 1000, 5, 4
	const period = 10 * time.Second
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		dbURL := benchDB(b)
		benchExec(b, dbURL, "create table l (id bigserial primary key, writer int, payload text)")
		bb := startBenchBroker(b, syncMode)
		waitHolder(b, startBenchReplicator(b, dbURL, slotFor(dbURL), bb, 0))
		var mu sync.Mutex
		var lat []time.Duration
		s, err := bb.js.Stream(context.Background(), change.Stream)
		if err != nil {
			b.Fatal(err)
		}
		cons, err := s.OrderedConsumer(context.Background(), jetstream.OrderedConsumerConfig{})
		if err != nil {
			b.Fatal(err)
		}
		cc, err := cons.Consume(func(m jetstream.Msg) {
			now := time.Now()
			var c struct {
				CommitTS time.Time `json:"commit_ts"`
			}
			if err := json.Unmarshal(m.Data(), &c); err == nil {
				mu.Lock()
				lat = append(lat, now.Sub(c.CommitTS))
				mu.Unlock()
			}
		})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		sent := paceInserts(b, dbURL, conns, rate, rowsPerTx, period)
		b.StopTimer()
		deadline := time.Now().Add(30 * time.Second)
		for {
			mu.Lock()
			n := len(lat)
			mu.Unlock()
			if int64(n) >= sent || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		cc.Stop()
		mu.Lock()
		slices.Sort(lat)
		if len(lat) == 0 {
			b.Fatal("no events")
		}
		q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))]) / 1e6 }
		b.ReportMetric(q(0.5), "p50-ms")
		b.ReportMetric(q(0.99), "p99-ms")
		b.ReportMetric(float64(lat[len(lat)-1])/1e6, "max-ms")
		b.ReportMetric(float64(len(lat))/period.Seconds(), "changes/s")
		mu.Unlock()
	}
}

// paceInserts commits rate transactions of rows rows per second, spread
// over conns connections, for d; it returns the rows committed.
func paceInserts(b *testing.B, dbURL string, conns, rate, rows int, d time.Duration) int64 {
	var count atomic.Int64
	var wg sync.WaitGroup
	interval := time.Duration(int64(time.Second) * int64(conns) / int64(rate))
	start := time.Now()
	for w := range conns {
		conn, err := pgx.Connect(context.Background(), dbURL)
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close(context.Background())
			sql := fmt.Sprintf("insert into l (writer, payload) select %d, 'payload ' || g from generate_series(1, %d) g", w, rows)
			// Offset the writers so commits spread evenly.
			next := start.Add(interval * time.Duration(w) / time.Duration(conns))
			for next.Before(start.Add(d)) {
				time.Sleep(time.Until(next))
				if _, err := conn.Exec(context.Background(), sql); err != nil {
					b.Error(err)
					return
				}
				count.Add(int64(rows))
				next = next.Add(interval)
			}
		}()
	}
	wg.Wait()
	return count.Load()
}
