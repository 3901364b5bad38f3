package fanout

import (
	"strings"
	"testing"
	"time"
)

func fakeTarget(name string, steps ...*StepResult) *TargetResult {
	return &TargetResult{Target: name, Subscribers: GoalSubscribers, Connected: GoalSubscribers, Steps: judged(steps...)}
}

func withCPU(s *StepResult, us float64) *StepResult {
	s.Server = &StepUsage{Cores: 1, MicrosPerDelivery: us}
	return s
}

func statuses(checks []Check) map[string]string {
	out := map[string]string{}
	for _, c := range checks {
		out[c.Goal] = c.Status
	}
	return out
}

func TestGoals(t *testing.T) {
	t.Parallel()
	ms := time.Millisecond
	base := fakeTarget(TargetBaseline,
		withCPU(fakeStep(50000, 50000, 0, 10*ms), 2), withCPU(fakeStep(100000, 100000, 0, 20*ms), 2), withCPU(fakeStep(150000, 150000, 0, 30*ms), 2))
	base.ServerIdle = &IdleMemory{PerConnBytes: 9000}
	base.Saturation = &Saturation{Found: true, Deliveries: 400000, FailedAt: 425000}

	flux := fakeTarget(TargetFluxbase,
		withCPU(fakeStep(50000, 50000, 0, 15*ms), 6.5),  // CPU passes
		withCPU(fakeStep(100000, 100000, 0, 25*ms), 7),  // p99 1.25× the baseline's: fails; CPU at the bound passes
		withCPU(fakeStep(150000, 150000, 0, 250*ms), 8)) // p99 above 200 ms and CPU above 7 µs: fail
	flux.ServerIdle = &IdleMemory{PerConnBytes: 19000}
	flux.Saturation = &Saturation{Found: true, Deliveries: 375000, FailedAt: 400000} // 0.94×

	got := statuses(checkGoals(Config{}, []*TargetResult{base, flux}))
	want := map[string]string{
		"at 100000 deliveries/s, p99 ≤ 1.2 × the baseline's, nothing lost": Fail,
		"at 150000 deliveries/s, p99 ≤ 200ms, nothing lost":                Fail,
		"saturation ≥ 0.9 × the baseline's":                                Pass,
		"at 50000 deliveries/s, server CPU ≤ 7 µs per delivery":            Pass,
		"at 100000 deliveries/s, server CPU ≤ 7 µs per delivery":           Pass,
		"at 150000 deliveries/s, server CPU ≤ 7 µs per delivery":           Fail,
		"server memory ≤ 20 KB (19.5 KiB) per idle connection":             Pass,
	}
	for goal, status := range want {
		if got[goal] != status {
			t.Errorf("%q: %q, want %q (all: %v)", goal, got[goal], status, got)
		}
	}
	if len(got) != len(want) {
		t.Errorf("checks %v", got)
	}

	// The same p99 ratio passes once within 1.2×, unless deliveries were lost.
	flux.Steps[1].Latency.P99 = int64(24 * ms)
	if s := statuses(checkGoals(Config{}, []*TargetResult{base, flux})); s["at 100000 deliveries/s, p99 ≤ 1.2 × the baseline's, nothing lost"] != Pass {
		t.Errorf("1.2× exactly: %v", s)
	}
	flux.Steps[1].Accounting.Lost = 1
	if s := statuses(checkGoals(Config{}, []*TargetResult{base, flux})); s["at 100000 deliveries/s, p99 ≤ 1.2 × the baseline's, nothing lost"] != Fail {
		t.Errorf("with loss: %v", s)
	}

	// Without the baseline or the steps, goals are not applicable.
	lone := fakeTarget(TargetFluxbase, fakeStep(20000, 20000, 0, ms))
	for _, c := range checkGoals(Config{}, []*TargetResult{lone}) {
		if strings.Contains(c.Goal, "CPU") || strings.Contains(c.Goal, "memory") {
			if c.Status != NA || c.Measured != "not measured" {
				t.Errorf("%+v", c)
			}
			continue
		}
		if c.Status != NA {
			t.Errorf("%+v: want n/a", c)
		}
	}
}

