package fanout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/fluxbase/fluxbase/bench/realtime"
)

// Spec is one generator's share of the subscribers.
type Spec struct {
	// URLs are websocket URLs; subscriber i connects to URLs[i % len].
	URLs        []string `json:"urls"`
	Subscribers int      `json:"subscribers"`
	// First is the global index of this generator's first subscriber; it
	// picks URLs and source addresses.
	First int `json:"first"`
	// Protocol joins Topic with JoinPayload after connecting; without it
	// (the bare baseline) subscribers only connect.
	Protocol    bool            `json:"protocol"`
	Topic       string          `json:"topic"`
	JoinPayload json.RawMessage `json:"join_payload,omitempty"`
	// JoinPayloads, when set, holds one join payload per subscriber of this
	// generator (each with its own access token), in place of JoinPayload.
	JoinPayloads []json.RawMessage `json:"join_payloads,omitempty"`
	// PerSource, when positive, dials subscriber i from 127.0.0.(1+i/PerSource)
	// so no source address runs out of ephemeral ports.
	PerSource       int           `json:"per_source"`
	DialConcurrency int           `json:"dial_concurrency"`
	DialTimeout     time.Duration `json:"dial_timeout"`
	JoinTimeout     time.Duration `json:"join_timeout"`
	Heartbeat       time.Duration `json:"heartbeat"`
}

// Step is one measured publishing phase: the messages with seq
// First..First+Messages-1, published from T0 on. Steps follow each other
// on the same connections; seqs never repeat across them, so a late frame
// of an earlier step is told apart.
type Step struct {
	Index    int   `json:"index"`
	T0       int64 `json:"t0"` // Unix ns
	First    int64 `json:"first"`
	Messages int   `json:"messages"`
	// Seconds is the length of the per-second delivery series.
	Seconds int `json:"seconds"`
}

func (s *Spec) defaults() {
	if s.DialConcurrency <= 0 {
		s.DialConcurrency = 32
	}
	if s.DialTimeout <= 0 {
		s.DialTimeout = 15 * time.Second
	}
	if s.JoinTimeout <= 0 {
		s.JoinTimeout = 10 * time.Second
	}
	if s.Heartbeat <= 0 {
		s.Heartbeat = realtime.HeartbeatInterval
	}
	if s.Topic == "" {
		s.Topic = "realtime:bench"
	}
}

// Progress is a generator's state while it runs; Deliveries are those of
// step Step.
type Progress struct {
	Connected  int   `json:"connected"`
	Failed     int   `json:"failed"`
	Step       int   `json:"step"`
	Deliveries int64 `json:"deliveries"`
}

// Result is what a generator hands back when it stops.
type Result struct {
	Connected   int            `json:"connected"`
	Failed      int            `json:"failed"`
	FailReasons map[string]int `json:"fail_reasons,omitempty"`
	// Disconnects are subscribers that lost their connection before Stop.
	Disconnects map[string]int `json:"disconnects,omitempty"`
}

// Generator holds subscribers in this process and tallies what they
// receive, one step at a time.
type Generator struct {
	spec  Spec
	tally atomic.Pointer[Tally] // the current step's; nil before the first
	step  atomic.Int64          // the current step's index

	mu   sync.Mutex // guards subs
	subs []*subscriber

	connected, failed atomic.Int64
	failReasons       disconnects
	lost              disconnects
	stopping          atomic.Bool

	hbOnce   sync.Once
	hbCancel context.CancelFunc
	wg       sync.WaitGroup // readers and the heartbeat loop
}

type subscriber struct {
	idx int // within this generator
	c   *websocket.Conn
}

// NewGenerator validates spec.
func NewGenerator(spec Spec) (*Generator, error) {
	spec.defaults()
	if len(spec.URLs) == 0 || spec.Subscribers <= 0 {
		return nil, errors.New("generator: need URLs and subscribers")
	}
	if spec.JoinPayloads != nil && len(spec.JoinPayloads) != spec.Subscribers {
		return nil, fmt.Errorf("generator: %d join payloads for %d subscribers", len(spec.JoinPayloads), spec.Subscribers)
	}
	return &Generator{spec: spec}, nil
}

// Progress reports connections so far and the current step's deliveries.
func (g *Generator) Progress() Progress {
	p := Progress{Connected: int(g.connected.Load()), Failed: int(g.failed.Load()), Step: int(g.step.Load())}
	if t := g.tally.Load(); t != nil {
		p.Deliveries = t.Deliveries()
	}
	return p
}

