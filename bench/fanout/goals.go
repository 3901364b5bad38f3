package fanout

import (
	"fmt"
	"time"
)

// The realtime acceptance goals: 10,000 subscribers on one node, the load
// generator on the same machine, Fluxbase beside the bare broadcaster.
const (
	GoalSubscribers = 10000

	GoalRatioAt  = 100000 // deliveries/s of the step whose p99 is compared with the baseline's
	GoalP99Ratio = 1.2

	GoalBoundAt  = 150000 // deliveries/s of the step whose p99 is bounded
	GoalP99Bound = 200 * time.Millisecond

	GoalSaturationRatio = 0.9
	GoalCPUPerDelivery  = 7.0   // µs of server CPU per delivery
	GoalIdleConnBytes   = 20000 // 20 KB of server memory per idle connection

	GoalRLSUsers      = 10000
	GoalRLSDeliveries = 50000
	GoalRLSP99        = 250 * time.Millisecond
)

// Check statuses.
const (
	Pass = "PASS"
	Fail = "FAIL"
	NA   = "n/a"
)

// Check is one goal judged from the measured figures.
type Check struct {
	Goal     string `json:"goal"`
	Status   string `json:"status"` // Pass, Fail or NA
	Measured string `json:"measured"`
}

func verdict(ok bool) string {
	if ok {
		return Pass
	}
	return Fail
}

func msOf(ns int64) string { return fmt.Sprintf("%.1f ms", float64(ns)/1e6) }

func find(results []*TargetResult, name string) *TargetResult {
	for _, r := range results {
		if r.Target == name {
			return r
		}
	}
	return nil
}

// checkGoals judges the acceptance goals that the run's steps measured;
// goals needing a step or target the run lacks are NA. A row-level
// security run is judged on its own goals only.
func checkGoals(cfg Config, results []*TargetResult) []Check {
	flux, base := find(results, TargetFluxbase), find(results, TargetBaseline)
	if flux == nil {
		return nil
	}
	var out []Check
	subs := ""
	if flux.Subscribers != GoalSubscribers {
		subs = fmt.Sprintf(" (with %d subscribers; the goal is for %d)", flux.Subscribers, GoalSubscribers)
	}
	if flux.RLS != nil {
		return append(out, rlsGoal(flux, subs), outsiderGoal(flux))
	}

	// p99 at GoalRatioAt beside the baseline's.
	c := Check{Goal: fmt.Sprintf("at %d deliveries/s, p99 ≤ %.1f × the baseline's, nothing lost", GoalRatioAt, GoalP99Ratio), Status: NA}
	fs := flux.step(GoalRatioAt)
	var bs *StepResult
	if base != nil {
		bs = base.step(GoalRatioAt)
	}
	switch {
	case fs == nil:
		c.Measured = fmt.Sprintf("no %d/s step", GoalRatioAt)
	case bs == nil:
		c.Measured = fmt.Sprintf("no baseline step at %d/s", GoalRatioAt)
	case bs.Latency.P99 == 0:
		c.Measured = "the baseline delivered nothing"
	default:
		ratio := float64(fs.Latency.P99) / float64(bs.Latency.P99)
		c.Status = verdict(ratio <= GoalP99Ratio && fs.Accounting.Lost == 0)
		c.Measured = fmt.Sprintf("p99 %s vs %s: %.2f×; %d lost%s", msOf(fs.Latency.P99), msOf(bs.Latency.P99), ratio, fs.Accounting.Lost, subs)
	}
	out = append(out, c)

	// p99 at GoalBoundAt under a bound.
	c = Check{Goal: fmt.Sprintf("at %d deliveries/s, p99 ≤ %s, nothing lost", GoalBoundAt, GoalP99Bound), Status: NA}
	if fs := flux.step(GoalBoundAt); fs == nil {
		c.Measured = fmt.Sprintf("no %d/s step", GoalBoundAt)
	} else {
		c.Status = verdict(time.Duration(fs.Latency.P99) <= GoalP99Bound && fs.Accounting.Lost == 0)
		c.Measured = fmt.Sprintf("p99 %s; %.0f deliveries/s; %d lost%s", msOf(fs.Latency.P99), fs.DeliveriesPerSec, fs.Accounting.Lost, subs)
	}
	out = append(out, c)

	out = append(out, saturationGoal(flux, base))

	// Server CPU per delivery, at every listed step.
	for _, s := range flux.Steps {
		if s.Ramp {
			continue
		}
		c := Check{Goal: fmt.Sprintf("at %.0f deliveries/s, server CPU ≤ %.0f µs per delivery", s.Target, GoalCPUPerDelivery), Status: NA}
		if s.Server == nil || s.Accounting.Delivered == 0 {
			c.Measured = "not measured"
		} else {
			c.Status = verdict(s.Server.MicrosPerDelivery <= GoalCPUPerDelivery)
			c.Measured = fmt.Sprintf("%.2f µs (%.2f cores)", s.Server.MicrosPerDelivery, s.Server.Cores)
			if b := stepOf(base, s.Target); b != nil && b.Server != nil {
				c.Measured += fmt.Sprintf("; baseline %.2f µs", b.Server.MicrosPerDelivery)
			}
		}
		out = append(out, c)
	}

	// Memory per idle connection.
	c = Check{Goal: fmt.Sprintf("server memory ≤ %d KB (%.1f KiB) per idle connection", GoalIdleConnBytes/1000, GoalIdleConnBytes/1024.0), Status: NA}
	if flux.ServerIdle == nil {
		c.Measured = "not measured"
	} else {
		c.Status = verdict(flux.ServerIdle.PerConnBytes <= GoalIdleConnBytes)
		c.Measured = fmt.Sprintf("%.1f KiB", flux.ServerIdle.PerConnBytes/1024)
		if base != nil && base.ServerIdle != nil {
			c.Measured += fmt.Sprintf("; baseline %.1f KiB", base.ServerIdle.PerConnBytes/1024)
		}
	}
	return append(out, c)
}

