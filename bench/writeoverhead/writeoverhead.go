// Package writeoverhead is the write-overhead scenario: W writers insert
// single rows (one transaction each) for a fixed time, and the run reports
// transactions per second and commit latency under each kind of change
// capture, so the price of capturing changes is read against writing with
// none.
//
// Captures implement Capture:
//
//	off          no capture: no trigger, no slot
//	notify       an AFTER INSERT trigger calling pg_notify with the row as
//	             JSON, and a LISTEN connection consuming it (what a
//	             LISTEN/NOTIFY realtime server costs)
//	recvlogical  a pgoutput slot streamed by pg_recvlogical to /dev/null
//	fluxbase     Fluxbase nodes replicating the table; not available until
//	             the nodes hold a replication slot
package writeoverhead

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fluxbase/fluxbase/bench"
	"github.com/fluxbase/fluxbase/bench/harness"
	"github.com/fluxbase/fluxbase/bench/hist"
	"github.com/fluxbase/fluxbase/bench/plot"
)

// Table is the table the writers insert into.
const Table = "fluxbench_writes"

// Capture is one way of capturing the table's changes; the Fluxbase side
// plugs in here.
type Capture interface {
	Name() string
	// Start installs the capture on a fresh database holding Table and
	// returns once it is live; ErrNotAvailable means it cannot run yet.
	Start(ctx context.Context, dbURL string) error
	// Stop removes it and reports what it saw (for example notifications
	// received), for the report.
	Stop() (note string, err error)
}

// Config is one write-overhead run; zero values mean defaults.
type Config struct {
	Writers  int           // default 8
	Duration time.Duration // measured time per capture; default 10 s
	Warmup   time.Duration // unmeasured time first; default 1 s
	RowBytes int           // payload bytes per row; default 100
	Captures []string      // default off, notify, recvlogical, fluxbase
}

func (c *Config) defaults() {
	if c.Writers <= 0 {
		c.Writers = 8
	}
	if c.Duration <= 0 {
		c.Duration = 10 * time.Second
	}
	if c.Warmup < 0 {
		c.Warmup = 0
	} else if c.Warmup == 0 {
		c.Warmup = time.Second
	}
	if c.RowBytes <= 0 {
		c.RowBytes = 100
	}
	if len(c.Captures) == 0 {
		c.Captures = []string{"off", "notify", "recvlogical", "fluxbase"}
	}
}

// Result is one capture's measurement.
type Result struct {
	Capture      string       `json:"capture"`
	Transactions int64        `json:"transactions"`
	Errors       int64        `json:"errors"`
	Seconds      float64      `json:"seconds"`
	TPS          float64      `json:"tps"`
	Latency      hist.Summary `json:"latency_ns"`
	// Relative is TPS as a fraction of the "off" capture's, when measured.
	Relative float64 `json:"relative_to_off,omitempty"`
	Note     string  `json:"note,omitempty"`

	latency *hist.Histogram
}

// Run measures each configured capture in turn, each on a fresh database.
func Run(ctx context.Context, cfg Config, env *harness.Env, p *bench.Progress) (*bench.Report, error) {
	cfg.defaults()
	rep := &bench.Report{
		Scenario: "write-overhead",
		Title:    "Write overhead of change capture",
		About: "W writers each insert single rows, one transaction per row, for a fixed time; every capture runs on a fresh database. " +
			"Latency is each INSERT's round trip including its commit (synchronous_commit on, fsync on).",
		Started: time.Now(),
		Machine: bench.DescribeMachine(),
	}
	rep.AddParam("writers", cfg.Writers)
	rep.AddParam("duration per capture", cfg.Duration)
	rep.AddParam("warm-up", cfg.Warmup)
	rep.AddParam("payload bytes per row", cfg.RowBytes)

	var results []*Result
	for _, name := range cfg.Captures {
		c, err := NewCapture(name, env)
		var res *Result
		if err == nil {
			res, err = measure(ctx, cfg, env, p, c, rep)
		}
		if rep.AddOutcome(p, name, err) {
			results = append(results, res)
		}
		if ctx.Err() != nil {
			break
		}
	}
	for _, r := range results {
		if r.Capture == "off" && r.TPS > 0 {
			for _, o := range results {
				o.Relative = o.TPS / r.TPS
			}
		}
	}
	rep.Data = results
	addTables(rep, cfg, results)
	rep.Elapsed = time.Since(rep.Started).Seconds()
	return rep, ctx.Err()
}

// NewCapture returns the capture called name.
func NewCapture(name string, env *harness.Env) (Capture, error) {
	switch name {
	case "off":
		return off{}, nil
	case "notify":
		return &Notify{}, nil
	case "recvlogical":
		return &RecvLogical{}, nil
	case "fluxbase":
		return &Fluxbase{Env: env}, nil
	}
	return nil, fmt.Errorf("unknown capture %q (want off, notify, recvlogical or fluxbase)", name)
}

