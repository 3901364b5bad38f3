package fanout

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/fluxbase/fluxbase/bench"
	"github.com/fluxbase/fluxbase/bench/harness"
	"github.com/fluxbase/fluxbase/bench/hist"
	"github.com/fluxbase/fluxbase/bench/procstat"
)

// session is one target's subscribers, connected once, idle for the
// memory reading, then driven through the steps one after the other.
type session struct {
	cfg       Config
	t         *target
	p         *bench.Progress
	gens      []generator
	outsiders generator      // subscribers the row-level policy leaves out; nil without it
	usage     procstat.Group // the generator processes
	res       *TargetResult

	steps        int   // steps started
	next         int64 // the next step's first seq
	disconnected int64 // subscribers lost before the current step
	start        time.Time
}

// measure connects the subscribers, reads the idle memory, runs the listed
// steps and the saturation ramp. On an error it returns what was measured
// so far with it.
func measure(ctx context.Context, cfg Config, env *harness.Env, p *bench.Progress, t *target) (*TargetResult, error) {
	s := &session{cfg: cfg, t: t, p: p, res: &TargetResult{Target: t.name, Subscribers: cfg.Subscribers, RLS: t.rls}}
	defer s.kill()
	if err := s.spawn(env); err != nil {
		return nil, err
	}
	if err := s.connect(ctx); err != nil {
		return nil, err
	}
	err := s.run(ctx)
	if cfg.Saturate {
		sat := saturation(s.res.Steps)
		s.res.Saturation = &sat
	}
	return s.res, errors.Join(err, s.stop(context.WithoutCancel(ctx)))
}

// run measures the listed steps, then ramps while every step passes.
func (s *session) run(ctx context.Context) error {
	var last float64
	for i, pl := range s.cfg.plan() {
		if i > 0 {
			sleep(ctx, s.cfg.Pause)
		}
		if err := s.step(ctx, pl); err != nil {
			return err
		}
		last = max(last, pl.Deliveries)
	}
	if !s.cfg.Saturate || anyFailed(s.res.Steps) {
		return nil
	}
	for taken := 0; ; taken++ {
		pl, ok := s.cfg.nextRamp(last, taken)
		if !ok {
			return nil
		}
		sleep(ctx, s.cfg.Pause)
		if err := s.step(ctx, pl); err != nil {
			return err
		}
		if !s.res.Steps[len(s.res.Steps)-1].Verdict.Pass {
			return nil
		}
		last = pl.Deliveries
	}
}

// spawn starts the generators, in child processes unless InProcess.
func (s *session) spawn(env *harness.Env) error {
	cfg, t := s.cfg, s.t
	perSource := 0
	if cfg.Subscribers > cfg.PerSource && loopback(t.urls[0]) {
		perSource = cfg.PerSource
	}
	for first := 0; first < cfg.Subscribers; first += cfg.PerProcess {
		n := min(cfg.PerProcess, cfg.Subscribers-first)
		spec := Spec{
			URLs: t.urls, Subscribers: n, First: first,
			Protocol: t.protocol, Topic: t.topic, JoinPayload: t.join,
			PerSource: perSource, DialConcurrency: cfg.DialConcurrency,
		}
		if t.joins != nil {
			spec.JoinPayloads = t.joins[first : first+n]
		}
		if cfg.InProcess {
			g, err := NewGenerator(spec)
			if err != nil {
				return err
			}
			s.gens = append(s.gens, localGenerator{g})
			continue
		}
		self, err := env.SelfPath()
		if err != nil {
			return err
		}
		r, err := startRemote(self, spec)
		if err != nil {
			return err
		}
		s.gens = append(s.gens, r)
		s.usage = append(s.usage, r.Usage())
	}
	if len(t.outsiderJoins) > 0 {
		// A handful of connections: they live in this process.
		g, err := NewGenerator(Spec{
			URLs: t.urls, Subscribers: len(t.outsiderJoins), First: cfg.Subscribers,
			Protocol: true, Topic: t.topic, JoinPayloads: t.outsiderJoins,
		})
		if err != nil {
			return err
		}
		s.outsiders = localGenerator{g}
	}
	return nil
}

