package fanout

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/fluxbase/fluxbase/bench/hist"
)

func TestPlan(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name     string
		cfg      Config
		rates    []float64
		messages []int
		targets  []float64
	}{
		{"listed deliveries", Config{Subscribers: 10000, Deliveries: []float64{50000, 100000, 150000}, Duration: 20 * time.Second},
			[]float64{5, 10, 15}, []int{100, 200, 300}, []float64{50000, 100000, 150000}},
		{"a fractional rate rounds messages up", Config{Subscribers: 3000, Deliveries: []float64{50000}, Duration: 10 * time.Second},
			[]float64{50000.0 / 3000}, []int{167}, []float64{50000}},
		{"a single -rate step", Config{Subscribers: 2000, Rate: 25, Duration: 10 * time.Second},
			[]float64{25}, []int{250}, []float64{50000}},
		{"at least one message", Config{Subscribers: 100, Deliveries: []float64{1}, Duration: time.Second},
			[]float64{0.01}, []int{1}, []float64{1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			steps := c.cfg.plan()
			if len(steps) != len(c.rates) {
				t.Fatalf("%d steps, want %d", len(steps), len(c.rates))
			}
			for i, s := range steps {
				if math.Abs(s.Rate-c.rates[i]) > 1e-9 || s.Messages != c.messages[i] || s.Deliveries != c.targets[i] || s.Ramp {
					t.Errorf("step %d: %+v, want rate %v, %d messages, target %v", i, s, c.rates[i], c.messages[i], c.targets[i])
				}
			}
		})
	}
}

func TestNextRamp(t *testing.T) {
	t.Parallel()
	cfg := Config{Subscribers: 10000, SaturateIncrement: 25000, SaturateDuration: 5 * time.Second, SaturateSteps: 3, SaturateMax: 225000}
	s, ok := cfg.nextRamp(150000, 0)
	if !ok || s.Deliveries != 175000 || s.Rate != 17.5 || s.Messages != 88 || !s.Ramp || s.Duration != 5*time.Second {
		t.Errorf("first ramp step %+v, %v", s, ok)
	}
	if _, ok := cfg.nextRamp(200000, 2); !ok {
		t.Error("225000 is within the bound and the third step")
	}
	if _, ok := cfg.nextRamp(200000, 3); ok {
		t.Error("a fourth step past SaturateSteps")
	}
	if _, ok := cfg.nextRamp(225000, 1); ok {
		t.Error("a step past SaturateMax")
	}
	cfg.SaturateMax = 0
	if _, ok := cfg.nextRamp(1e9, 1); !ok {
		t.Error("no bound without SaturateMax")
	}
}

func TestAchieved(t *testing.T) {
	t.Parallel()
	const s = int64(time.Second)
	t0 := 100 * s
	// 100 messages at 10/s to 1000 subscribers: scheduled over 10 s.
	for _, c := range []struct {
		name           string
		delivered      int64
		last           int64
		rate, window   float64
		scheduledShort bool
	}{
		{"kept up: the scheduled window", 100000, t0 + 9*s + s/10, 10000, 10, false},
		{"a backlog cleared 10 s late", 100000, t0 + 20*s, 5000, 20, false},
		{"nothing arrived", 0, 0, 0, 10, false},
	} {
		rate, window := achieved(c.delivered, t0, c.last, 10*time.Second)
		if math.Abs(rate-c.rate) > 1e-6 || math.Abs(window-c.window) > 1e-9 {
			t.Errorf("%s: %v/s over %v s, want %v over %v", c.name, rate, window, c.rate, c.window)
		}
	}
}

func TestStepUsage(t *testing.T) {
	t.Parallel()
	u := stepUsage(0.7, 2, 100000) // 0.7 CPU seconds over 2 s for 100k deliveries
	if math.Abs(u.Cores-0.35) > 1e-9 || math.Abs(u.MicrosPerDelivery-7) > 1e-9 {
		t.Errorf("%+v", u)
	}
	if u := stepUsage(1, 0, 0); u.Cores != 0 || u.MicrosPerDelivery != 0 {
		t.Errorf("empty step %+v", u)
	}
}