func TestSaturationGoalBounds(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name       string
		flux, base Saturation
		status     string
	}{
		{"both exact, enough", Saturation{Found: true, Deliveries: 90, FailedAt: 100}, Saturation{Found: true, Deliveries: 100, FailedAt: 110}, Pass},
		{"both exact, short", Saturation{Found: true, Deliveries: 80, FailedAt: 90}, Saturation{Found: true, Deliveries: 100, FailedAt: 110}, Fail},
		{"fluxbase a lower bound that is enough", Saturation{Found: true, Deliveries: 95}, Saturation{Found: true, Deliveries: 100, FailedAt: 110}, Pass},
		{"fluxbase a lower bound that is short", Saturation{Found: true, Deliveries: 50}, Saturation{Found: true, Deliveries: 100, FailedAt: 110}, NA},
		{"baseline a lower bound, fluxbase short", Saturation{Found: true, Deliveries: 50, FailedAt: 60}, Saturation{Found: true, Deliveries: 100}, Fail},
		{"baseline a lower bound, fluxbase above", Saturation{Found: true, Deliveries: 95, FailedAt: 100}, Saturation{Found: true, Deliveries: 100}, NA},
		{"fluxbase failed its lowest step", Saturation{FailedAt: 50}, Saturation{Found: true, Deliveries: 100, FailedAt: 110}, Fail},
		{"the baseline failed its lowest step", Saturation{Found: true, Deliveries: 50, FailedAt: 60}, Saturation{FailedAt: 10}, NA},
	} {
		f, b := c.flux, c.base
		got := saturationGoal(&TargetResult{Saturation: &f}, &TargetResult{Saturation: &b})
		if got.Status != c.status {
			t.Errorf("%s: %+v, want %s", c.name, got, c.status)
		}
	}
	if got := saturationGoal(&TargetResult{}, nil); got.Status != NA {
		t.Errorf("not searched: %+v", got)
	}
}

func TestRLSGoals(t *testing.T) {
	t.Parallel()
	ms := time.Millisecond
	mk := func(steps ...*StepResult) *TargetResult {
		r := fakeTarget(TargetFluxbase, steps...)
		r.RLS = &RLSInfo{Users: 10000, Outsiders: 5, OutsidersConnected: 5}
		for _, s := range r.Steps {
			s.Outsiders = &Outsiders{Subscribers: 5, Connected: 5}
		}
		return r
	}
	rlsGoalName := "row-level security, 10000 distinct users: ≥ 50000 deliveries/s with p99 ≤ 250ms"
	outsiderName := "subscribers outside the policy receive no row"

	flux := mk(fakeStep(50000, 49900, 0, 200*ms))
	got := statuses(checkGoals(Config{RLSUsers: 10000}, []*TargetResult{flux}))
	if got[rlsGoalName] != Pass || got[outsiderName] != Pass || len(got) != 2 {
		t.Errorf("kept up: %v", got)
	}
	// p99 above the bound fails; so does loss.
	flux = mk(fakeStep(50000, 49900, 0, 300*ms))
	if got := statuses(checkGoals(Config{}, []*TargetResult{flux})); got[rlsGoalName] != Fail {
		t.Errorf("slow: %v", got)
	}
	flux = mk(fakeStep(50000, 49900, 7, 100*ms))
	if got := statuses(checkGoals(Config{}, []*TargetResult{flux})); got[rlsGoalName] != Fail {
		t.Errorf("lossy: %v", got)
	}
	// A higher step that kept up passes even when the lowest did not.
	flux = mk(fakeStep(50000, 49900, 0, 300*ms), fakeStep(75000, 75000, 0, 100*ms))
	if c := checkGoals(Config{}, []*TargetResult{flux})[0]; c.Status != Pass || !strings.Contains(c.Measured, "75000/s target") {
		t.Errorf("higher step: %+v", c)
	}
	// Below the goal's rate: not applicable.
	flux = mk(fakeStep(20000, 20000, 0, ms))
	if got := statuses(checkGoals(Config{}, []*TargetResult{flux})); got[rlsGoalName] != NA {
		t.Errorf("low rate: %v", got)
	}
	// An outsider that got a row fails; so does none joining.
	flux = mk(fakeStep(50000, 50000, 0, ms))
	flux.Steps[0].Outsiders.Rows = 1
	if got := statuses(checkGoals(Config{}, []*TargetResult{flux})); got[outsiderName] != Fail {
		t.Errorf("leak: %v", got)
	}
	flux = mk(fakeStep(50000, 50000, 0, ms))
	flux.RLS.OutsidersConnected = 0
	if got := statuses(checkGoals(Config{}, []*TargetResult{flux})); got[outsiderName] != Fail {
		t.Errorf("no outsider joined: %v", got)
	}
}

func TestBaselineNote(t *testing.T) {
	t.Parallel()
	ms := time.Millisecond
	base := fakeTarget(TargetBaseline, fakeStep(50000, 50000, 0, 10*ms), fakeStep(100000, 60000, 0, 3000*ms))
	flux := fakeTarget(TargetFluxbase, fakeStep(50000, 50000, 0, 10*ms), fakeStep(100000, 100000, 0, 90*ms))
	if n := baselineNote([]*TargetResult{base, flux}); !strings.Contains(n, "At 100000 deliveries/s the baseline fell behind") {
		t.Errorf("note %q", n)
	}
	// Both fell behind, or only Fluxbase did: nothing to say.
	flux = fakeTarget(TargetFluxbase, fakeStep(50000, 50000, 0, 10*ms), fakeStep(100000, 50000, 0, 90*ms))
	if n := baselineNote([]*TargetResult{base, flux}); n != "" {
		t.Errorf("note %q", n)
	}
	if n := baselineNote([]*TargetResult{flux}); n != "" {
		t.Errorf("note without a baseline %q", n)
	}
}
