// Package rest is the rest scenario: C clients read single rows by primary
// key for a fixed time, through Fluxbase's REST API
// (GET /rest/v1/<table>?id=eq.<n>) and, as the baseline, straight from
// PostgreSQL with the same query over C pgx connections. It reports
// requests per second and latency percentiles for each.
//
// The Fluxbase side is probed first and reported as not available while
// /rest/v1/ does not serve the table.
package rest

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fluxbase/fluxbase/bench"
	"github.com/fluxbase/fluxbase/bench/harness"
	"github.com/fluxbase/fluxbase/bench/hist"
	"github.com/fluxbase/fluxbase/bench/plot"
)

// Table holds the rows read.
const Table = "fluxbench_rest"

// Config is one rest run; zero values mean defaults.
type Config struct {
	Clients  int           // default 16
	Duration time.Duration // per target; default 10 s
	Rows     int           // rows in the table; default 10000
	Nodes    int           // Fluxbase nodes; default 1
	Targets  []string      // default postgres, fluxbase
}

func (c *Config) defaults() {
	if c.Clients <= 0 {
		c.Clients = 16
	}
	if c.Duration <= 0 {
		c.Duration = 10 * time.Second
	}
	if c.Rows <= 0 {
		c.Rows = 10000
	}
	if c.Nodes <= 0 {
		c.Nodes = 1
	}
	if len(c.Targets) == 0 {
		c.Targets = []string{"postgres", "fluxbase"}
	}
}

// Result is one target's measurement.
type Result struct {
	Target   string       `json:"target"`
	Requests int64        `json:"requests"`
	Errors   int64        `json:"errors"`
	RPS      float64      `json:"requests_per_second"`
	Latency  hist.Summary `json:"latency_ns"`
	latency  *hist.Histogram
}

// Run measures each target.
func Run(ctx context.Context, cfg Config, env *harness.Env, p *bench.Progress) (*bench.Report, error) {
	cfg.defaults()
	rep := &bench.Report{
		Scenario: "rest",
		Title:    "REST reads",
		About: "C clients read single rows by primary key for a fixed time: through Fluxbase's REST API, " +
			"and as the baseline straight from PostgreSQL with the same query.",
		Started: time.Now(),
		Machine: bench.DescribeMachine(),
	}
	rep.AddParam("clients", cfg.Clients)
	rep.AddParam("duration per target", cfg.Duration)
	rep.AddParam("rows", cfg.Rows)

	dbURL, err := env.Database(ctx, "fluxbench_rest")
	if err != nil {
		return nil, err
	}
	rep.Machine.PostgreSQL = harness.PostgresVersion(ctx, dbURL)
	if err := env.Migrate(ctx, dbURL); err != nil {
		return nil, err
	}
	pc, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return nil, fmt.Errorf("database URL: %w", err)
	}
	pc.MaxConns = int32(cfg.Clients)
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	defer pool.Close()
	for _, sql := range []string{
		`create table if not exists public.` + Table + ` (id bigint primary key, name text not null, score int not null)`,
		`insert into public.` + Table + ` select g, 'row ' || g, g % 100 from generate_series(1, ` + fmt.Sprint(cfg.Rows) + `) g on conflict do nothing`,
		`grant select on public.` + Table + ` to anon, authenticated`,
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			return nil, fmt.Errorf("prepare %s: %w", Table, err)
		}
	}

	// Without the REST API there is nothing to compare the baseline with:
	// probe first, and skip the whole scenario while it is missing.
	cluster, err := env.Fluxbase(ctx, dbURL, cfg.Nodes)
	if err != nil {
		return nil, err
	}
	defer cluster.Stop()
	rep.Machine.Fluxbase = cluster.Version
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: cfg.Clients}}
	if err := probe(ctx, client, cluster); err != nil {
		for _, name := range cfg.Targets {
			rep.Targets = append(rep.Targets, bench.OutcomeOf(name, err))
		}
		p.Logf("rest: skipped: %v", err)
		rep.Elapsed = time.Since(rep.Started).Seconds()
		return rep, nil
	}

	var results []*Result
	for _, name := range cfg.Targets {
		var res *Result
		var err error
		switch name {
		case "postgres":
			res, err = load(ctx, cfg, p, name, func(ctx context.Context, id int) error {
				rows, err := pool.Query(ctx, `select id, name, score from public.`+Table+` where id = $1`, id)
				if err != nil {
					return err
				}
				for rows.Next() {
				}
				rows.Close()
				return rows.Err()
			})
		case "fluxbase":
			res, err = fluxbase(ctx, cfg, p, client, cluster)
		default:
			err = fmt.Errorf("unknown target %q (want postgres or fluxbase)", name)
		}
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

func get(ctx context.Context, client *http.Client, cluster *harness.Cluster, node, id int) (int, error) {
	u := fmt.Sprintf("%s/rest/v1/%s?select=*&id=eq.%d", cluster.Nodes[node%len(cluster.Nodes)].URL, Table, id)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("apikey", cluster.AnonKey)
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// probe reads one row through the API; a 404 means the API is not there.
func probe(ctx context.Context, client *http.Client, cluster *harness.Cluster) error {
	status, err := get(ctx, client, cluster, 0, 1)
	if err != nil {
		return fmt.Errorf("probe /rest/v1/: %w", err)
	}
	if status == http.StatusNotFound {
		return bench.NotAvailable("REST API not available: GET /rest/v1/%s answered 404", Table)
	}
	if status != http.StatusOK {
		return fmt.Errorf("probe /rest/v1/%s: HTTP %d", Table, status)
	}
	return nil
}

func fluxbase(ctx context.Context, cfg Config, p *bench.Progress, client *http.Client, cluster *harness.Cluster) (*Result, error) {
	var n atomic.Int64
	return load(ctx, cfg, p, "fluxbase", func(ctx context.Context, id int) error {
		status, err := get(ctx, client, cluster, int(n.Add(1)), id)
		if err == nil && status != http.StatusOK {
			err = fmt.Errorf("HTTP %d", status)
		}
		return err
	})
}

// load runs cfg.Clients loops of do for cfg.Duration.
func load(ctx context.Context, cfg Config, p *bench.Progress, name string, do func(ctx context.Context, id int) error) (*Result, error) {
	res := &Result{Target: name, latency: hist.New()}
	bar := p.Phase(name+" reads", cfg.Duration.Seconds(), "s")
	start := time.Now()
	stop := start.Add(cfg.Duration)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for c := range cfg.Clients {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(c), 7))
			var n, errs int64
			for time.Now().Before(stop) && ctx.Err() == nil {
				t := time.Now()
				if err := do(ctx, 1+r.IntN(cfg.Rows)); err != nil {
					errs++
					continue
				}
				res.latency.Record(int64(time.Since(t)))
				n++
			}
			mu.Lock()
			res.Requests += n
			res.Errors += errs
			mu.Unlock()
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		select {
		case <-done:
			break wait
		case <-tick.C:
			bar.Set(time.Since(start).Seconds())
		}
	}
	res.RPS = float64(res.Requests) / cfg.Duration.Seconds()
	res.Latency = res.latency.Summary()
	bar.Done(fmt.Sprintf("%.0f req/s", res.RPS))
	return res, ctx.Err()
}

