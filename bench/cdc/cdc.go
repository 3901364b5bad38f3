// Package cdc is the cdc-drain scenario: a backlog of N row changes waits
// in PostgreSQL behind a logical replication slot, and each target drains
// it. It reports how long the drain took, changes and WAL bytes per second,
// and the drain's progress over time.
//
// Targets implement Drainer. pg_recvlogical with pgoutput writing to
// /dev/null is the baseline: the rate at which PostgreSQL itself decodes
// and sends the backlog. Fluxbase's side starts the nodes once (so they
// create their slot), stops them while the backlog is written, restarts
// them and waits until the slot's confirmed position — which Fluxbase
// advances only past events its change log holds durably — reaches the
// backlog's end. Until the nodes replicate, it reports not available.
package cdc

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/fluxbase/fluxbase/bench"
	"github.com/fluxbase/fluxbase/bench/harness"
	"github.com/fluxbase/fluxbase/bench/plot"
)

// Table and Publication hold the backlog.
const (
	Table       = "fluxbench_cdc"
	Publication = "fluxbench_drain"
)

// Drainer is one way of consuming the backlog; the Fluxbase side plugs in
// here.
type Drainer interface {
	Name() string
	// Slot names the replication slot whose progress is sampled.
	Slot() string
	// Prepare runs before the backlog is written, on a fresh database that
	// holds the table and the publication: it makes sure the backlog will
	// be kept for this drainer (creates its slot). ErrNotAvailable means
	// the target cannot drain yet.
	Prepare(ctx context.Context, dbURL string) error
	// Drain consumes the backlog and returns once everything up to end
	// has been consumed.
	Drain(ctx context.Context, dbURL string, end pglogrepl.LSN) error
	// Close stops whatever Prepare or Drain started.
	Close()
}

// Config is one cdc-drain run; zero values mean defaults.
type Config struct {
	Changes  int // rows inserted into the backlog; default 100000
	TxRows   int // rows per transaction; default 100
	RowBytes int // payload bytes per row; default 100
	Targets  []string
	// Timeout bounds each drain; default 5 minutes.
	Timeout time.Duration
}

func (c *Config) defaults() {
	if c.Changes <= 0 {
		c.Changes = 100000
	}
	if c.TxRows <= 0 {
		c.TxRows = 100
	}
	if c.RowBytes <= 0 {
		c.RowBytes = 100
	}
	if len(c.Targets) == 0 {
		c.Targets = []string{"pg_recvlogical", "fluxbase"}
	}
	if c.Timeout <= 0 {
		c.Timeout = 5 * time.Minute
	}
}

// Result is one drainer's measurement.
type Result struct {
	Target        string  `json:"target"`
	Changes       int     `json:"changes"`
	Transactions  int     `json:"transactions"`
	WALBytes      int64   `json:"wal_bytes"`
	WriteSeconds  float64 `json:"backlog_write_seconds"`
	DrainSeconds  float64 `json:"drain_seconds"`
	ChangesPerSec float64 `json:"changes_per_second"`
	MBPerSec      float64 `json:"wal_mb_per_second"`
	// Progress is (seconds since the drain started, fraction drained).
	Progress [][2]float64 `json:"progress"`
}

// Run drains the backlog with each configured target in turn.
func Run(ctx context.Context, cfg Config, env *harness.Env, p *bench.Progress) (*bench.Report, error) {
	cfg.defaults()
	rep := &bench.Report{
		Scenario: "cdc-drain",
		Title:    "CDC drain of a backlog",
		About: "A backlog of row changes waits behind a logical replication slot; each target drains it from the start. " +
			"The baseline is pg_recvlogical (pgoutput, proto_version=1, to /dev/null): how fast PostgreSQL decodes and sends the backlog. " +
			"Fluxbase's drain ends when its slot's confirmed position, advanced only past events its change log holds durably, reaches the backlog's end.",
		Started: time.Now(),
		Machine: bench.DescribeMachine(),
	}
	rep.AddParam("changes", cfg.Changes)
	rep.AddParam("rows per transaction", cfg.TxRows)
	rep.AddParam("payload bytes per row", cfg.RowBytes)

	var results []*Result
	for _, name := range cfg.Targets {
		var d Drainer
		switch name {
		case "pg_recvlogical":
			d = &RecvLogical{}
		case "fluxbase":
			d = &Fluxbase{Env: env}
		default:
			rep.Targets = append(rep.Targets, bench.OutcomeOf(name, fmt.Errorf("unknown target %q (want pg_recvlogical or fluxbase)", name)))
			continue
		}
		res, err := drain(ctx, cfg, env, p, d, rep)
		d.Close()
		if rep.AddOutcome(p, name, err) {
			results = append(results, res)
		}
		if ctx.Err() != nil {
			break
		}
	}
	rep.Data = results
	addTables(rep, results)
	rep.Elapsed = time.Since(rep.Started).Seconds()
	return rep, ctx.Err()
}

