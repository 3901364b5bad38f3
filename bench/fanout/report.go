package fanout

import (
	"fmt"
	"math"
	"sort"

	"github.com/fluxbase/fluxbase/bench"
	"github.com/fluxbase/fluxbase/bench/plot"
)

func ms(ns int64) string { return fmt.Sprintf("%.2f", float64(ns)/1e6) }

// grid builds a table with one column per target and, for every target
// after the first, a column of its ratio to the first.
type grid struct {
	results []*TargetResult
	t       bench.Table
}

func newGrid(title string, results []*TargetResult) *grid {
	g := &grid{results: results, t: bench.Table{Title: title, Columns: []string{"metric"}}}
	for _, r := range results {
		g.t.Columns = append(g.t.Columns, r.Target)
	}
	for _, r := range results[min(1, len(results)):] {
		g.t.Columns = append(g.t.Columns, r.Target+" ÷ "+results[0].Target)
	}
	return g
}

// add puts a row: f formats each target's cell; ratio, when not nil, gives
// the figure whose ratio to the first target's is shown.
func (g *grid) add(name string, f func(i int) string, ratio func(i int) (float64, bool)) {
	row := []string{name}
	for i := range g.results {
		row = append(row, f(i))
	}
	for i := 1; i < len(g.results); i++ {
		cell := ""
		if ratio != nil {
			a, okA := ratio(i)
			b, okB := ratio(0)
			if okA && okB {
				cell = bench.Ratio(a, b)
			}
		}
		row = append(row, cell)
	}
	g.t.Rows = append(g.t.Rows, row)
}

// addTables puts the results side by side: connections and idle memory,
// one table per listed step, the saturation search, the goals, and the
// latency and throughput plots.
func addTables(rep *bench.Report, cfg Config, data *Data) {
	results := data.Targets
	if len(results) == 0 {
		return
	}
	rep.Tables = append(rep.Tables, connectionsTable(results))
	listed := make([][]*StepResult, len(results))
	n := 0
	for i, r := range results {
		for _, s := range r.Steps {
			if !s.Ramp {
				listed[i] = append(listed[i], s)
			}
		}
		n = max(n, len(listed[i]))
	}
	for k := range n {
		steps := make([]*StepResult, len(results))
		var title string
		for i := range results {
			if k < len(listed[i]) {
				steps[i] = listed[i][k]
				title = fmt.Sprintf("Step %d: %.0f deliveries/s (%.4g messages/s × %d subscribers)", k+1, steps[i].Target, steps[i].Rate, cfg.Subscribers)
			}
		}
		rep.Tables = append(rep.Tables, stepTable(title, results, steps))
	}
	if cfg.Saturate {
		rep.Tables = append(rep.Tables, rampTable(results), saturationTable(results))
	}
	if len(data.Goals) > 0 {
		t := bench.Table{Title: "Acceptance goals (judged from this run's figures)", Columns: []string{"goal", "status", "measured"}}
		for _, c := range data.Goals {
			t.Rows = append(t.Rows, []string{c.Goal, c.Status, c.Measured})
		}
		rep.Tables = append(rep.Tables, t)
	}
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
	rep.Plots = append(rep.Plots, plots(cfg, results)...)
}

func connectionsTable(results []*TargetResult) bench.Table {
	g := newGrid("Connections", results)
	g.add("subscribers connected", func(i int) string {
		return fmt.Sprintf("%d of %d", results[i].Connected, results[i].Subscribers)
	}, nil)
	g.add("connect time (s)", func(i int) string { return fmt.Sprintf("%.1f", results[i].ConnectSeconds) }, nil)
	idle := func(m *IdleMemory) (float64, bool) {
		if m == nil {
			return 0, false
		}
		return m.PerConnBytes, true
	}
	g.add("server memory per idle connection (KiB)", func(i int) string {
		m := results[i].ServerIdle
		if m == nil {
			return "n/a"
		}
		return fmt.Sprintf("%.1f (RSS %.0f → %.0f MiB after %.0f s idle)", m.PerConnBytes/1024,
			float64(m.RSSBeforeBytes)/(1<<20), float64(m.RSSIdleBytes)/(1<<20), m.IdleSeconds)
	}, func(i int) (float64, bool) { return idle(results[i].ServerIdle) })
	g.add("generator memory per connection (KiB)", func(i int) string {
		if m := results[i].GeneratorIdle; m != nil {
			return fmt.Sprintf("%.1f", m.PerConnBytes/1024)
		}
		return "n/a"
	}, nil)
	g.add("disconnects during the run", func(i int) string {
		n := 0
		for _, v := range results[i].Disconnects {
			n += v
		}
		return fmt.Sprint(n)
	}, nil)
	for _, r := range results {
		if r.RLS == nil {
			continue
		}
		g.add("row-level security", func(i int) string {
			x := results[i].RLS
			if x == nil {
				return "none (no notion of users)"
			}
			return fmt.Sprintf("%d users; %d of %d outsiders joined", x.Users, x.OutsidersConnected, x.Outsiders)
		}, nil)
		break
	}
	return g.t
}

