package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/fluxbase/fluxbase/bench"
	"github.com/fluxbase/fluxbase/bench/cdc"
	"github.com/fluxbase/fluxbase/bench/fanout"
	"github.com/fluxbase/fluxbase/bench/harness"
	"github.com/fluxbase/fluxbase/bench/rest"
	"github.com/fluxbase/fluxbase/bench/writeoverhead"
)

func fanoutFlags(fs *flag.FlagSet) scenarioRun {
	var cfg fanout.Config
	var targets, deliveries string
	fs.IntVar(&cfg.Subscribers, "subscribers", 2000, "websocket subscribers")
	fs.Float64Var(&cfg.Rate, "rate", 100, "messages per second of a single step (without -deliveries)")
	fs.StringVar(&deliveries, "deliveries", "", "steps as deliveries/s targets, comma-separated (e.g. 50000,100000,150000 or 50k,100k); each publishes target ÷ subscribers messages/s on the same connections")
	fs.DurationVar(&cfg.Duration, "duration", 20*time.Second, "how long messages are published at each step")
	fs.DurationVar(&cfg.Idle, "idle", 3*time.Second, "how long the connected subscribers sit idle before the memory reading")
	fs.DurationVar(&cfg.Pause, "pause", time.Second, "quiet time between steps")
	fs.BoolVar(&cfg.Saturate, "saturate", false, "after the steps, ramp the rate until a step fails and report the highest rate kept up with")
	fs.Float64Var(&cfg.SaturateIncrement, "saturate-step", 25000, "deliveries/s added at each step of the saturation ramp")
	fs.DurationVar(&cfg.SaturateDuration, "saturate-duration", 5*time.Second, "publishing time of each ramp step")
	fs.DurationVar(&cfg.SaturateP99, "saturate-p99", fanout.DefaultSaturateP99, "a step whose p99 latency exceeds this fails")
	fs.IntVar(&cfg.SaturateSteps, "saturate-steps", 40, "the most ramp steps per target")
	fs.Float64Var(&cfg.SaturateMax, "saturate-max", 0, "the ramp's highest deliveries/s (0: no bound)")
	fs.IntVar(&cfg.RLSUsers, "rls-users", 0, "Fluxbase only: a row-level membership policy on the table, each subscriber joining with the token of one of this many distinct users (changes mode)")
	fs.IntVar(&cfg.Outsiders, "rls-outsiders", 5, "with -rls-users: subscribers whose users are not members, who must receive nothing")
	fs.IntVar(&cfg.PayloadBytes, "payload", 128, "approximate payload bytes per message")
	fs.StringVar(&cfg.Mode, "mode", fanout.ModeChanges, "how Fluxbase is fed: changes (INSERTs → postgres_changes) or broadcast")
	fs.StringVar(&targets, "targets", "baseline,fluxbase", "targets to measure, comma-separated: baseline, fluxbase")
	fs.IntVar(&cfg.Nodes, "nodes", 1, "Fluxbase nodes to start (subscribers are spread over them)")
	fs.IntVar(&cfg.BaselineWriters, "baseline-writers", 4, "writer goroutines of the baseline server")
	fs.IntVar(&cfg.InsertWriters, "insert-writers", 4, "connections inserting rows in changes mode")
	fs.DurationVar(&cfg.Drain, "drain", 5*time.Second, "how long to wait for late deliveries after each step")
	fs.IntVar(&cfg.PerProcess, "per-process", 15000, "subscribers per generator process and connections per baseline server")
	fs.IntVar(&cfg.PerSource, "per-source", 20000, "connections per client source address (127.0.0.x) above which addresses are spread")
	fs.IntVar(&cfg.DialConcurrency, "dial-concurrency", 32, "concurrent dials per generator process")
	return func(ctx context.Context, env *harness.Env, p *bench.Progress) ([]*bench.Report, error) {
		cfg.Targets = splitList(targets)
		rateSet := false
		fs.Visit(func(f *flag.Flag) { rateSet = rateSet || f.Name == "rate" })
		if deliveries != "" {
			if rateSet {
				return nil, errors.New("-rate and -deliveries both set a rate: use one")
			}
			var err error
			if cfg.Deliveries, err = parseRates(deliveries); err != nil {
				return nil, fmt.Errorf("-deliveries: %w", err)
			}
		}
		r, err := fanout.Run(ctx, cfg, env, p)
		return reports(r), err
	}
}

// parseRates reads comma-separated positive numbers, each optionally with
// a k (thousand) or M (million) suffix.
func parseRates(s string) ([]float64, error) {
	var out []float64
	for _, part := range splitList(s) {
		mult := 1.0
		switch {
		case strings.HasSuffix(part, "k"):
			mult, part = 1e3, strings.TrimSuffix(part, "k")
		case strings.HasSuffix(part, "M"):
			mult, part = 1e6, strings.TrimSuffix(part, "M")
		}
		v, err := strconv.ParseFloat(part, 64)
		if err != nil || v <= 0 || math.IsInf(v, 0) || math.IsNaN(v) {
			return nil, fmt.Errorf("%q is not a positive number", part)
		}
		out = append(out, v*mult)
	}
	if len(out) == 0 {
		return nil, errors.New("no rate given")
	}
	return out, nil
}