func drain(ctx context.Context, cfg Config, env *harness.Env, p *bench.Progress, d Drainer, rep *bench.Report) (*Result, error) {
	dbURL, err := env.Database(ctx, "fluxbench_cdc_"+sanitize(d.Name()))
	if err != nil {
		return nil, err
	}
	rep.Machine.PostgreSQL = harness.PostgresVersion(ctx, dbURL)
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, sql := range []string{
		`create table if not exists public.` + Table + ` (id bigserial primary key, n int not null, payload text not null)`,
		`drop publication if exists ` + Publication,
		`create publication ` + Publication + ` for table public.` + Table,
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			return nil, fmt.Errorf("prepare backlog table: %w", err)
		}
	}
	if err := d.Prepare(ctx, dbURL); err != nil {
		return nil, err
	}

	res := &Result{Target: d.Name(), Changes: cfg.Changes}
	start, err := currentLSN(ctx, conn)
	if err != nil {
		return nil, err
	}
	bar := p.Phase(d.Name()+" backlog", float64(cfg.Changes), "changes")
	t := time.Now()
	for from := 1; from <= cfg.Changes; from += cfg.TxRows {
		to := min(from+cfg.TxRows-1, cfg.Changes)
		if _, err := conn.Exec(ctx, `insert into public.`+Table+` (n, payload) select g, repeat('x', $3) from generate_series($1::int, $2::int) g`,
			from, to, cfg.RowBytes); err != nil {
			return nil, fmt.Errorf("write backlog: %w", err)
		}
		res.Transactions++
		bar.Set(float64(to))
	}
	res.WriteSeconds = time.Since(t).Seconds()
	end, err := currentLSN(ctx, conn)
	if err != nil {
		return nil, err
	}
	// One change past the end, so a consumer that stops at an LSN sees a
	// record beyond it instead of waiting for a keepalive.
	if _, err := conn.Exec(ctx, `insert into public.`+Table+` (n, payload) values (0, 'end')`); err != nil {
		return nil, fmt.Errorf("write backlog end: %w", err)
	}
	res.WALBytes = int64(end - start)
	bar.Done(fmt.Sprintf("%d changes in %d transactions, %.1f MB of WAL", cfg.Changes, res.Transactions, float64(res.WALBytes)/1e6))

	dctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	sampler := newSampler(dbURL, d.Slot(), start, end)
	sctx, stopSampling := context.WithCancel(dctx)
	samplerDone := make(chan struct{})
	dbar := p.Phase(d.Name()+" drain", 100, "%")
	go func() {
		defer close(samplerDone)
		sampler.run(sctx, func(frac float64) { dbar.Set(frac * 100) })
	}()
	t = time.Now()
	err = d.Drain(dctx, dbURL, end)
	res.DrainSeconds = time.Since(t).Seconds()
	stopSampling()
	<-samplerDone
	if err != nil {
		return nil, err
	}
	res.Progress = append(sampler.points, [2]float64{res.DrainSeconds, 1})
	if res.DrainSeconds > 0 {
		res.ChangesPerSec = float64(cfg.Changes) / res.DrainSeconds
		res.MBPerSec = float64(res.WALBytes) / 1e6 / res.DrainSeconds
	}
	dbar.Done(fmt.Sprintf("%.2f s, %.0f changes/s", res.DrainSeconds, res.ChangesPerSec))
	return res, nil
}