// stepTable is one listed step for every target; steps[i] is nil where a
// target did not reach it.
func stepTable(title string, results []*TargetResult, steps []*StepResult) bench.Table {
	g := newGrid(title, results)
	cell := func(f func(s *StepResult) string) func(i int) string {
		return func(i int) string {
			if steps[i] == nil {
				return "not run"
			}
			return f(steps[i])
		}
	}
	num := func(f func(s *StepResult) (float64, bool)) func(i int) (float64, bool) {
		return func(i int) (float64, bool) {
			if steps[i] == nil {
				return 0, false
			}
			return f(steps[i])
		}
	}
	lat := func(name string, v func(s *StepResult) int64) {
		g.add(name, cell(func(s *StepResult) string { return ms(v(s)) }),
			num(func(s *StepResult) (float64, bool) { return float64(v(s)), s.Latency.Count > 0 }))
	}
	g.add("messages published", cell(func(s *StepResult) string {
		return fmt.Sprintf("%d in %.1f s", s.Publish.Sent, s.Publish.Seconds)
	}), nil)
	g.add("publisher max lag (ms)", cell(func(s *StepResult) string { return fmt.Sprintf("%.1f", s.Publish.MaxLagMs) }), nil)
	g.add("deliveries/s (of asked)", cell(func(s *StepResult) string {
		return fmt.Sprintf("%.0f of %.0f (%.1f%%)", s.DeliveriesPerSec, s.Asked, 100*s.DeliveriesPerSec/math.Max(s.Asked, 1))
	}), num(func(s *StepResult) (float64, bool) { return s.DeliveriesPerSec, true }))
	g.add("lost", cell(func(s *StepResult) string {
		return fmt.Sprintf("%d of %d (%.3f%%)", s.Accounting.Lost, s.Accounting.Expected, 100*s.Accounting.LossRate())
	}), nil)
	g.add("subscribers with loss", cell(func(s *StepResult) string { return fmt.Sprint(s.Accounting.SubscribersWithLoss) }), nil)
	g.add("duplicates", cell(func(s *StepResult) string { return fmt.Sprint(s.Accounting.Duplicates) }), nil)
	g.add("disconnects", cell(func(s *StepResult) string { return fmt.Sprint(s.Disconnects) }), nil)
	g.add("late frames of earlier steps", cell(func(s *StepResult) string { return fmt.Sprint(s.LateFrames) }), nil)
	lat("latency p50 (ms)", func(s *StepResult) int64 { return s.Latency.P50 })
	lat("latency p99 (ms)", func(s *StepResult) int64 { return s.Latency.P99 })
	lat("latency p99.9 (ms)", func(s *StepResult) int64 { return s.Latency.P999 })
	lat("latency max (ms)", func(s *StepResult) int64 { return s.Latency.Max })
	g.add("one message, send → last subscriber p50 / p99 (ms)", cell(func(s *StepResult) string {
		return ms(s.Accounting.ToAll.P50) + " / " + ms(s.Accounting.ToAll.P99)
	}), nil)
	usage := func(name string, u func(s *StepResult) *StepUsage, v func(u *StepUsage) float64, format string) {
		g.add(name, cell(func(s *StepResult) string {
			if x := u(s); x != nil {
				return fmt.Sprintf(format, v(x))
			}
			return "n/a"
		}), num(func(s *StepResult) (float64, bool) {
			if x := u(s); x != nil {
				return v(x), true
			}
			return 0, false
		}))
	}
	server := func(s *StepResult) *StepUsage { return s.Server }
	usage("server CPU (cores)", server, func(u *StepUsage) float64 { return u.Cores }, "%.2f")
	usage("server CPU per delivery (µs)", server, func(u *StepUsage) float64 { return u.MicrosPerDelivery }, "%.2f")
	usage("PostgreSQL CPU (cores)", func(s *StepResult) *StepUsage { return s.Database }, func(u *StepUsage) float64 { return u.Cores }, "%.2f")
	usage("generator CPU (cores)", func(s *StepResult) *StepUsage { return s.Generator }, func(u *StepUsage) float64 { return u.Cores }, "%.2f")
	for _, s := range steps {
		if s != nil && s.Outsiders != nil {
			g.add("rows received by outsiders", cell(func(s *StepResult) string {
				if s.Outsiders == nil {
					return "n/a"
				}
				return fmt.Sprintf("%d (%d joined)", s.Outsiders.Rows, s.Outsiders.Connected)
			}), nil)
			break
		}
	}
	g.add("kept up", cell(verdictText), nil)
	return g.t
}

