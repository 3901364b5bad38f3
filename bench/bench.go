// Package bench holds fluxbench's scenarios and what they share: the report
// every run writes (a table on stdout, JSON, Markdown and PNG plots under
// bench/results/), the description of the machine, and the progress bar.
//
// Each scenario lives in its own package and measures Fluxbase beside a
// baseline that shows what the machine or PostgreSQL can do on its own:
//
//	fanout         realtime fan-out to websocket subscribers (bench/fanout)
//	cdc-drain      draining a backlog of changes from a slot (bench/cdc)
//	write-overhead insert throughput with and without change capture (bench/writeoverhead)
//	rest           REST reads (bench/rest)
//
// A Fluxbase side whose feature does not exist yet is reported as not
// available (ErrNotAvailable), never estimated. Starting PostgreSQL, Fluxbase
// nodes and helper processes is bench/harness's job; this package starts
// nothing.
package bench

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrNotAvailable marks a target whose feature is missing: the endpoint is
// not served yet, or the node does not replicate yet.
var ErrNotAvailable = errors.New("not available")

// NotAvailable returns an error matching ErrNotAvailable that says why.
func NotAvailable(format string, args ...any) error {
	return &notAvailable{fmt.Sprintf(format, args...)}
}

type notAvailable struct{ reason string }

func (e *notAvailable) Error() string        { return e.reason }
func (e *notAvailable) Is(target error) bool { return target == ErrNotAvailable }

// Status is how a target's measurement ended.
type Status string

// The statuses of a target.
const (
	StatusOK      Status = "ok"
	StatusSkipped Status = "skipped" // its feature is not available
	StatusFailed  Status = "failed"
)

// Outcome is one target's status in a run, with the reason when it was not
// measured.
type Outcome struct {
	Target string `json:"target"`
	Status Status `json:"status"`
	Reason string `json:"reason,omitempty"`
}

// OutcomeOf classifies err: nil is ok, ErrNotAvailable is skipped, anything
// else failed.
func OutcomeOf(target string, err error) Outcome {
	switch {
	case err == nil:
		return Outcome{Target: target, Status: StatusOK}
	case errors.Is(err, ErrNotAvailable):
		return Outcome{Target: target, Status: StatusSkipped, Reason: err.Error()}
	default:
		return Outcome{Target: target, Status: StatusFailed, Reason: err.Error()}
	}
}

// Pace calls send(seq) for seq 0..count-1 at rate per second from one
// goroutine, never bursting to catch up, and returns the worst lag behind
// the schedule. It stops at the first error send returns, or when ctx
// ends (returning ctx's error).
func Pace(ctx context.Context, count int, rate float64, send func(seq int) error) (time.Duration, error) {
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	var worst time.Duration
	for i := range count {
		due := start.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return worst, ctx.Err()
			}
		} else if -d > worst {
			worst = -d
		}
		if err := send(i); err != nil {
			return worst, err
		}
	}
	return worst, nil
}