// connect opens every subscriber at once, one bar for all, then lets them
// sit idle and reads the memory they hold.
func (s *session) connect(ctx context.Context) error {
	res := s.res
	srv0 := sample(ctx, s.t.server)
	gen0 := sample(ctx, sourceOrNil(s.usage))

	bar := s.p.Phase(s.t.name+" connect", float64(s.cfg.Subscribers), "subscribers")
	start := time.Now()
	progress := make([]Progress, len(s.gens))
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make([]error, len(s.gens)+1)
	for i, g := range s.gens {
		wg.Go(func() {
			errs[i] = g.Connect(ctx, func(pr Progress) {
				mu.Lock()
				progress[i] = pr
				var n int
				for _, q := range progress {
					n += q.Connected + q.Failed
				}
				mu.Unlock()
				bar.Set(float64(n))
			})
		})
	}
	if s.outsiders != nil {
		wg.Go(func() { errs[len(s.gens)] = s.outsiders.Connect(ctx, nil) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("connect subscribers: %w", err)
	}
	res.ConnectSeconds = time.Since(start).Seconds()
	for _, g := range s.gens {
		pr := g.Progress()
		res.Connected += pr.Connected
		res.ConnectFailed += pr.Failed
	}
	bar.Done(fmt.Sprintf("%d connected, %d failed", res.Connected, res.ConnectFailed))
	if res.Connected == 0 {
		return errors.New("no subscriber could connect")
	}
	conns := res.Connected
	if s.outsiders != nil {
		pr := s.outsiders.Progress()
		res.RLS.OutsidersConnected = pr.Connected
		conns += pr.Connected
	}
	sleep(ctx, s.cfg.Idle)
	srv1 := sample(ctx, s.t.server)
	gen1 := sample(ctx, sourceOrNil(s.usage))
	res.ServerIdle = idleMemory(srv0, srv1, conns, s.cfg.Idle)
	res.GeneratorIdle = idleMemory(gen0, gen1, conns, s.cfg.Idle)
	return ctx.Err()
}

// idleMemory is the growth of resident memory from before connecting to
// after the subscribers sat idle, per connection.
func idleMemory(before, after *procstat.Sample, conns int, idle time.Duration) *IdleMemory {
	if before == nil || after == nil || conns <= 0 {
		return nil
	}
	return &IdleMemory{
		RSSBeforeBytes: before.RSSBytes, RSSIdleBytes: after.RSSBytes, Connections: conns,
		IdleSeconds:  idle.Seconds(),
		PerConnBytes: float64(after.RSSBytes-before.RSSBytes) / float64(conns),
	}
}

// step publishes one rate's messages, waits for them to arrive (or for the
// drain bound), and reads every generator's counts.
func (s *session) step(ctx context.Context, pl stepPlan) error {
	cfg := s.cfg
	s.steps++
	step := Step{
		Index: s.steps, First: s.next, Messages: pl.Messages,
		Seconds: int(pl.Duration.Seconds()+cfg.Drain.Seconds()) + 5,
	}
	s.next += int64(pl.Messages)
	t0 := time.Now()
	if s.start.IsZero() {
		s.start = t0
	}
	step.T0 = t0.UnixNano()
	for _, g := range s.all() {
		if err := g.Start(ctx, step); err != nil {
			return fmt.Errorf("start step: %w", err)
		}
	}
	st := &StepResult{Target: pl.Deliveries, Rate: pl.Rate, Ramp: pl.Ramp, Asked: pl.Rate * float64(s.res.Connected),
		Offset: t0.Sub(s.start).Seconds()}
	srvA := sample(ctx, s.t.server)
	dbA := sample(ctx, s.t.database)
	genA := sample(ctx, sourceOrNil(s.usage))

	label := fmt.Sprintf("%s %s/s", s.t.name, fmtRate(pl.Deliveries))
	bar := s.p.Phase(label, pl.Duration.Seconds(), "s")
	pctx, stopBar := context.WithCancel(ctx)
	var barWG sync.WaitGroup
	barWG.Go(func() {
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-pctx.Done():
				return
			case <-tick.C:
				bar.Set(time.Since(t0).Seconds())
			}
		}
	})
	pub, perr := s.t.pub.Publish(ctx, step.First, pl.Messages, pl.Rate)
	stopBar()
	barWG.Wait()
	bar.Done(fmt.Sprintf("%d of %d messages sent", pub.Sent, pl.Messages))
	st.Publish = pub
	if perr != nil && ctx.Err() != nil {
		return perr
	}
	if perr != nil {
		st.Publish.Errors = append(st.Publish.Errors, perr.Error())
	}

	// Drain: wait until every connected subscriber has every sent message,
	// or the bound passes.
	expected := int64(pub.Sent) * int64(s.res.Connected)
	deadline := time.Now().Add(cfg.Drain)
	for s.deliveries(step.Index) < expected && time.Now().Before(deadline) && ctx.Err() == nil {
		sleep(ctx, 20*time.Millisecond)
	}
	srvB := sample(ctx, s.t.server)
	dbB := sample(ctx, s.t.database)
	genB := sample(ctx, sourceOrNil(s.usage))

	counts := &Counts{Latency: hist.New()}
	cctx := context.WithoutCancel(ctx)
	for _, g := range s.gens {
		c, err := g.Collect(cctx)
		if err != nil {
			return fmt.Errorf("collect step counts: %w", err)
		}
		counts.Merge(c)
	}
	if s.outsiders != nil {
		c, err := s.outsiders.Collect(cctx)
		if err != nil {
			return fmt.Errorf("collect outsiders' counts: %w", err)
		}
		st.Outsiders = &Outsiders{Subscribers: len(s.t.outsiderJoins), Connected: s.res.RLS.OutsidersConnected,
			Rows: c.Deliveries + c.Duplicates + c.Unknown}
	}
	st.Accounting = counts.Account(pub.sent)
	st.latency = counts.Latency
	st.Latency = counts.Latency.Summary()
	st.LateFrames = counts.Unknown
	st.Disconnects = counts.Disconnected - s.disconnected
	s.disconnected = counts.Disconnected
	scheduled := time.Duration(float64(pl.Messages) / pl.Rate * float64(time.Second))
	st.DeliveriesPerSec, st.WindowSeconds = achieved(st.Accounting.Delivered, step.T0, counts.LastReceipt(), scheduled)
	st.PerSecond = trimSeries(counts.PerSecond, st.WindowSeconds)
	st.Server = usageBetween(srvA, srvB, st.Accounting.Delivered)
	st.Database = usageBetween(dbA, dbB, st.Accounting.Delivered)
	st.Generator = usageBetween(genA, genB, st.Accounting.Delivered)
	st.Verdict = judge(st, cfg.SaturateMinAchieved, cfg.SaturateP99)
	s.res.Steps = append(s.res.Steps, st)
	return nil
}

