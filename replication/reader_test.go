package replication

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/fluxbase/fluxbase/change"
	"github.com/fluxbase/fluxbase/internal/pgtest"
)

// testConfig is a configuration with short intervals for tests.
func testConfig(url string) Config {
	return Config{
		DatabaseURL:       url,
		SlotName:          slotFor(url),
		StatusInterval:    200 * time.Millisecond,
		ReceiveTimeout:    5 * time.Second,
		StandbyRetry:      200 * time.Millisecond,
		ReconcileInterval: 500 * time.Millisecond,
		LagInterval:       200 * time.Millisecond,
		HeartbeatInterval: -1,
		ShutdownTimeout:   time.Second,
	}
}

// running is a Replicator whose Run goroutine the test owns.
type running struct {
	*Replicator
	done chan error
}

func start(t *testing.T, cfg Config, log Log, opts ...Option) *running {
	t.Helper()
	opts = append([]Option{WithLogger(zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))}, opts...)
	r, err := New(cfg, log, opts...)
	if err != nil {
		t.Fatal(err)
	}
	rr := &running{Replicator: r, done: make(chan error, 1)}
	go func() { rr.done <- r.Run(context.Background()) }()
	t.Cleanup(func() { rr.stop(t) })
	return rr
}

// stop closes the replicator and checks that Run returned nil.
func (r *running) stop(t *testing.T) {
	t.Helper()
	if err := r.Close(); err != nil {
		t.Error(err)
	}
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
		r.done <- nil // later stops see it too
	case <-time.After(10 * time.Second):
		t.Error("Run did not return after Close")
	}
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// holding starts a replicator on a fresh database after the setup
// statements, with configure's changes to testConfig (nil for none), and
// returns once it holds the slot: a connection to the database, the log
// it publishes to, and the replicator (its configuration is r.cfg).
func holding(t *testing.T, configure func(*Config), setup ...string) (*pgx.Conn, *fakeLog, *running) {
	t.Helper()
	url := pgtest.NewDB(t)
	conn := connect(t, url)
	mustExec(t, conn, setup...)
	log := newFakeLog()
	cfg := testConfig(url)
	if configure != nil {
		configure(&cfg)
	}
	r := start(t, cfg, log)
	waitFor(t, 10*time.Second, "the slot", r.IsHolder)
	return conn, log, r
}