func addTables(rep *bench.Report, results []*Result) {
	if len(results) == 0 {
		return
	}
	ms := func(ns int64) string { return fmt.Sprintf("%.2f", float64(ns)/1e6) }
	t := bench.Table{Title: "Results", Columns: []string{"target", "req/s", "p50 (ms)", "p90 (ms)", "p99 (ms)", "p99.9 (ms)", "max (ms)", "requests", "errors"}}
	bars := plot.Bars{Title: "Single-row reads per second", YLabel: "requests/s"}
	lat := plot.Lines{Title: "Read latency by percentile", XLabel: "percentile", YLabel: "latency (ms)",
		XTicks: []plot.Tick{{At: 0, Label: "0%"}, {At: 1, Label: "90%"}, {At: 2, Label: "99%"}, {At: 3, Label: "99.9%"}, {At: 4, Label: "99.99%"}}}
	for _, r := range results {
		t.Rows = append(t.Rows, []string{r.Target, fmt.Sprintf("%.0f", r.RPS), ms(r.Latency.P50), ms(r.Latency.P90), ms(r.Latency.P99),
			ms(r.Latency.P999), ms(r.Latency.Max), fmt.Sprint(r.Requests), fmt.Sprint(r.Errors)})
		bars.Bars = append(bars.Bars, plot.Bar{Label: r.Target, Value: r.RPS})
		if r.latency.Count() > 0 {
			s := plot.Series{Name: r.Target}
			top := math.Min(4, math.Log10(float64(r.latency.Count())))
			for x := 0.0; x <= top+1e-9; x += 0.05 {
				s.X = append(s.X, x)
				s.Y = append(s.Y, float64(r.latency.Quantile(1-math.Pow(10, -x)))/1e6)
			}
			lat.Series = append(lat.Series, s)
		}
	}
	rep.Tables = append(rep.Tables, t)
	rep.Plots = append(rep.Plots,
		bench.Plot{Name: "rps", Caption: "Single-row reads per second.", Chart: bars},
		bench.Plot{Name: "latency", Caption: "Read latency by percentile.", Chart: lat})
}