func measure(ctx context.Context, cfg Config, env *harness.Env, p *bench.Progress, c Capture, rep *bench.Report) (res *Result, err error) {
	dbURL, err := env.Database(ctx, "fluxbench_writes_"+c.Name())
	if err != nil {
		return nil, err
	}
	rep.Machine.PostgreSQL = harness.PostgresVersion(ctx, dbURL)
	setup, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	_, err = setup.Exec(ctx, `create table if not exists public.`+Table+` (
		id bigserial primary key, n bigint not null, payload text not null, at timestamptz not null default now())`)
	setup.Close(context.WithoutCancel(ctx))
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", Table, err)
	}
	if err := c.Start(ctx, dbURL); err != nil {
		_, _ = c.Stop()
		return nil, err
	}
	defer func() {
		note, serr := c.Stop()
		if res != nil {
			res.Note = note
		}
		if err == nil && serr != nil {
			err = serr
		}
	}()

	conns := make([]*pgx.Conn, cfg.Writers)
	defer func() {
		for _, cn := range conns {
			if cn != nil {
				cn.Close(context.WithoutCancel(ctx))
			}
		}
	}()
	for i := range conns {
		if conns[i], err = pgx.Connect(ctx, dbURL); err != nil {
			return nil, fmt.Errorf("connect writer: %w", err)
		}
	}
	res = &Result{Capture: c.Name(), latency: hist.New()}
	payload := strings.Repeat("x", cfg.RowBytes)
	total := cfg.Warmup + cfg.Duration
	bar := p.Phase(c.Name()+" writes", total.Seconds(), "s")
	start := time.Now()
	measureFrom := start.Add(cfg.Warmup)
	stopAt := measureFrom.Add(cfg.Duration)
	var mu sync.Mutex // guards res counters
	var wg sync.WaitGroup
	for i, cn := range conns {
		wg.Go(func() {
			var n, errs int64
			for seq := int64(i) << 40; ; seq++ {
				t := time.Now()
				if t.After(stopAt) || ctx.Err() != nil {
					break
				}
				_, err := cn.Exec(ctx, `insert into public.`+Table+` (n, payload) values ($1, $2)`, seq, payload)
				done := time.Now()
				if t.Before(measureFrom) {
					continue
				}
				if err != nil {
					errs++
					continue
				}
				n++
				res.latency.Record(int64(done.Sub(t)))
			}
			mu.Lock()
			res.Transactions += n
			res.Errors += errs
			mu.Unlock()
		})
	}
	tick := time.NewTicker(250 * time.Millisecond)
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
wait:
	for {
		select {
		case <-finished:
			break wait
		case <-tick.C:
			bar.Set(time.Since(start).Seconds())
		}
	}
	tick.Stop()
	res.Seconds = cfg.Duration.Seconds()
	res.TPS = float64(res.Transactions) / res.Seconds
	res.Latency = res.latency.Summary()
	bar.Done(fmt.Sprintf("%.0f tps, p99 %.2f ms", res.TPS, float64(res.Latency.P99)/1e6))
	return res, ctx.Err()
}

func addTables(rep *bench.Report, cfg Config, results []*Result) {
	if len(results) == 0 {
		return
	}
	t := bench.Table{Title: "Results", Columns: []string{"capture", "tps", "vs off", "p50 (ms)", "p90 (ms)", "p99 (ms)", "p99.9 (ms)", "max (ms)", "transactions", "errors", "note"}}
	ms := func(ns int64) string { return fmt.Sprintf("%.2f", float64(ns)/1e6) }
	for _, r := range results {
		rel := "—"
		if r.Relative > 0 {
			rel = fmt.Sprintf("%.0f%%", 100*r.Relative)
		}
		t.Rows = append(t.Rows, []string{r.Capture, fmt.Sprintf("%.0f", r.TPS), rel, ms(r.Latency.P50), ms(r.Latency.P90),
			ms(r.Latency.P99), ms(r.Latency.P999), ms(r.Latency.Max), fmt.Sprint(r.Transactions), fmt.Sprint(r.Errors), r.Note})
	}
	rep.Tables = append(rep.Tables, t)

	bars := plot.Bars{Title: "Insert throughput by change capture", YLabel: "transactions/s",
		Note: fmt.Sprintf("%d writers, one row per transaction", cfg.Writers)}
	lat := plot.Lines{Title: "Commit latency by percentile", XLabel: "percentile", YLabel: "latency (ms)",
		XTicks: []plot.Tick{{At: 0, Label: "0%"}, {At: 1, Label: "90%"}, {At: 2, Label: "99%"}, {At: 3, Label: "99.9%"}, {At: 4, Label: "99.99%"}}}
	for _, r := range results {
		bars.Bars = append(bars.Bars, plot.Bar{Label: r.Capture, Value: r.TPS})
		if r.latency == nil || r.latency.Count() == 0 {
			continue
		}
		s := plot.Series{Name: r.Capture}
		top := min(4, log10(float64(r.latency.Count())))
		for x := 0.0; x <= top+1e-9; x += 0.05 {
			s.X = append(s.X, x)
			s.Y = append(s.Y, float64(r.latency.Quantile(1-pow10(-x)))/1e6)
		}
		lat.Series = append(lat.Series, s)
	}
	rep.Plots = append(rep.Plots,
		bench.Plot{Name: "tps", Caption: "Insert transactions per second under each capture.", Chart: bars},
		bench.Plot{Name: "latency", Caption: "INSERT + commit latency by percentile.", Chart: lat},
	)
}