func cdcFlags(fs *flag.FlagSet) scenarioRun {
	var cfg cdc.Config
	var targets string
	fs.IntVar(&cfg.Changes, "changes", 100000, "row changes in the backlog")
	fs.IntVar(&cfg.TxRows, "tx-rows", 100, "rows per backlog transaction")
	fs.IntVar(&cfg.RowBytes, "row-bytes", 100, "payload bytes per row")
	fs.StringVar(&targets, "targets", "pg_recvlogical,fluxbase", "drainers, comma-separated: pg_recvlogical, fluxbase")
	fs.DurationVar(&cfg.Timeout, "drain-timeout", 5*time.Minute, "bound on each drain")
	return func(ctx context.Context, env *harness.Env, p *bench.Progress) ([]*bench.Report, error) {
		cfg.Targets = splitList(targets)
		r, err := cdc.Run(ctx, cfg, env, p)
		return reports(r), err
	}
}

func writeFlags(fs *flag.FlagSet) scenarioRun {
	var cfg writeoverhead.Config
	var captures string
	fs.IntVar(&cfg.Writers, "writers", 8, "concurrent writers, one connection each")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "measured time per capture")
	fs.DurationVar(&cfg.Warmup, "warmup", time.Second, "unmeasured time before each measurement")
	fs.IntVar(&cfg.RowBytes, "row-bytes", 100, "payload bytes per row")
	fs.StringVar(&captures, "captures", "off,notify,recvlogical,fluxbase", "captures, comma-separated: off, notify, recvlogical, fluxbase")
	return func(ctx context.Context, env *harness.Env, p *bench.Progress) ([]*bench.Report, error) {
		cfg.Captures = splitList(captures)
		r, err := writeoverhead.Run(ctx, cfg, env, p)
		return reports(r), err
	}
}

func restFlags(fs *flag.FlagSet) scenarioRun {
	var cfg rest.Config
	var targets string
	fs.IntVar(&cfg.Clients, "clients", 16, "concurrent clients")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "measured time per target")
	fs.IntVar(&cfg.Rows, "rows", 10000, "rows in the table")
	fs.IntVar(&cfg.Nodes, "nodes", 1, "Fluxbase nodes to start")
	fs.StringVar(&targets, "targets", "postgres,fluxbase", "targets, comma-separated: postgres, fluxbase")
	return func(ctx context.Context, env *harness.Env, p *bench.Progress) ([]*bench.Report, error) {
		cfg.Targets = splitList(targets)
		r, err := rest.Run(ctx, cfg, env, p)
		return reports(r), err
	}
}

// suiteFlags runs every scenario in turn on one PostgreSQL cluster. -short
// is the quick suite (a few minutes) that make bench runs.
func suiteFlags(fs *flag.FlagSet) scenarioRun {
	short := fs.Bool("short", false, "the quick suite: small sizes, a few minutes in all")
	return func(ctx context.Context, env *harness.Env, p *bench.Progress) ([]*bench.Report, error) {
		// Rates keep deliveries (subscribers × rate) near 100k/s, which a
		// small machine sustains, so latency is not that of a backlog.
		fc := fanout.Config{Subscribers: 10000, Rate: 10, Duration: 30 * time.Second}
		cc := cdc.Config{Changes: 200000}
		wc := writeoverhead.Config{Writers: 8, Duration: 20 * time.Second}
		rc := rest.Config{Duration: 20 * time.Second}
		if *short {
			fc = fanout.Config{Subscribers: 2000, Rate: 25, Duration: 10 * time.Second}
			cc = cdc.Config{Changes: 50000}
			wc = writeoverhead.Config{Writers: 4, Duration: 5 * time.Second}
			rc = rest.Config{Duration: 5 * time.Second}
		}
		var out []*bench.Report
		var errs []error
		steps := []func() (*bench.Report, error){
			func() (*bench.Report, error) { return fanout.Run(ctx, fc, env, p) },
			func() (*bench.Report, error) { return cdc.Run(ctx, cc, env, p) },
			func() (*bench.Report, error) { return writeoverhead.Run(ctx, wc, env, p) },
			func() (*bench.Report, error) { return rest.Run(ctx, rc, env, p) },
		}
		for _, step := range steps {
			r, err := step()
			out = append(out, reports(r)...)
			if err != nil {
				errs = append(errs, err)
			}
			if ctx.Err() != nil {
				break
			}
		}
		return out, errors.Join(errs...)
	}
}

func reports(r *bench.Report) []*bench.Report {
	if r == nil {
		return nil
	}
	return []*bench.Report{r}
}
