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
// its Spec, then commands, from stdin, and writes events to stdout. Each
// "start" is answered by "started" (or "error"), each "collect" by
// "counts", and "stop" by "result".
type command struct {
	Cmd  string `json:"cmd"`            // "start", "collect" or "stop"
	Step *Step  `json:"step,omitempty"` // with start
}

type event struct {
	Event    string    `json:"event"` // "progress", "ready", "started", "counts", "result", "error"
	Progress *Progress `json:"progress,omitempty"`
	Counts   *Counts   `json:"counts,omitempty"`
	Result   *Result   `json:"result,omitempty"`
	Error    string    `json:"error,omitempty"`
}

// ServeWorker runs one generator process: Spec from in, then connect,
// report ready, start steps and collect their counts on command, stop on
// command (or when in closes) and write the Result.
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
		if c.Cmd == "stop" {
			break
		}
		switch c.Cmd {
		case "start":
			if c.Step == nil {
				emit(event{Event: "error", Error: "start without a step"})
				continue
			}
			if err := g.Start(*c.Step); err != nil {
				emit(event{Event: "error", Error: err.Error()})
				continue
			}
			emit(event{Event: "started"})
		case "collect":
			emit(event{Event: "counts", Counts: g.Collect()})
		default:
			emit(event{Event: "error", Error: fmt.Sprintf("unknown command %q", c.Cmd)})
		}
	}
	close(done)
	wg.Wait()
	emit(event{Event: "result", Result: g.Stop()})
	return nil
}

// generator is a set of subscribers the coordinator drives: in this
// process or in a child process. Calls come from one goroutine at a time.
type generator interface {
	Connect(ctx context.Context, progress func(Progress)) error
	// Start begins a step and returns once frames count toward it.
	Start(ctx context.Context, step Step) error
	Progress() Progress
	// Collect reads the current step's counts; connections stay open.
	Collect(ctx context.Context) (*Counts, error)
	Stop(ctx context.Context) (*Result, error)
	// Usage samples the generator process; nil when it is this process.
	Usage() procstat.Source
}

type localGenerator struct{ g *Generator }

func (l localGenerator) Connect(ctx context.Context, progress func(Progress)) error {
	return l.g.Connect(ctx, progress)
}
func (l localGenerator) Start(_ context.Context, step Step) error { return l.g.Start(step) }
func (l localGenerator) Progress() Progress                       { return l.g.Progress() }
func (l localGenerator) Collect(context.Context) (*Counts, error) { return l.g.Collect(), nil }
func (l localGenerator) Stop(context.Context) (*Result, error)    { return l.g.Stop(), nil }
func (l localGenerator) Usage() procstat.Source                   { return nil }

// remoteGenerator is a `fluxbench fanout-worker` child.
type remoteGenerator struct {
	spec     Spec
	p        *harness.Process
	progress atomic.Pointer[Progress]
	ready    chan error   // the connect phase's outcome
	replies  chan event   // answers to start and collect
	result   chan *Result // the final result
	wg       sync.WaitGroup
}

func startRemote(self string, spec Spec) (*remoteGenerator, error) {
	p, err := harness.Start(self, nil, "fanout-worker")
	if err != nil {
		return nil, err
	}
	r := &remoteGenerator{spec: spec, p: p, ready: make(chan error, 1), replies: make(chan event, 4), result: make(chan *Result, 1)}
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
				continue
			}
			r.replies <- ev
		case "started", "counts":
			r.replies <- ev
		case "result":
			r.result <- ev.Result
		}
	}
	if !readySent {
		r.ready <- fmt.Errorf("generator exited: %s", r.p.Stderr())
	}
	close(r.replies)
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

// ask sends a command and waits for the reply event named want.
func (r *remoteGenerator) ask(ctx context.Context, c command, want string) (event, error) {
	if err := r.p.Send(c); err != nil {
		return event{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	select {
	case ev, ok := <-r.replies:
		if !ok {
			return event{}, fmt.Errorf("generator exited: %s", r.p.Stderr())
		}
		if ev.Event == "error" {
			return event{}, errors.New(ev.Error)
		}
		if ev.Event != want {
			return event{}, fmt.Errorf("generator answered %s to %s", ev.Event, c.Cmd)
		}
		return ev, nil
	case <-ctx.Done():
		return event{}, fmt.Errorf("generator %s: %w", c.Cmd, ctx.Err())
	}
}

func (r *remoteGenerator) Start(ctx context.Context, step Step) error {
	_, err := r.ask(ctx, command{Cmd: "start", Step: &step}, "started")
	return err
}

func (r *remoteGenerator) Collect(ctx context.Context) (*Counts, error) {
	ev, err := r.ask(ctx, command{Cmd: "collect"}, "counts")
	return ev.Counts, err
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
