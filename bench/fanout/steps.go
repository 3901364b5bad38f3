package fanout

import (
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/fluxbase/fluxbase/bench/hist"
)

// stepPlan is one rate of a run: the deliveries per second asked of the
// server, and the message rate that asks it of the configured subscribers.
type stepPlan struct {
	Deliveries float64       // deliveries/s target
	Rate       float64       // messages/s
	Duration   time.Duration // publishing time
	Messages   int
	Ramp       bool // part of the saturation ramp, not a listed step
}

// planStep turns a deliveries/s target into messages at target/subscribers
// per second for d.
func planStep(deliveries float64, subscribers int, d time.Duration, ramp bool) stepPlan {
	rate := deliveries / float64(max(subscribers, 1))
	return stepPlan{
		Deliveries: deliveries, Rate: rate, Duration: d, Ramp: ramp,
		Messages: max(int(math.Ceil(rate*d.Seconds())), 1),
	}
}

// plan is the listed steps: one per -deliveries target, or the single
// -rate step when none is listed.
func (c Config) plan() []stepPlan {
	if len(c.Deliveries) == 0 {
		s := planStep(c.Rate*float64(c.Subscribers), c.Subscribers, c.Duration, false)
		s.Rate = c.Rate // exact, not a quotient
		return []stepPlan{s}
	}
	out := make([]stepPlan, len(c.Deliveries))
	for i, d := range c.Deliveries {
		out[i] = planStep(d, c.Subscribers, c.Duration, false)
	}
	return out
}

// nextRamp is the saturation ramp's next step after a passing one at
// deliveries/s, or false when the ramp has reached its end.
func (c Config) nextRamp(last float64, taken int) (stepPlan, bool) {
	next := last + c.SaturateIncrement
	if taken >= c.SaturateSteps || (c.SaturateMax > 0 && next > c.SaturateMax) {
		return stepPlan{}, false
	}
	return planStep(next, c.Subscribers, c.SaturateDuration, true), true
}

// StepResult is one target's measurement at one rate.
type StepResult struct {
	// Target is the deliveries/s asked for; Rate the messages/s that ask it.
	Target float64 `json:"target_deliveries_per_second"`
	Rate   float64 `json:"messages_per_second"`
	Ramp   bool    `json:"saturation_ramp,omitempty"`
	// Asked is Rate × the subscribers connected: the deliveries/s this step
	// actually asked of the server.
	Asked      float64      `json:"asked_deliveries_per_second"`
	Publish    PublishStats `json:"publish"`
	Accounting Accounting   `json:"accounting"`
	Latency    hist.Summary `json:"latency_ns"`
	// WindowSeconds runs from the start of publishing to the later of the
	// last receipt and the publishing's scheduled end.
	WindowSeconds    float64 `json:"window_seconds"`
	DeliveriesPerSec float64 `json:"deliveries_per_second"`
	// Disconnects are subscribers lost during this step; LateFrames are
	// frames of earlier steps that arrived during it.
	Disconnects int64      `json:"disconnects"`
	LateFrames  int64      `json:"late_frames"`
	Server      *StepUsage `json:"server,omitempty"`
	Database    *StepUsage `json:"postgresql,omitempty"`
	Generator   *StepUsage `json:"generator,omitempty"`
	// Outsiders counts what subscribers outside the row-level policy got.
	Outsiders *Outsiders `json:"outsiders,omitempty"`
	Verdict   Verdict    `json:"verdict"`
	// Offset is when the step started, in seconds since the target's first
	// step started; PerSecond counts its deliveries second by second.
	Offset    float64 `json:"offset_seconds"`
	PerSecond []int64 `json:"deliveries_per_second_series"`

	latency *hist.Histogram
}

// StepUsage is a process group's CPU during a step.
type StepUsage struct {
	Cores float64 `json:"cores"`
	// MicrosPerDelivery is CPU time over the step per delivery made, in µs.
	MicrosPerDelivery float64 `json:"cpu_us_per_delivery"`
}