// fakeStep is a step at target deliveries/s that delivered achieved/s with
// the given loss and p99.
func fakeStep(target, achieved float64, lost int64, p99 time.Duration) *StepResult {
	return &StepResult{
		Target: target, Asked: target, DeliveriesPerSec: achieved,
		Publish:    PublishStats{Sent: 100},
		Accounting: Accounting{Published: 100, Expected: 1000, Delivered: 1000 - lost, Lost: lost},
		Latency:    hist.Summary{Count: 1000, P50: int64(p99) / 2, P99: int64(p99)},
	}
}

func TestJudge(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name   string
		step   *StepResult
		pass   bool
		reason string
		share  float64 // of the asked rate a step must reach
	}{
		{"kept up", fakeStep(100000, 99000, 0, 50*time.Millisecond), true, "", MinAchieved},
		{"just at 95%", fakeStep(100000, 95000, 0, 50*time.Millisecond), true, "", MinAchieved},
		{"too slow", fakeStep(100000, 94000, 0, 50*time.Millisecond), false, "below 95% of 100000", MinAchieved},
		{"loss", fakeStep(100000, 99000, 3, 50*time.Millisecond), false, "3 deliveries lost", MinAchieved},
		{"p99 too high", fakeStep(100000, 99000, 0, 1500*time.Millisecond), false, "p99 1.5s above 1s", MinAchieved},
		{"publish failures", func() *StepResult {
			s := fakeStep(100000, 99000, 0, time.Millisecond)
			s.Publish.Failed = 2
			return s
		}(), false, "2 messages failed to publish", MinAchieved},
		{"nothing published", &StepResult{Target: 1, Asked: 1}, false, "nothing was published", MinAchieved},
		// A lower share asked of the rate (Config.SaturateMinAchieved) passes a
		// slower step, and still fails one that lost deliveries.
		{"slow within a lower share", fakeStep(100000, 60000, 0, 50*time.Millisecond), true, "", 0.5},
		{"below a lower share", fakeStep(100000, 40000, 0, 50*time.Millisecond), false, "below 50% of 100000", 0.5},
		{"loss within a lower share", fakeStep(100000, 60000, 1, 50*time.Millisecond), false, "1 deliveries lost", 0.5},
	} {
		v := judge(c.step, c.share, time.Second)
		if v.Pass != c.pass || !strings.Contains(v.Reason, c.reason) {
			t.Errorf("%s: %+v, want pass %v with %q", c.name, v, c.pass, c.reason)
		}
	}
}

func judged(steps ...*StepResult) []*StepResult {
	for _, s := range steps {
		s.Verdict = judge(s, MinAchieved, time.Second)
	}
	return steps
}

func TestSaturation(t *testing.T) {
	t.Parallel()
	ok := func(target float64) *StepResult { return fakeStep(target, target, 0, 10*time.Millisecond) }
	slow := func(target float64) *StepResult { return fakeStep(target, target/2, 0, 10*time.Millisecond) }

	// Listed out of order; the ramp failed at 200k.
	s := saturation(judged(ok(100000), ok(50000), ok(150000), ok(175000), slow(200000)))
	if !s.Found || s.Deliveries != 175000 || s.Achieved != 175000 || s.FailedAt != 200000 || !strings.Contains(s.Reason, "below 95%") {
		t.Errorf("ramp failure: %+v", s)
	}
	// A failing listed step ends the search even if a higher one passed.
	s = saturation(judged(ok(50000), slow(100000), ok(150000)))
	if s.Deliveries != 50000 || s.FailedAt != 100000 {
		t.Errorf("failure among the listed steps: %+v", s)
	}
	// No failure: the highest step, a lower bound.
	s = saturation(judged(ok(50000), ok(75000)))
	if !s.Found || s.Deliveries != 75000 || s.FailedAt != 0 {
		t.Errorf("no failure: %+v", s)
	}
	// The lowest step failed: nothing found.
	s = saturation(judged(slow(50000), ok(75000)))
	if s.Found || s.FailedAt != 50000 {
		t.Errorf("lowest failed: %+v", s)
	}
	if !anyFailed(judged(ok(1), slow(2))) || anyFailed(judged(ok(1), ok(2))) {
		t.Error("anyFailed")
	}
}