func mustExec(t *testing.T, conn *pgx.Conn, sqls ...string) {
	t.Helper()
	for _, s := range sqls {
		if _, err := conn.Exec(context.Background(), s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

func slotLSN(t *testing.T, conn *pgx.Conn, slot string) change.LSN {
	t.Helper()
	var s string
	if err := conn.QueryRow(context.Background(), "select confirmed_flush_lsn::text from pg_replication_slots where slot_name = $1", slot).Scan(&s); err != nil {
		t.Fatal(err)
	}
	l, err := change.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func currentLSN(t *testing.T, conn *pgx.Conn) change.LSN {
	t.Helper()
	var s string
	if err := conn.QueryRow(context.Background(), "select pg_current_wal_lsn()::text").Scan(&s); err != nil {
		t.Fatal(err)
	}
	l, _ := change.ParseLSN(s)
	return l
}

// TestReaderMatchesGolden streams every golden scenario through the real
// replication connection: the walsender must print values exactly as the
// golden files (made through the SQL decoding interface with the same
// settings) say, which proves the connection's settings take effect.
func TestReaderMatchesGolden(t *testing.T) {
	t.Parallel()
	for _, sc := range goldenScenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			want, err := os.ReadFile(filepath.Join("testdata", "golden", sc.name+".json"))
			if err != nil {
				t.Fatal(err)
			}
			var wantChanges []json.RawMessage
			if err := json.Unmarshal(want, &wantChanges); err != nil {
				t.Fatal(err)
			}
			conn, log, _ := holding(t, nil, sc.setup...)
			mustExec(t, conn, sc.run...)
			waitFor(t, 10*time.Second, "every change", func() bool { return log.len() >= len(wantChanges) })
			time.Sleep(100 * time.Millisecond) // nothing more may come
			changes := log.changes(t)
			if len(changes) != len(wantChanges) {
				t.Fatalf("%d changes, golden file has %d", len(changes), len(wantChanges))
			}
			checkTransactions(t, changes)
			compareGolden(t, sc.name, changes)
		})
	}
}

// TestExactlyOnceAcrossRestart holds the log's durable sequence back: the
// slot must not confirm past events that are stored but not durable, the
// server keeps reporting what was received apart from what was flushed,
// and after a restart the server's redelivery is skipped by position, not
// by the log's de-duplication.
func TestExactlyOnceAcrossRestart(t *testing.T) {
	t.Parallel()
	conn, log, r := holding(t, nil, "create table t (id int primary key, v text)")
	cfg := r.cfg
	mustExec(t, conn, "insert into t values (1, 'a')")
	waitFor(t, 10*time.Second, "the first change", func() bool { return log.len() == 1 })
	waitFor(t, 10*time.Second, "the slot to confirm the first commit", func() bool {
		return slotLSN(t, conn, cfg.SlotName) > log.changes(t)[0].CommitLSN
	})

	log.holdDurable(true)
	before := slotLSN(t, conn, cfg.SlotName)
	mustExec(t, conn, "begin", "insert into t values (2, 'b')", "insert into t values (3, 'c')", "update t set v = 'a2' where id = 1", "commit")
	waitFor(t, 10*time.Second, "three stored changes", func() bool { return log.len() == 4 })
	time.Sleep(3 * cfg.StatusInterval)
	if got := slotLSN(t, conn, cfg.SlotName); got > log.changes(t)[1].CommitLSN || got < before {
		t.Fatalf("slot confirmed %s; events of the commit at %s are not durable", got, log.changes(t)[1].CommitLSN)
	}
	// The walsender shows the reader's next status report; on a loaded
	// machine that can take longer than the sleep above.
	var w, f change.LSN
	deadline := time.Now().Add(10 * time.Second)
	for {
		var write, flush string
		if err := conn.QueryRow(context.Background(), "select write_lsn::text, flush_lsn::text from pg_stat_replication where application_name = 'fluxbase-replication'").Scan(&write, &flush); err != nil {
			t.Fatal(err)
		}
		w, _ = change.ParseLSN(write)
		f, _ = change.ParseLSN(flush)
		if w > f || time.Now().After(deadline) {
			break
		}
		time.Sleep(cfg.StatusInterval)
	}
	if w <= f {
		t.Errorf("write position %s should be past the flush position %s while events are not durable", w, f)
	}

	// A new holder: PostgreSQL sends the transaction again, and the reader
	// skips its three events by position.
	r.stop(t)
	log.mu.Lock()
	log.ids = map[string]uint64{} // no help from de-duplication
	log.mu.Unlock()
	log.holdDurable(false)
	r2 := start(t, cfg, log)
	waitFor(t, 10*time.Second, "the slot again", r2.IsHolder)
	mustExec(t, conn, "insert into t values (4, 'd')")
	waitFor(t, 10*time.Second, "the next change", func() bool { return log.len() >= 5 })
	time.Sleep(300 * time.Millisecond)
	changes := log.changes(t)
	if len(changes) != 5 {
		t.Fatalf("%d changes, want 5 (a duplicate?)", len(changes))
	}
	for i, want := range []string{"1", "2", "3", "1", "4"} {
		if v, _ := changes[i].Record.Get("id"); string(v) != want {
			t.Errorf("change %d has id %s, want %s", i, v, want)
		}
	}
	waitFor(t, 10*time.Second, "the slot to confirm everything", func() bool {
		return slotLSN(t, conn, cfg.SlotName) > changes[4].CommitLSN
	})
}

// TestPublishFailureRestartsSession fails one publish: the session ends,
// nothing after the failure is confirmed, and the next session publishes
// from the log's last event on — every change once, in order.
func TestPublishFailureRestartsSession(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDB(t)
	conn := connect(t, url)
	mustExec(t, conn, "create table t (id int primary key)")
	log := newFakeLog()
	var once sync.Once
	log.failPublish = func(m Message) error {
		var err error
		if m.ID[len(m.ID)-2:] == "/5" {
			once.Do(func() { err = os.ErrDeadlineExceeded })
		}
		return err
	}
	cfg := testConfig(url)
	r := start(t, cfg, log)
	waitFor(t, 10*time.Second, "the slot", r.IsHolder)
	mustExec(t, conn, "insert into t select generate_series(1, 20)", "insert into t select generate_series(21, 30)")
	waitFor(t, 20*time.Second, "30 changes", func() bool { return log.len() >= 30 })
	time.Sleep(300 * time.Millisecond)
	changes := log.changes(t)
	if len(changes) != 30 {
		t.Fatalf("%d changes, want 30", len(changes))
	}
	for i, c := range changes {
		if v, _ := c.Record.Get("id"); string(v) != strconv.Itoa(i+1) {
			t.Fatalf("change %d is row %s", i, v)
		}
	}
}

// TestStandbyTakesOver runs two replicators on one slot: one holds, the
// other stands by (and is ready); when the holder stops the other takes
// over and the stream continues without a gap or a duplicate.
func TestStandbyTakesOver(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDB(t)
	conn := connect(t, url)
	mustExec(t, conn, "create table t (id int primary key)")
	log := newFakeLog()
	cfg := testConfig(url)
	a := start(t, cfg, log)
	waitFor(t, 10*time.Second, "a holder", a.IsHolder)
	b := start(t, cfg, log)
	waitFor(t, 5*time.Second, "the standby to be ready", func() bool { return b.Ready() == nil })
	if b.IsHolder() {
		t.Fatal("two holders")
	}
	mustExec(t, conn, "insert into t values (1)")
	waitFor(t, 10*time.Second, "row 1", func() bool { return log.len() == 1 })

	a.stop(t)
	took := time.Now()
	waitFor(t, 10*time.Second, "the standby to take over", b.IsHolder)
	t.Logf("took over in %v", time.Since(took))
	mustExec(t, conn, "insert into t values (2)")
	waitFor(t, 10*time.Second, "row 2", func() bool { return log.len() >= 2 })
	time.Sleep(200 * time.Millisecond)
	if n := log.len(); n != 2 {
		t.Fatalf("%d changes, want 2", n)
	}
}

// TestIdleSlotAdvances writes only to a table that is not published: the
// slot must still confirm past it (through keepalives, and through the
// heartbeat), so an idle publication never holds WAL back.
func TestIdleSlotAdvances(t *testing.T) {
	t.Parallel()
	for _, heartbeat := range []time.Duration{-1, 200 * time.Millisecond} {
		t.Run("heartbeat="+heartbeat.String(), func(t *testing.T) {
			t.Parallel()
			conn, log, r := holding(t, func(cfg *Config) {
				cfg.Tables = []string{"public.*"}
				cfg.HeartbeatInterval = heartbeat
			}, "create schema other", "create table other.t (id int)")
			cfg := r.cfg
			mustExec(t, conn, "set synchronous_commit = on", "insert into other.t select generate_series(1, 1000)")
			target := currentLSN(t, conn)
			waitFor(t, 10*time.Second, "the slot to pass unpublished WAL", func() bool {
				return slotLSN(t, conn, cfg.SlotName) >= target
			})
			if log.len() != 0 {
				t.Fatalf("%d events from an unpublished table", log.len())
			}
		})
	}
}

// TestSilentServerIsLeft stops the walsender's process: the reader must
// notice the silence within ReceiveTimeout, give up the connection, and
// take the slot again once PostgreSQL lets go of it.
func TestSilentServerIsLeft(t *testing.T) {
	t.Parallel()
	conn, log, r := holding(t, func(cfg *Config) { cfg.ReceiveTimeout = time.Second }, "create table t (id int primary key)")
	cfg := r.cfg
	var pid int
	if err := conn.QueryRow(context.Background(), "select active_pid from pg_replication_slots where slot_name = $1", cfg.SlotName).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Skipf("cannot stop the walsender: %v", err)
	}
	stopped := time.Now()
	defer syscall.Kill(pid, syscall.SIGCONT)
	waitFor(t, 5*time.Second, "the reader to give up", func() bool { return !r.IsHolder() })
	t.Logf("gave up after %v", time.Since(stopped))
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the slot again", r.IsHolder)
	mustExec(t, conn, "insert into t values (1)")
	waitFor(t, 10*time.Second, "a change", func() bool { return log.len() == 1 })
}