func stepUsage(cpuSeconds, wallSeconds float64, delivered int64) *StepUsage {
	u := &StepUsage{}
	if wallSeconds > 0 {
		u.Cores = cpuSeconds / wallSeconds
	}
	if delivered > 0 {
		u.MicrosPerDelivery = cpuSeconds * 1e6 / float64(delivered)
	}
	return u
}

// Outsiders are the subscribers that the row-level policy leaves out and
// what reached them, which must be nothing.
type Outsiders struct {
	Subscribers int   `json:"subscribers"`
	Connected   int   `json:"connected"`
	Rows        int64 `json:"rows"`
}

// achieved is deliveries per second over the step's window: from the
// start of publishing to the later of the last receipt and the scheduled
// end of publishing, so a server that keeps up scores the rate asked and
// one that builds a backlog scores less.
func achieved(delivered int64, t0, lastReceipt int64, scheduled time.Duration) (rate, window float64) {
	window = scheduled.Seconds()
	if lastReceipt > t0 {
		window = max(window, float64(lastReceipt-t0)/1e9)
	}
	if window <= 0 {
		return 0, 0
	}
	return float64(delivered) / window, window
}

// Pass criteria of a step, for the saturation search.
const (
	// MinAchieved is the share of the asked deliveries/s a step must reach
	// unless Config.SaturateMinAchieved says otherwise.
	MinAchieved = 0.95
	// DefaultSaturateP99 bounds a passing step's p99 latency.
	DefaultSaturateP99 = time.Second
)

// Verdict says whether a step kept up, and why not.
type Verdict struct {
	Pass   bool   `json:"pass"`
	Reason string `json:"reason,omitempty"`
}

// judge passes a step that published everything, delivered at least
// minAchieved of the asked rate, lost nothing and kept p99 within maxP99.
func judge(s *StepResult, minAchieved float64, maxP99 time.Duration) Verdict {
	a := s.Accounting
	switch {
	case a.Published == 0:
		return Verdict{Reason: "nothing was published"}
	case s.Publish.Failed > 0:
		return Verdict{Reason: fmt.Sprintf("%d messages failed to publish", s.Publish.Failed)}
	case s.DeliveriesPerSec < minAchieved*s.Asked:
		return Verdict{Reason: fmt.Sprintf("%.0f deliveries/s is below %.4g%% of %.0f", s.DeliveriesPerSec, 100*minAchieved, s.Asked)}
	case a.Lost > 0:
		return Verdict{Reason: fmt.Sprintf("%d deliveries lost", a.Lost)}
	case time.Duration(s.Latency.P99) > maxP99:
		return Verdict{Reason: fmt.Sprintf("p99 %s above %s", time.Duration(s.Latency.P99).Round(time.Millisecond), maxP99)}
	}
	return Verdict{Pass: true}
}

// Saturation is the highest rate a target kept up with.
type Saturation struct {
	// Found is false when even the lowest step failed.
	Found bool `json:"found"`
	// Deliveries is the target of the highest passing step below the first
	// failing one; Achieved what that step measured.
	Deliveries float64 `json:"deliveries_per_second"`
	Achieved   float64 `json:"achieved_deliveries_per_second"`
	// FailedAt is the first failing step's target (0 when the ramp ended
	// without a failure: the saturation point is then a lower bound), and
	// Reason why it failed.
	FailedAt float64 `json:"failed_at,omitempty"`
	Reason   string  `json:"reason,omitempty"`
}

// saturation walks the steps from the lowest target up and stops at the
// first that failed: the last one before it is the saturation point.
func saturation(steps []*StepResult) Saturation {
	sorted := make([]*StepResult, len(steps))
	copy(sorted, steps)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Target < sorted[j].Target })
	var s Saturation
	for _, st := range sorted {
		if !st.Verdict.Pass {
			s.FailedAt, s.Reason = st.Target, st.Verdict.Reason
			return s
		}
		s.Found, s.Deliveries, s.Achieved = true, st.Target, st.DeliveriesPerSec
	}
	return s
}

// anyFailed reports whether a step failed, so the ramp has nothing to find.
func anyFailed(steps []*StepResult) bool {
	for _, s := range steps {
		if !s.Verdict.Pass {
			return true
		}
	}
	return false
}
