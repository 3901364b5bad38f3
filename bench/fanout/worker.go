package fanout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fluxbase/fluxbase/bench/harness"
	"github.com/fluxbase/fluxbase/bench/procstat"
)

// A generator process (`fluxbench fanout-worker`) talks JSON lines: it reads
// its Spec, then commands, from stdin, and writes events to stdout.
type command struct {
	Cmd string `json:"cmd"`          // "start" or "stop"
	T0  int64  `json:"t0,omitempty"` // Unix ns, with start
}

type event struct {
	Event    string    `json:"event"` // "progress", "ready", "result", "error"
	Progress *Progress `json:"progress,omitempty"`
	Result   *Result   `json:"result,omitempty"`
	Error    string    `json:"error,omitempty"`
}

// ServeWorker runs one generator process: Spec from in, then connect,
// report ready, start on command, stop on command (or when in closes) and
// write the Result.
func ServeWorker(ctx context.Context, in io.Reader, out io.Writer) error {
	var mu sync.Mutex // serializes writes to out
	enc := json.NewEncoder(out)
	emit := func(ev event) {
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(ev)
	}
	dec := json.NewDecoder(in)
	var spec Spec
	if err := dec.Decode(&spec); err != nil {
		return fmt.Errorf("read generator spec: %w", err)
	}
	g, err := NewGenerator(spec)
	if err != nil {
		emit(event{Event: "error", Error: err.Error()})
		return err
	}
	if err := g.Connect(ctx, func(p Progress) { emit(event{Event: "progress", Progress: &p}) }); err != nil {
		emit(event{Event: "error", Error: err.Error()})
		return err
	}
	p := g.Progress()
	emit(event{Event: "ready", Progress: &p})

	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				p := g.Progress()
				emit(event{Event: "progress", Progress: &p})
			}
		}
	})
	for {
		var c command
		if err := dec.Decode(&c); err != nil {
			break // stdin closed: stop
		}
		if c.Cmd == "start" {
			g.Start(time.Unix(0, c.T0))
			continue
		}
		if c.Cmd == "stop" {
			break
		}
	}
	close(done)
	wg.Wait()
	emit(event{Event: "result", Result: g.Stop()})
	return nil
}

// generator is a set of subscribers the coordinator drives: in this
// process (tests) or in a child process.
type generator interface {
	Connect(ctx context.Context, progress func(Progress)) error
	Start(t0 time.Time) error
	Progress() Progress
	Stop(ctx context.Context) (*Result, error)
	// Usage samples the generator process; nil when it is this process.
	Usage() procstat.Source
}

type localGenerator struct{ g *Generator }

func (l localGenerator) Connect(ctx context.Context, progress func(Progress)) error {
	return l.g.Connect(ctx, progress)
}
func (l localGenerator) Start(t0 time.Time) error              { l.g.Start(t0); return nil }
func (l localGenerator) Progress() Progress                    { return l.g.Progress() }
func (l localGenerator) Stop(context.Context) (*Result, error) { return l.g.Stop(), nil }
func (l localGenerator) Usage() procstat.Source                { return nil }

// remoteGenerator is a `fluxbench fanout-worker` child.
type remoteGenerator struct {
	spec     Spec
	p        *harness.Process
	progress atomic.Pointer[Progress]
	ready    chan error   // the connect phase's outcome
	result   chan *Result // the final result
	wg       sync.WaitGroup
}

func startRemote(self string, spec Spec) (*remoteGenerator, error) {
	p, err := harness.Start(self, nil, "fanout-worker")
	if err != nil {
		return nil, err
	}
	r := &remoteGenerator{spec: spec, p: p, ready: make(chan error, 1), result: make(chan *Result, 1)}
	r.progress.Store(&Progress{})
	r.wg.Go(r.read)
	return r, nil
}

// read consumes the child's events until it closes stdout.
func (r *remoteGenerator) read() {
	readySent := false
	for line := range r.p.Lines() {
		var ev event
		if err := json.Unmarshal(line, &ev); err != nil {
			continue
		}
		switch ev.Event {
		case "progress":
			r.progress.Store(ev.Progress)
		case "ready":
			r.progress.Store(ev.Progress)
			if !readySent {
				r.ready <- nil
				readySent = true
			}
		case "error":
			if !readySent {
				r.ready <- errors.New(ev.Error)
				readySent = true
			}
		case "result":
			r.result <- ev.Result
		}
	}
	if !readySent {
		r.ready <- fmt.Errorf("generator exited: %s", r.p.Stderr())
	}
	close(r.result)
}

func (r *remoteGenerator) Connect(ctx context.Context, progress func(Progress)) error {
	if err := r.p.Send(r.spec); err != nil {
		return err
	}
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case err := <-r.ready:
			return err
		case <-t.C:
			if progress != nil {
				progress(r.Progress())
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (r *remoteGenerator) Start(t0 time.Time) error {
	return r.p.Send(command{Cmd: "start", T0: t0.UnixNano()})
}

func (r *remoteGenerator) Progress() Progress { return *r.progress.Load() }

func (r *remoteGenerator) Stop(ctx context.Context) (*Result, error) {
	defer func() {
		_ = r.p.Stop(10 * time.Second)
		r.wg.Wait()
	}()
	if err := r.p.Send(command{Cmd: "stop"}); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	select {
	case res, ok := <-r.result:
		if !ok || res == nil {
			return nil, fmt.Errorf("generator exited without a result: %s", r.p.Stderr())
		}
		return res, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("generator result: %w", ctx.Err())
	}
}

func (r *remoteGenerator) Usage() procstat.Source { return procstat.PID(r.p.PID()) }

// kill ends the child without waiting for a result.
func (r *remoteGenerator) kill() {
	_ = r.p.Stop(5 * time.Second)
	r.wg.Wait()
}