// TestPublicationFollowsConfig checks the default publication (all of
// public, including tables created later, plus storage.objects), an
// explicit list (a listed table created later is added), and REPLICA
// IDENTITY FULL on tables as they appear.
func TestPublicationFollowsConfig(t *testing.T) {
	t.Parallel()
	t.Run("default", func(t *testing.T) {
		t.Parallel()
		conn, log, _ := holding(t, nil, "create schema storage", "create table storage.objects (id int primary key)", "create table storage.buckets (id int primary key)")
		mustExec(t, conn, "create table later (id int primary key)",
			"insert into later values (1)", "insert into storage.objects values (2)", "insert into storage.buckets values (3)")
		waitFor(t, 10*time.Second, "two changes", func() bool { return log.len() >= 2 })
		time.Sleep(300 * time.Millisecond)
		got := log.changes(t)
		if len(got) != 2 || got[0].Table != "later" || got[1].Schema != "storage" || got[1].Table != "objects" {
			t.Fatalf("changes: %+v", got)
		}
	})
	t.Run("identity at creation", func(t *testing.T) {
		t.Parallel()
		conn, log, _ := holding(t, func(cfg *Config) { cfg.ReplicaIdentityFull = true })
		// No pause between creating the table and updating it: the event
		// trigger, not a later reconciliation, gives it its identity.
		mustExec(t, conn, "create table fresh (id int primary key, what text)",
			"insert into fresh values (1, 'x')", "update fresh set what = 'y'")
		waitFor(t, 10*time.Second, "two changes", func() bool { return log.len() >= 2 })
		got := log.changes(t)
		if old, _ := got[1].OldRecord.Get("what"); got[1].Op != change.OpUpdate || string(old) != `"x"` {
			b, _ := json.Marshal(got[1].OldRecord)
			t.Errorf("old record of the first update of a new table: %s", b)
		}
	})
	t.Run("list", func(t *testing.T) {
		t.Parallel()
		conn, log, _ := holding(t, func(cfg *Config) {
			cfg.Tables = []string{"a", "audit.events"}
			cfg.ReplicaIdentityFull = true
		}, "create schema audit", "create table a (id int primary key)", "create table b (id int primary key)")
		mustExec(t, conn, "create table audit.events (id int primary key, what text)")
		waitFor(t, 10*time.Second, "audit.events in the publication with replica identity full", func() bool {
			var ident string
			err := conn.QueryRow(context.Background(), `select c.relreplident::text from pg_publication_tables pt
				join pg_class c on c.relname = pt.tablename and c.relnamespace = pt.schemaname::regnamespace
				where pt.pubname = 'fluxbase' and pt.schemaname = 'audit' and pt.tablename = 'events'`).Scan(&ident)
			return err == nil && ident == "f"
		})
		mustExec(t, conn, "insert into a values (1)", "insert into b values (2)",
			"insert into audit.events values (3, 'x')", "update audit.events set what = 'y'")
		waitFor(t, 10*time.Second, "three changes", func() bool { return log.len() >= 3 })
		time.Sleep(300 * time.Millisecond)
		got := log.changes(t)
		if len(got) != 3 || got[0].Table != "a" || got[1].Table != "events" || got[2].Op != change.OpUpdate {
			t.Fatalf("changes: %+v", got)
		}
		if old, _ := got[2].OldRecord.Get("what"); string(old) != `"x"` {
			b, _ := json.Marshal(got[2].OldRecord)
			t.Errorf("old record of an update under replica identity full: %s", b)
		}
	})
}