func verdictText(s *StepResult) string {
	if s.Verdict.Pass {
		return "yes"
	}
	return "no: " + s.Verdict.Reason
}

// rampTable lists every step of every target, lowest rate first.
func rampTable(results []*TargetResult) bench.Table {
	t := bench.Table{Title: "Saturation search: every step", Columns: []string{"target", "deliveries/s asked", "achieved", "lost", "p99 (ms)", "server µs/delivery", "kept up"}}
	for _, r := range results {
		steps := append([]*StepResult(nil), r.Steps...)
		sort.SliceStable(steps, func(i, j int) bool { return steps[i].Target < steps[j].Target })
		for _, s := range steps {
			cpu := "n/a"
			if s.Server != nil {
				cpu = fmt.Sprintf("%.2f", s.Server.MicrosPerDelivery)
			}
			t.Rows = append(t.Rows, []string{r.Target, fmt.Sprintf("%.0f", s.Asked), fmt.Sprintf("%.0f", s.DeliveriesPerSec),
				fmt.Sprint(s.Accounting.Lost), ms(s.Latency.P99), cpu, verdictText(s)})
		}
	}
	return t
}

func saturationTable(results []*TargetResult) bench.Table {
	g := newGrid("Saturation point (highest rate kept up with)", results)
	sat := func(i int) *Saturation { return results[i].Saturation }
	g.add("deliveries/s target", func(i int) string {
		if s := sat(i); s != nil {
			return satText(*s)
		}
		return "n/a"
	}, func(i int) (float64, bool) {
		s := sat(i)
		if s == nil || !s.Found {
			return 0, s != nil
		}
		return s.Deliveries, true
	})
	g.add("achieved there (deliveries/s)", func(i int) string {
		if s := sat(i); s != nil && s.Found {
			return fmt.Sprintf("%.0f", s.Achieved)
		}
		return "n/a"
	}, nil)
	g.add("first failing step", func(i int) string {
		s := sat(i)
		switch {
		case s == nil:
			return "n/a"
		case s.FailedAt == 0:
			return "none: the ramp ended first"
		}
		return fmt.Sprintf("%.0f/s: %s", s.FailedAt, s.Reason)
	}, nil)
	return g.t
}

// plots are latency by percentile for every listed step and target, and
// deliveries per second over each target's whole run.
func plots(cfg Config, results []*TargetResult) []bench.Plot {
	lat := plot.Lines{
		Title:  fmt.Sprintf("Latency by percentile, %d subscribers", cfg.Subscribers),
		XLabel: "percentile", YLabel: "latency (ms)",
		XTicks: []plot.Tick{{At: 0, Label: "0%"}, {At: 1, Label: "90%"}, {At: 2, Label: "99%"}, {At: 3, Label: "99.9%"}, {At: 4, Label: "99.99%"}},
	}
	thr := plot.Lines{
		Title:  "Deliveries per second, step after step",
		XLabel: "seconds since the first step started", YLabel: "deliveries/s",
	}
	for _, r := range results {
		ts := plot.Series{Name: r.Target}
		for _, st := range r.Steps {
			for i, v := range st.PerSecond {
				ts.X = append(ts.X, st.Offset+float64(i)+0.5)
				ts.Y = append(ts.Y, float64(v))
			}
			if st.Ramp || st.latency == nil || st.latency.Count() == 0 {
				continue
			}
			s := plot.Series{Name: fmt.Sprintf("%s %s/s", r.Target, fmtRate(st.Target))}
			top := math.Min(4, math.Log10(float64(st.latency.Count())))
			for x := 0.0; x <= top+1e-9; x += 0.05 {
				q := 1 - math.Pow(10, -x)
				s.X = append(s.X, x)
				s.Y = append(s.Y, float64(st.latency.Quantile(q))/1e6)
			}
			lat.Series = append(lat.Series, s)
		}
		if len(ts.X) > 0 {
			thr.Series = append(thr.Series, ts)
		}
	}
	return []bench.Plot{
		{Name: "latency", Caption: "Publish → subscriber latency by percentile at each listed step (x: 90%, 99%, 99.9%... on a log scale).", Chart: lat},
		{Name: "throughput", Caption: "Deliveries per second, all subscribers together, over every step of each target.", Chart: thr},
	}
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