// currentLSN is where the next WAL record goes: the insert position, not
// the write position, which lags behind it by whatever sits in the WAL
// buffers when commits do not wait for a flush (synchronous_commit=off).
func currentLSN(ctx context.Context, conn *pgx.Conn) (pglogrepl.LSN, error) {
	var s string
	if err := conn.QueryRow(ctx, `select pg_current_wal_insert_lsn()::text`).Scan(&s); err != nil {
		return 0, fmt.Errorf("read WAL position: %w", err)
	}
	lsn, err := pglogrepl.ParseLSN(s)
	if err != nil {
		return 0, fmt.Errorf("parse WAL position %q: %w", s, err)
	}
	return lsn, nil
}

func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	return string(b)
}

// sampler follows a slot's progress: the walsender's sent position while
// one streams it, else the slot's confirmed position.
type sampler struct {
	dbURL      string
	slot       string
	start, end pglogrepl.LSN
	t0         time.Time
	points     [][2]float64
}

func newSampler(dbURL, slot string, start, end pglogrepl.LSN) *sampler {
	return &sampler{dbURL: dbURL, slot: slot, start: start, end: end, t0: time.Now()}
}

func (s *sampler) run(ctx context.Context, progress func(float64)) {
	conn, err := pgx.Connect(ctx, s.dbURL)
	if err != nil {
		return
	}
	defer conn.Close(context.WithoutCancel(ctx))
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		var pos *string
		err := conn.QueryRow(ctx, `select coalesce(
				(select r.sent_lsn from pg_stat_replication r where r.pid = s.active_pid),
				s.confirmed_flush_lsn)::text
			from pg_replication_slots s where s.slot_name = $1`, s.slot).Scan(&pos)
		if err == nil && pos != nil {
			if lsn, err := pglogrepl.ParseLSN(*pos); err == nil && s.end > s.start {
				frac := min(max(float64(lsn-s.start)/float64(s.end-s.start), 0), 1)
				s.points = append(s.points, [2]float64{time.Since(s.t0).Seconds(), frac})
				progress(frac)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func addTables(rep *bench.Report, results []*Result) {
	if len(results) == 0 {
		return
	}
	cols := []string{"metric"}
	for _, r := range results {
		cols = append(cols, r.Target)
	}
	var rows [][]string
	add := func(name string, f func(*Result) string) {
		row := []string{name}
		for _, r := range results {
			row = append(row, f(r))
		}
		rows = append(rows, row)
	}
	add("changes", func(r *Result) string { return fmt.Sprint(r.Changes) })
	add("transactions", func(r *Result) string { return fmt.Sprint(r.Transactions) })
	add("WAL (MB)", func(r *Result) string { return fmt.Sprintf("%.1f", float64(r.WALBytes)/1e6) })
	add("backlog write (s)", func(r *Result) string { return fmt.Sprintf("%.2f", r.WriteSeconds) })
	add("drain (s)", func(r *Result) string { return fmt.Sprintf("%.2f", r.DrainSeconds) })
	add("changes/s", func(r *Result) string { return fmt.Sprintf("%.0f", r.ChangesPerSec) })
	add("WAL MB/s", func(r *Result) string { return fmt.Sprintf("%.1f", r.MBPerSec) })
	// The first target is the limit the others are judged against.
	add("changes/s vs "+results[0].Target, func(r *Result) string {
		return bench.Ratio(r.ChangesPerSec, results[0].ChangesPerSec)
	})
	rep.Tables = append(rep.Tables, bench.Table{Title: "Results", Columns: cols, Rows: rows})

	bars := plot.Bars{Title: "Backlog drain rate", YLabel: "changes/s",
		Note: fmt.Sprintf("%d changes", results[0].Changes)}
	lines := plot.Lines{Title: "Drain progress", XLabel: "seconds since the drain started", YLabel: "% of the backlog"}
	for _, r := range results {
		bars.Bars = append(bars.Bars, plot.Bar{Label: r.Target, Value: r.ChangesPerSec})
		s := plot.Series{Name: r.Target}
		for _, pt := range r.Progress {
			s.X = append(s.X, pt[0])
			s.Y = append(s.Y, pt[1]*100)
		}
		lines.Series = append(lines.Series, s)
	}
	rep.Plots = append(rep.Plots,
		bench.Plot{Name: "rate", Caption: "Changes drained per second.", Chart: bars},
		bench.Plot{Name: "progress", Caption: "Share of the backlog's WAL sent (pg_recvlogical) or confirmed (Fluxbase) over time.", Chart: lines},
	)
}