// TestMetricsAndStatus checks the exported metrics and the holder status.
func TestMetricsAndStatus(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDB(t)
	conn := connect(t, url)
	mustExec(t, conn, "create table t (id int primary key)")
	reg := prometheus.NewRegistry()
	log := newFakeLog()
	r := start(t, testConfig(url), log, WithRegisterer(reg))
	waitFor(t, 10*time.Second, "the slot", r.IsHolder)
	if err := r.Ready(); err != nil {
		t.Fatal(err)
	}
	mustExec(t, conn, "insert into t values (1), (2)", "update t set id = 3 where id = 1", "delete from t")
	waitFor(t, 10*time.Second, "events counted", func() bool {
		return metricValue(r.metrics.byOp[opSlot(change.OpDelete)]) == 2
	})
	if got := metricValue(r.metrics.byOp[opSlot(change.OpInsert)]); got != 2 {
		t.Errorf("inserts = %v", got)
	}
	if got := metricValue(r.metrics.holder); got != 1 {
		t.Errorf("holder = %v", got)
	}
	if ts := metricValue(r.metrics.lastCommit); time.Since(time.Unix(int64(ts), 0)) > time.Minute {
		t.Errorf("last commit timestamp %v", ts)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]int{}
	for _, f := range families {
		series[f.GetName()] = len(f.GetMetric())
	}
	for name, n := range map[string]int{"fluxbase_replication_lag_bytes": 1, "fluxbase_replication_events_total": 4,
		"fluxbase_replication_last_commit_timestamp": 1, "fluxbase_replication_holder": 1} {
		if series[name] != n {
			t.Errorf("%s has %d series, want %d", name, series[name], n)
		}
	}
	r.stop(t)
	if r.IsHolder() || metricValue(r.metrics.holder) != 0 {
		t.Error("still the holder after Close")
	}
}

