package fanout

import (
	"fmt"
	"math"
	"sort"

	"github.com/fluxbase/fluxbase/bench"
	"github.com/fluxbase/fluxbase/bench/plot"
)

func ms(ns int64) string { return fmt.Sprintf("%.2f", float64(ns)/1e6) }

// addTables puts the results side by side, one column per measured target,
// and adds the latency and throughput plots.
func addTables(rep *bench.Report, cfg Config, results []*TargetResult) {
	if len(results) == 0 {
		return
	}
	cols := []string{"metric"}
	for _, r := range results {
		cols = append(cols, r.Target)
	}
	var rows [][]string
	add := func(name string, f func(r *TargetResult) string) {
		row := []string{name}
		for _, r := range results {
			row = append(row, f(r))
		}
		rows = append(rows, row)
	}
	add("subscribers connected", func(r *TargetResult) string {
		return fmt.Sprintf("%d of %d", r.Connected, r.Subscribers)
	})
	add("connect time (s)", func(r *TargetResult) string { return fmt.Sprintf("%.1f", r.ConnectSeconds) })
	add("messages published", func(r *TargetResult) string {
		return fmt.Sprintf("%d in %.1f s", r.Publish.Sent, r.Publish.Seconds)
	})
	add("publisher max lag (ms)", func(r *TargetResult) string { return fmt.Sprintf("%.1f", r.Publish.MaxLagMs) })
	add("deliveries (of expected)", func(r *TargetResult) string {
		return fmt.Sprintf("%d of %d", r.Accounting.Delivered, r.Accounting.Expected)
	})
	add("deliveries/s", func(r *TargetResult) string {
		return fmt.Sprintf("%.0f (target %.0f)", r.DeliveriesPerSec, cfg.Rate*float64(r.Connected))
	})
	add("lost", func(r *TargetResult) string {
		return fmt.Sprintf("%d (%.3f%%)", r.Accounting.Lost, 100*r.Accounting.LossRate())
	})
	add("subscribers with loss", func(r *TargetResult) string { return fmt.Sprint(r.Accounting.SubscribersWithLoss) })
	add("duplicates", func(r *TargetResult) string { return fmt.Sprint(r.Accounting.Duplicates) })
	add("disconnects during run", func(r *TargetResult) string {
		n := 0
		for _, v := range r.Disconnects {
			n += v
		}
		return fmt.Sprint(n)
	})
	add("latency p50 (ms)", func(r *TargetResult) string { return ms(r.Latency.P50) })
	add("latency p90 (ms)", func(r *TargetResult) string { return ms(r.Latency.P90) })
	add("latency p99 (ms)", func(r *TargetResult) string { return ms(r.Latency.P99) })
	add("latency p99.9 (ms)", func(r *TargetResult) string { return ms(r.Latency.P999) })
	add("latency max (ms)", func(r *TargetResult) string { return ms(r.Latency.Max) })
	// The first target (the bare broadcaster by default) is the limit.
	base := results[0]
	add("deliveries/s vs "+base.Target, func(r *TargetResult) string {
		return bench.Ratio(r.DeliveriesPerSec, base.DeliveriesPerSec)
	})
	add("latency p99 vs "+base.Target, func(r *TargetResult) string {
		return bench.Ratio(float64(r.Latency.P99), float64(base.Latency.P99))
	})
	add("one message, first → last subscriber p50 / p99 / max (ms)", func(r *TargetResult) string {
		s := r.Accounting.Spread
		return ms(s.P50) + " / " + ms(s.P99) + " / " + ms(s.Max)
	})
	add("one message, send → last subscriber p50 / p99 / max (ms)", func(r *TargetResult) string {
		s := r.Accounting.ToAll
		return ms(s.P50) + " / " + ms(s.P99) + " / " + ms(s.Max)
	})
	add("server CPU (cores)", func(r *TargetResult) string {
		if r.Server == nil {
			return "n/a"
		}
		return fmt.Sprintf("%.2f", r.Server.Cores)
	})
	add("server memory per connection (KiB)", func(r *TargetResult) string {
		if r.Server == nil {
			return "n/a"
		}
		return fmt.Sprintf("%.1f", r.Server.RSSPerConn/1024)
	})
	add("generator CPU (cores)", func(r *TargetResult) string {
		if r.Generator == nil {
			return "n/a"
		}
		return fmt.Sprintf("%.2f", r.Generator.Cores)
	})
	add("generator memory per connection (KiB)", func(r *TargetResult) string {
		if r.Generator == nil {
			return "n/a"
		}
		return fmt.Sprintf("%.1f", r.Generator.RSSPerConn/1024)
	})
	rep.Tables = append(rep.Tables, bench.Table{Title: "Results", Columns: cols, Rows: rows})

	for _, r := range results {
		if len(r.FailReasons)+len(r.Disconnects) == 0 {
			continue
		}
		t := bench.Table{Title: "Connection problems: " + r.Target, Columns: []string{"what", "reason", "count"}}
		for _, kv := range sorted(r.FailReasons) {
			t.Rows = append(t.Rows, []string{"connect failed", kv.k, fmt.Sprint(kv.v)})
		}
		for _, kv := range sorted(r.Disconnects) {
			t.Rows = append(t.Rows, []string{"disconnected", kv.k, fmt.Sprint(kv.v)})
		}
		rep.Tables = append(rep.Tables, t)
	}

	lat := plot.Lines{
		Title:  fmt.Sprintf("Latency by percentile, %d subscribers at %.0f msg/s", cfg.Subscribers, cfg.Rate),
		XLabel: "percentile", YLabel: "latency (ms)",
		XTicks: []plot.Tick{{At: 0, Label: "0%"}, {At: 1, Label: "90%"}, {At: 2, Label: "99%"}, {At: 3, Label: "99.9%"}, {At: 4, Label: "99.99%"}},
	}
	thr := plot.Lines{
		Title:  "Deliveries per second",
		XLabel: "seconds since publishing started", YLabel: "deliveries/s",
	}
	for _, r := range results {
		if r.latency == nil || r.latency.Count() == 0 {
			continue
		}
		s := plot.Series{Name: r.Target}
		top := math.Min(4, math.Log10(float64(r.latency.Count())))
		for x := 0.0; x <= top+1e-9; x += 0.05 {
			q := 1 - math.Pow(10, -x)
			s.X = append(s.X, x)
			s.Y = append(s.Y, float64(r.latency.Quantile(q))/1e6)
		}
		lat.Series = append(lat.Series, s)
		ts := plot.Series{Name: r.Target}
		for i, v := range r.PerSecond {
			ts.X = append(ts.X, float64(i)+0.5)
			ts.Y = append(ts.Y, float64(v))
		}
		thr.Series = append(thr.Series, ts)
	}
	rep.Plots = append(rep.Plots,
		bench.Plot{Name: "latency", Caption: "Publish → subscriber latency by percentile (x: 90%, 99%, 99.9%... on a log scale).", Chart: lat},
		bench.Plot{Name: "throughput", Caption: "Deliveries per second over the run, all subscribers together.", Chart: thr},
	)
}

type kv struct {
	k string
	v int
}

func sorted(m map[string]int) []kv {
	out := make([]kv, 0, len(m))
	for k, v := range m {
		out = append(out, kv{k, v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].v > out[j].v })
	return out
}