// all is every generator, the outsiders' included.
func (s *session) all() []generator {
	if s.outsiders == nil {
		return s.gens
	}
	return append(slices.Clip(s.gens), s.outsiders)
}

// deliveries sums the generators' deliveries of step index.
func (s *session) deliveries(index int) int64 {
	var n int64
	for _, g := range s.gens {
		if pr := g.Progress(); pr.Step == index {
			n += pr.Deliveries
		}
	}
	return n
}

// stop closes every subscriber and gathers why some failed or went away.
func (s *session) stop(ctx context.Context) error {
	var errs []error
	for _, g := range s.all() {
		r, err := g.Stop(ctx)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if g == s.outsiders {
			continue
		}
		s.res.FailReasons = mergeReasons(s.res.FailReasons, r.FailReasons)
		s.res.Disconnects = mergeReasons(s.res.Disconnects, r.Disconnects)
	}
	s.gens, s.outsiders = nil, nil
	return errors.Join(errs...)
}

// kill ends the generators an early return left running.
func (s *session) kill() {
	for _, g := range s.all() {
		if r, ok := g.(*remoteGenerator); ok {
			r.kill()
		} else {
			_, _ = g.Stop(context.Background())
		}
	}
}

func usageBetween(a, b *procstat.Sample, delivered int64) *StepUsage {
	if a == nil || b == nil {
		return nil
	}
	return stepUsage(b.CPUSeconds-a.CPUSeconds, b.At.Sub(a.At).Seconds(), delivered)
}

func sample(ctx context.Context, s procstat.Source) *procstat.Sample {
	if s == nil {
		return nil
	}
	v, err := s.Sample(ctx)
	if err != nil {
		return nil
	}
	return &v
}

func sourceOrNil(g procstat.Group) procstat.Source {
	if len(g) == 0 {
		return nil
	}
	return g
}

// fmtRate writes a deliveries/s figure compactly: 150k, 1.25M.
func fmtRate(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.4gM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.4gk", v/1e3)
	}
	return fmt.Sprintf("%.4g", v)
}