// Connect opens every subscriber (and joins, with Protocol), calling
// progress now and then. Subscribers that fail are counted, not retried.
func (g *Generator) Connect(ctx context.Context, progress func(Progress)) error {
	idx := make(chan int)
	var wg sync.WaitGroup
	for range min(g.spec.DialConcurrency, g.spec.Subscribers) {
		wg.Go(func() {
			for i := range idx {
				if err := g.connect(ctx, i); err != nil {
					g.failed.Add(1)
					g.failReasons.add(err.Error())
				}
			}
		})
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var err error
feed:
	for i := range g.spec.Subscribers {
		select {
		case idx <- i:
		case <-ctx.Done():
			err = ctx.Err()
			break feed
		case <-tick.C:
			if progress != nil {
				progress(g.Progress())
			}
			select {
			case idx <- i:
			case <-ctx.Done():
				err = ctx.Err()
				break feed
			}
		}
	}
	close(idx)
	wg.Wait()
	g.startHeartbeats()
	if progress != nil {
		progress(g.Progress())
	}
	return err
}

func (g *Generator) connect(ctx context.Context, i int) error {
	global := g.spec.First + i
	var local net.Addr
	if g.spec.PerSource > 0 {
		n := 1 + global/g.spec.PerSource
		local = &net.TCPAddr{IP: net.IPv4(127, byte(n>>16), byte(n>>8), byte(n))}
	}
	url := g.spec.URLs[global%len(g.spec.URLs)]
	dctx, cancel := context.WithTimeout(ctx, g.spec.DialTimeout)
	defer cancel()
	c, err := realtime.Dial(dctx, realtime.Dialer(local, g.spec.DialTimeout), url)
	if err != nil {
		return err
	}
	if g.spec.Protocol {
		join := g.spec.JoinPayload
		if g.spec.JoinPayloads != nil {
			join = g.spec.JoinPayloads[i]
		}
		if err := realtime.Join(c, "1", g.spec.Topic, join, g.spec.JoinTimeout); err != nil {
			c.Close()
			return err
		}
	}
	s := &subscriber{idx: i, c: c}
	g.mu.Lock()
	if g.stopping.Load() {
		g.mu.Unlock()
		c.Close()
		return errors.New("generator stopping")
	}
	g.subs = append(g.subs, s)
	g.wg.Add(1)
	g.mu.Unlock()
	g.connected.Add(1)
	go g.read(s)
	return nil
}

// read receives frames until the connection ends.
func (g *Generator) read(s *subscriber) {
	defer g.wg.Done()
	buf := make([]byte, 0, 1024)
	for {
		_, r, err := s.c.NextReader()
		if err != nil {
			if !g.stopping.Load() {
				g.lost.add(err.Error())
			}
			return
		}
		buf, err = readAll(r, buf[:0])
		if err != nil {
			if !g.stopping.Load() {
				g.lost.add(err.Error())
			}
			return
		}
		if t := g.tally.Load(); t != nil {
			t.Observe(s.idx, buf, time.Now())
		}
	}
}

// readAll is io.ReadAll into a reused buffer.
func readAll(r io.Reader, b []byte) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// startHeartbeats sends heartbeats from now until Stop, as supabase-js
// does, spread evenly over the interval so they do not arrive in one burst.
func (g *Generator) startHeartbeats() {
	g.hbOnce.Do(func() {
		ctx, cancel := context.WithCancel(context.Background())
		g.mu.Lock()
		g.hbCancel = cancel
		g.mu.Unlock()
		g.wg.Add(1)
		go g.heartbeats(ctx)
	})
}

// Start begins a step: from now on frames count toward a fresh tally.
func (g *Generator) Start(step Step) error {
	if step.Messages <= 0 {
		return errors.New("generator: a step needs messages")
	}
	// One bit per (subscriber, message) pair must stay reasonable.
	if bits := int64(g.spec.Subscribers) * int64(step.Messages); bits > 8<<33 {
		return fmt.Errorf("generator: %d subscribers × %d messages needs %d MiB of receipt bits; lower the rate or the duration",
			g.spec.Subscribers, step.Messages, bits/8/(1<<20))
	}
	t := NewTally(g.spec.Subscribers, step.First, step.Messages, step.Seconds)
	t.Start(time.Unix(0, step.T0))
	g.tally.Store(t)
	g.step.Store(int64(step.Index))
	return nil
}

// Collect reads the current step's tally for the subscribers that
// connected; nil before the first step. Connections stay open.
func (g *Generator) Collect() *Counts {
	t := g.tally.Load()
	if t == nil {
		return nil
	}
	g.mu.Lock()
	idx := make([]int, len(g.subs))
	for i, s := range g.subs {
		idx[i] = s.idx
	}
	g.mu.Unlock()
	c := t.Counts(idx)
	c.Disconnected = int64(g.lost.total())
	return c
}

func (g *Generator) heartbeats(ctx context.Context) {
	defer g.wg.Done()
	const step = 100 * time.Millisecond
	tick := time.NewTicker(step)
	defer tick.Stop()
	var next int
	var ref uint64 = 1
	carry := 0.0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		g.mu.Lock()
		subs := g.subs
		g.mu.Unlock()
		if len(subs) == 0 {
			continue
		}
		carry += float64(len(subs)) * float64(step) / float64(g.spec.Heartbeat)
		for ; carry >= 1; carry-- {
			s := subs[next%len(subs)]
			next++
			ref++
			// Only this loop writes after the join, so no write lock.
			_ = s.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_ = s.c.WriteMessage(websocket.TextMessage, realtime.HeartbeatFrame(realtime.Ref(ref)))
		}
	}
}

// Stop closes every subscriber, waits for the readers and returns the
// result. Call it once.
func (g *Generator) Stop() *Result {
	g.mu.Lock()
	g.stopping.Store(true)
	subs := g.subs
	cancel := g.hbCancel
	g.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	for _, s := range subs {
		s.c.Close()
	}
	g.wg.Wait()
	return &Result{
		Connected:   int(g.connected.Load()),
		Failed:      int(g.failed.Load()),
		FailReasons: g.failReasons.snapshot(),
		Disconnects: g.lost.snapshot(),
	}
}