// metricValue reads a gauge or counter.
func metricValue(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	if d.Gauge != nil {
		return d.Gauge.GetValue()
	}
	return d.Counter.GetValue()
}

// TestOversizedRowIsShrunk inserts a row whose event exceeds MaxEventBytes:
// its largest values are left out and named in omitted_columns, instead of
// a publish that fails after every restart.
func TestOversizedRowIsShrunk(t *testing.T) {
	t.Parallel()
	conn, log, _ := holding(t, func(cfg *Config) { cfg.MaxEventBytes = 300 << 10 }, "create table blobs (id int primary key, name text, a text, b text)")
	mustExec(t, conn, "insert into blobs values (1, 'small', repeat(md5('a'), 8192), repeat(md5('b'), 4096))",
		"insert into blobs values (2, 'fits', 'x', 'y')")
	waitFor(t, 10*time.Second, "two changes", func() bool { return log.len() == 2 })
	got := log.changes(t)
	if o := got[0].OmittedColumns; len(o) != 1 || o[0] != "a" {
		t.Fatalf("omitted %v, want [a]", o)
	}
	if _, ok := got[0].Record.Get("a"); ok {
		t.Error("the omitted column is still in the record")
	}
	if v, _ := got[0].Record.Get("b"); len(v) != 32*4096+2 {
		t.Errorf("column b has %d bytes", len(v))
	}
	if got[1].OmittedColumns != nil {
		t.Errorf("a small row lost columns: %v", got[1].OmittedColumns)
	}
}