func stepOf(r *TargetResult, target float64) *StepResult {
	if r == nil {
		return nil
	}
	return r.step(target)
}

// saturationGoal compares the saturation points. A ramp that ended
// without a failing step gives only a lower bound, which settles the
// check one way at most.
func saturationGoal(flux, base *TargetResult) Check {
	c := Check{Goal: fmt.Sprintf("saturation ≥ %.1f × the baseline's", GoalSaturationRatio), Status: NA}
	switch {
	case flux.Saturation == nil:
		c.Measured = "not searched (-saturate)"
		return c
	case base == nil || base.Saturation == nil:
		c.Measured = "no baseline saturation"
		return c
	}
	f, b := *flux.Saturation, *base.Saturation
	if !b.Found {
		c.Measured = "the baseline failed its lowest step: " + b.Reason
		return c
	}
	fv := 0.0
	if f.Found {
		fv = f.Deliveries
	}
	ratio := fv / b.Deliveries
	fBound, bBound := f.FailedAt == 0 && f.Found, b.FailedAt == 0
	c.Measured = fmt.Sprintf("%s vs %s deliveries/s: %.2f×", satText(f), satText(b), ratio)
	switch {
	case ratio >= GoalSaturationRatio && !bBound:
		// Fluxbase's true point is at least fv; the baseline's is exact.
		c.Status = Pass
	case ratio < GoalSaturationRatio && !fBound:
		// Fluxbase's point is exact; the baseline's is at least b.
		c.Status = Fail
	default:
		c.Measured += "; a ramp ended without a failing step, so this is inconclusive: raise -saturate-max or -saturate-steps"
	}
	return c
}

func satText(s Saturation) string {
	switch {
	case !s.Found:
		return "none"
	case s.FailedAt == 0:
		return fmt.Sprintf("≥ %.0f", s.Deliveries)
	}
	return fmt.Sprintf("%.0f", s.Deliveries)
}

// rlsGoal looks for a step of at least GoalRLSDeliveries that kept up with
// p99 within GoalRLSP99.
func rlsGoal(flux *TargetResult, subs string) Check {
	c := Check{Goal: fmt.Sprintf("row-level security, %d distinct users: ≥ %d deliveries/s with p99 ≤ %s", GoalRLSUsers, GoalRLSDeliveries, GoalRLSP99), Status: NA}
	kept := func(s *StepResult) bool { return s.Verdict.Pass && time.Duration(s.Latency.P99) <= GoalRLSP99 }
	// The highest step that met the goal, else the lowest that tried.
	var best, lowest *StepResult
	for _, s := range flux.Steps {
		if s.Target < GoalRLSDeliveries {
			continue
		}
		if lowest == nil || s.Target < lowest.Target {
			lowest = s
		}
		if kept(s) && (best == nil || s.Target > best.Target) {
			best = s
		}
	}
	if best == nil {
		best = lowest
	}
	if best == nil {
		c.Measured = fmt.Sprintf("no step of %d/s or more", GoalRLSDeliveries)
		return c
	}
	c.Status = verdict(kept(best))
	c.Measured = fmt.Sprintf("%.0f/s target: %.0f deliveries/s, p99 %s, %d lost; %d users%s",
		best.Target, best.DeliveriesPerSec, msOf(best.Latency.P99), best.Accounting.Lost, flux.RLS.Users, subs)
	if !best.Verdict.Pass {
		c.Measured += "; " + best.Verdict.Reason
	}
	if flux.RLS.Users < GoalRLSUsers {
		c.Measured += fmt.Sprintf(" (fewer users than the goal's %d)", GoalRLSUsers)
	}
	return c
}

// outsiderGoal: subscribers whose users are not members receive nothing.
func outsiderGoal(flux *TargetResult) Check {
	c := Check{Goal: "subscribers outside the policy receive no row", Status: NA}
	var rows int64
	steps := 0
	for _, s := range flux.Steps {
		if s.Outsiders != nil {
			rows += s.Outsiders.Rows
			steps++
		}
	}
	switch {
	case steps == 0:
		c.Measured = "no step measured"
	case flux.RLS.OutsidersConnected == 0:
		c.Status = Fail
		c.Measured = fmt.Sprintf("none of the %d outsiders could join", flux.RLS.Outsiders)
	default:
		c.Status = verdict(rows == 0)
		c.Measured = fmt.Sprintf("%d rows received by the %d outsiders that joined (of %d), over %d steps", rows, flux.RLS.OutsidersConnected, flux.RLS.Outsiders, steps)
	}
	return c
}

// baselineNote says when the baseline fell behind where Fluxbase kept up:
// past its own saturation the bare broadcaster is no limit any more (it
// writes every frame to every connection in a write call of its own), so
// ratios to it flatter Fluxbase. Empty when it never did.
func baselineNote(results []*TargetResult) string {
	flux, base := find(results, TargetFluxbase), find(results, TargetBaseline)
	if flux == nil || base == nil {
		return ""
	}
	for _, b := range base.Steps {
		f := flux.step(b.Target)
		if b.Ramp || f == nil || b.Verdict.Pass || !f.Verdict.Pass {
			continue
		}
		return fmt.Sprintf("At %.0f deliveries/s the baseline fell behind (%s) while Fluxbase kept up: past its saturation the bare "+
			"broadcaster, which writes every frame to every connection in a write call of its own, is no limit of this machine, "+
			"and ratios to it (latency, saturation) flatter Fluxbase.", b.Target, b.Verdict.Reason)
	}
	return ""
}
