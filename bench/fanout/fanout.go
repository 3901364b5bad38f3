// Package fanout is the realtime fan-out scenario: S websocket subscribers
// (in generator processes apart from the server) follow one channel while
// messages are published at R per second, and the run reports deliveries
// per second, loss, publish → client latency percentiles, how long one
// message takes to reach every subscriber, and the server's CPU and memory
// per connection.
//
// Two targets run in the same invocation, one after the other:
//
//   - baseline: the bare broadcaster of bench/baseline, which writes one
//     prepared frame to every connection — the limit of this machine and
//     this generator;
//   - fluxbase: nodes speaking Supabase's realtime protocol (vsn 2.0.0),
//     fed by INSERTs into a table (postgres_changes) or by client
//     broadcasts. It is probed first (connect and phx_join) and reported as
//     not available while the endpoint does not exist.
//
// Every message carries its sequence number and its send time in Unix
// nanoseconds ("bench_seq", "bench_ts": names no server field uses).
// Generators find both by a byte search, so their cost per delivery is
// small and the same for every target. Sender and receivers share this
// machine's clock.
package fanout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fluxbase/fluxbase/bench"
	"github.com/fluxbase/fluxbase/bench/baseline"
	"github.com/fluxbase/fluxbase/bench/harness"
	"github.com/fluxbase/fluxbase/bench/hist"
	"github.com/fluxbase/fluxbase/bench/procstat"
	"github.com/fluxbase/fluxbase/bench/realtime"
)

// Modes of feeding Fluxbase.
const (
	ModeChanges   = "changes"   // INSERTs into a table, delivered as postgres_changes
	ModeBroadcast = "broadcast" // client broadcasts on the channel
)

// Target names.
const (
	TargetBaseline = "baseline"
	TargetFluxbase = "fluxbase"
)

// Table is the table the changes mode writes.
const Table = "fluxbench_fanout"

// Config is one fanout run; zero values mean defaults.
type Config struct {
	Subscribers  int           // default 2000
	Rate         float64       // messages per second; default 100
	Duration     time.Duration // publishing time; default 20 s
	PayloadBytes int           // about this many bytes of payload; default 128
	Mode         string        // ModeChanges (default) or ModeBroadcast
	Targets      []string      // default baseline and fluxbase
	Nodes        int           // Fluxbase nodes (or baseline servers at least); default 1
	// BaselineWriters is the baseline server's writer goroutines; default 4.
	BaselineWriters int
	// InsertWriters is the number of connections inserting rows; default 4.
	InsertWriters int
	// Drain bounds the wait for deliveries after publishing; default 5 s.
	Drain time.Duration
	// PerProcess caps subscribers per generator process and connections
	// per baseline server (open files are capped per process); default 15000.
	PerProcess int
	// PerSource caps connections per client source address; default 20000.
	PerSource       int
	DialConcurrency int // per generator; default 32
	// InProcess runs generators and baseline servers inside this process
	// (for tests); CPU and memory are then not measured.
	InProcess bool
}

func (c *Config) defaults() {
	if c.Subscribers <= 0 {
		c.Subscribers = 2000
	}
	if c.Rate <= 0 {
		c.Rate = 100
	}
	if c.Duration <= 0 {
		c.Duration = 20 * time.Second
	}
	if c.PayloadBytes <= 0 {
		c.PayloadBytes = 128
	}
	if c.Mode == "" {
		c.Mode = ModeChanges
	}
	if len(c.Targets) == 0 {
		c.Targets = []string{TargetBaseline, TargetFluxbase}
	}
	if c.Nodes <= 0 {
		c.Nodes = 1
	}
	if c.BaselineWriters <= 0 {
		c.BaselineWriters = 4
	}
	if c.InsertWriters <= 0 {
		c.InsertWriters = 4
	}
	if c.Drain <= 0 {
		c.Drain = 5 * time.Second
	}
	if c.PerProcess <= 0 {
		c.PerProcess = 15000
	}
	if c.PerSource <= 0 {
		c.PerSource = 20000
	}
}

// Messages is how many messages the run publishes.
func (c Config) Messages() int { return max(int(math.Ceil(c.Rate*c.Duration.Seconds())), 1) }

// TargetResult is one target's measurement.
type TargetResult struct {
	Target         string         `json:"target"`
	Subscribers    int            `json:"subscribers"`
	Connected      int            `json:"connected"`
	ConnectFailed  int            `json:"connect_failed"`
	FailReasons    map[string]int `json:"connect_fail_reasons,omitempty"`
	Disconnects    map[string]int `json:"disconnects,omitempty"`
	ConnectSeconds float64        `json:"connect_seconds"`
	Publish        PublishStats   `json:"publish"`
	Accounting     Accounting     `json:"accounting"`
	Latency        hist.Summary   `json:"latency_ns"`
	// WindowSeconds runs from the start of publishing until every delivery
	// arrived (or the drain bound passed).
	WindowSeconds    float64 `json:"window_seconds"`
	DeliveriesPerSec float64 `json:"deliveries_per_second"`
	Server           *Usage  `json:"server,omitempty"`
	Generator        *Usage  `json:"generator,omitempty"`
	PerSecond        []int64 `json:"deliveries_per_second_series"`

	latency *hist.Histogram
}

// Usage is a process group's CPU and memory during a run.
type Usage struct {
	Cores float64 `json:"cores"`
	// RSSPerConn is the growth of resident memory while the subscribers
	// connected, per connection, in bytes.
	RSSPerConn float64 `json:"rss_per_connection_bytes"`
	RSSBytes   int64   `json:"rss_bytes"`
}

// target is something to measure: where subscribers connect, how they
// join, who publishes, and how to sample the server.
type target struct {
	name     string
	urls     []string
	protocol bool
	topic    string
	join     json.RawMessage
	pub      publisher
	server   procstat.Source // nil when not measurable
	stop     func()
}

// Run measures every configured target and returns the report.
func Run(ctx context.Context, cfg Config, env *harness.Env, p *bench.Progress) (*bench.Report, error) {
	cfg.defaults()
	if cfg.Mode != ModeChanges && cfg.Mode != ModeBroadcast {
		return nil, fmt.Errorf("fanout: mode %q: want changes or broadcast", cfg.Mode)
	}
	rep := &bench.Report{
		Scenario: "fanout",
		Title:    "Realtime fan-out",
		About: "S websocket subscribers follow one channel while messages are published at R per second. " +
			"Latency runs from the send stamp in each message (taken just before the INSERT, or before the broadcast frame is queued) " +
			"to its receipt by a subscriber on the same machine. The baseline is a bare websocket broadcaster " +
			"(one prepared frame written to every connection, no protocol): the limit of this machine and load generator.",
		Started: time.Now(),
		Machine: bench.DescribeMachine(),
	}
	rep.AddParam("subscribers", cfg.Subscribers)
	rep.AddParam("rate (messages/s)", cfg.Rate)
	rep.AddParam("duration", cfg.Duration)
	rep.AddParam("messages", cfg.Messages())
	rep.AddParam("payload bytes", cfg.PayloadBytes)
	rep.AddParam("mode (Fluxbase feed)", cfg.Mode)
	rep.AddParam("nodes", cfg.Nodes)
	rep.AddParam("baseline writer goroutines", cfg.BaselineWriters)
	rep.AddParam("subscribers per generator process", cfg.PerProcess)

	var results []*TargetResult
	for _, name := range cfg.Targets {
		var res *TargetResult
		var err error
		switch name {
		case TargetBaseline:
			res, err = runTarget(ctx, cfg, env, p, func(ctx context.Context) (*target, error) { return baselineTarget(ctx, cfg, env) })
		case TargetFluxbase:
			res, err = runTarget(ctx, cfg, env, p, func(ctx context.Context) (*target, error) { return fluxbaseTarget(ctx, cfg, env, rep) })
		default:
			err = fmt.Errorf("unknown target %q (want baseline or fluxbase)", name)
		}
		o := bench.OutcomeOf(name, err)
		rep.Targets = append(rep.Targets, o)
		if o.Status != bench.StatusOK {
			p.Logf("fanout %s: %s: %s", name, o.Status, o.Reason)
		}
		if res != nil && err == nil {
			results = append(results, res)
		}
		if ctx.Err() != nil {
			break
		}
	}
	rep.Data = results
	addTables(rep, cfg, results)
	rep.Elapsed = time.Since(rep.Started).Seconds()
	return rep, ctx.Err()
}

func runTarget(ctx context.Context, cfg Config, env *harness.Env, p *bench.Progress, setup func(context.Context) (*target, error)) (*TargetResult, error) {
	t, err := setup(ctx)
	if err != nil {
		return nil, err
	}
	defer t.stop()
	return measure(ctx, cfg, env, p, t)
}

// baselineTarget starts enough baseline servers for the subscribers.
func baselineTarget(ctx context.Context, cfg Config, env *harness.Env) (*target, error) {
	n := max(cfg.Nodes, (cfg.Subscribers+cfg.PerProcess-1)/cfg.PerProcess)
	t := &target{name: TargetBaseline, topic: "realtime:bench"}
	var httpURLs []string
	var stops []func()
	var sources procstat.Group
	t.stop = func() {
		for _, s := range stops {
			s()
		}
	}
	for range n {
		var addr string
		if cfg.InProcess {
			sctx, cancel := context.WithCancel(context.Background())
			ready := make(chan string, 1)
			done := make(chan error, 1)
			go func() {
				done <- baseline.ListenAndServe(sctx, "127.0.0.1:0", baseline.Config{Writers: cfg.BaselineWriters},
					func(a net.Addr) { ready <- a.String() })
			}()
			select {
			case addr = <-ready:
			case err := <-done:
				cancel()
				t.stop()
				return nil, err
			}
			stops = append(stops, func() { cancel(); <-done })
		} else {
			self, err := env.SelfPath()
			if err != nil {
				t.stop()
				return nil, err
			}
			proc, err := harness.Start(self, nil, "baseline-server", "-addr", "127.0.0.1:0", "-writers", fmt.Sprint(cfg.BaselineWriters))
			if err != nil {
				t.stop()
				return nil, err
			}
			stops = append(stops, func() { _ = proc.Stop(10 * time.Second) })
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			line, err := proc.WaitLine(wctx)
			cancel()
			if err != nil {
				t.stop()
				return nil, fmt.Errorf("baseline server: %w", err)
			}
			var ready struct {
				Addr string `json:"addr"`
			}
			if err := json.Unmarshal(line, &ready); err != nil || ready.Addr == "" {
				t.stop()
				return nil, fmt.Errorf("baseline server said %q", line)
			}
			addr = ready.Addr
			sources = append(sources, procstat.PID(proc.PID()))
		}
		httpURLs = append(httpURLs, "http://"+addr)
		t.urls = append(t.urls, "ws://"+addr+"/ws")
	}
	if !cfg.InProcess {
		t.server = sources
	}
	t.pub = &baselinePublisher{urls: httpURLs, topic: t.topic, payloadBytes: cfg.PayloadBytes}
	return t, nil
}

// fluxbaseTarget starts (or finds) the nodes, prepares the table and
// probes the realtime endpoint.
func fluxbaseTarget(ctx context.Context, cfg Config, env *harness.Env, rep *bench.Report) (*target, error) {
	if per := (cfg.Subscribers + cfg.Nodes - 1) / cfg.Nodes; per > cfg.PerProcess && len(env.FluxbaseURLs) == 0 {
		return nil, fmt.Errorf("%d subscribers per node exceed %d open connections per process: use -nodes %d",
			per, cfg.PerProcess, (cfg.Subscribers+cfg.PerProcess-1)/cfg.PerProcess)
	}
	if len(env.FluxbaseURLs) > 0 && env.DatabaseURL == "" && cfg.Mode == ModeChanges {
		return nil, errors.New("changes mode against nodes given with -url needs -db, their database")
	}
	dbURL, err := env.Database(ctx, "fluxbench_fanout")
	if err != nil {
		return nil, err
	}
	rep.Machine.PostgreSQL = harness.PostgresVersion(ctx, dbURL)
	if err := env.Migrate(ctx, dbURL); err != nil {
		return nil, err
	}
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return nil, fmt.Errorf("connect to the database: %w", err)
	}
	t := &target{name: TargetFluxbase, protocol: true, topic: "realtime:fluxbench"}
	var cluster *harness.Cluster
	t.stop = func() {
		if t.pub != nil {
			t.pub.Close()
		}
		pool.Close()
		if cluster != nil {
			cluster.Stop()
		}
	}
	fail := func(err error) (*target, error) {
		t.stop()
		return nil, err
	}
	if cfg.Mode == ModeChanges {
		if _, err := pool.Exec(ctx, `create table if not exists public.`+Table+` (
			id bigserial primary key, bench_seq bigint not null, bench_ts bigint not null, pad text not null default '')`); err != nil {
			return fail(fmt.Errorf("create %s: %w", Table, err))
		}
		if _, err := pool.Exec(ctx, `grant select on public.`+Table+` to anon, authenticated`); err != nil {
			return fail(fmt.Errorf("grant select on %s: %w", Table, err))
		}
	}
	cluster, err = env.Fluxbase(ctx, dbURL, cfg.Nodes)
	if err != nil {
		return fail(err)
	}
	rep.Machine.Fluxbase = cluster.Version
	for _, n := range cluster.Nodes {
		u, err := url.Parse(n.URL)
		if err != nil {
			return fail(fmt.Errorf("node URL %s: %w", n.URL, err))
		}
		scheme := "ws"
		if u.Scheme == "https" {
			scheme = "wss"
		}
		q := url.Values{"apikey": {cluster.AnonKey}, "vsn": {"2.0.0"}}
		t.urls = append(t.urls, scheme+"://"+u.Host+"/realtime/v1/websocket?"+q.Encode())
	}
	var bindings []realtime.Binding
	if cfg.Mode == ModeChanges {
		bindings = []realtime.Binding{{Event: "INSERT", Schema: "public", Table: Table}}
	}
	t.join = realtime.JoinPayload(cluster.AnonKey, bindings)
	if err := probe(ctx, t.urls[0], t.topic, t.join); err != nil {
		return fail(err)
	}
	t.server = cluster.Usage()
	if cfg.InProcess {
		t.server = nil
	}
	switch cfg.Mode {
	case ModeChanges:
		t.pub = &insertPublisher{pool: pool, table: "public." + Table, writers: cfg.InsertWriters, payloadBytes: cfg.PayloadBytes}
	case ModeBroadcast:
		bp, err := newBroadcastPublisher(ctx, t.urls[0], t.topic, cluster.AnonKey, cfg.PayloadBytes)
		if err != nil {
			return fail(fmt.Errorf("broadcast sender: %w", err))
		}
		t.pub = bp
	}
	return t, nil
}

// probe connects and joins once; a missing endpoint or an unanswered join
// means the feature is not there yet.
func probe(ctx context.Context, wsURL, topic string, join json.RawMessage) error {
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	c, err := realtime.Dial(pctx, realtime.Dialer(nil, 10*time.Second), wsURL)
	if errors.Is(err, realtime.ErrEndpointMissing) {
		return bench.NotAvailable("%v", err)
	}
	if err != nil {
		return err
	}
	defer c.Close()
	err = realtime.Join(c, "1", topic, join, 10*time.Second)
	if errors.Is(err, realtime.ErrJoinTimeout) {
		return bench.NotAvailable("realtime endpoint not available: the websocket opened but phx_join got no reply")
	}
	return err
}

// measure connects the subscribers, publishes, drains and collects.
func measure(ctx context.Context, cfg Config, env *harness.Env, p *bench.Progress, t *target) (*TargetResult, error) {
	messages := cfg.Messages()
	seconds := int(cfg.Duration.Seconds()+cfg.Drain.Seconds()) + 5
	perSource := 0
	if cfg.Subscribers > cfg.PerSource && loopback(t.urls[0]) {
		perSource = cfg.PerSource
	}
	var gens []generator
	var usage procstat.Group
	defer func() {
		for _, g := range gens {
			if r, ok := g.(*remoteGenerator); ok {
				r.kill()
			}
		}
	}()
	for first := 0; first < cfg.Subscribers; first += cfg.PerProcess {
		spec := Spec{
			URLs: t.urls, Subscribers: min(cfg.PerProcess, cfg.Subscribers-first), First: first,
			Protocol: t.protocol, Topic: t.topic, JoinPayload: t.join,
			Messages: messages, Seconds: seconds, PerSource: perSource, DialConcurrency: cfg.DialConcurrency,
		}
		if cfg.InProcess {
			g, err := NewGenerator(spec)
			if err != nil {
				return nil, err
			}
			gens = append(gens, localGenerator{g})
			continue
		}
		self, err := env.SelfPath()
		if err != nil {
			return nil, err
		}
		r, err := startRemote(self, spec)
		if err != nil {
			return nil, err
		}
		gens = append(gens, r)
		usage = append(usage, r.Usage())
	}

	res := &TargetResult{Target: t.name, Subscribers: cfg.Subscribers}
	srv0 := sample(ctx, t.server)
	gen0 := sample(ctx, sourceOrNil(usage))

	// Connect every generator at once, one bar for all.
	bar := p.Phase(t.name+" connect", float64(cfg.Subscribers), "subscribers")
	start := time.Now()
	progress := make([]Progress, len(gens))
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make([]error, len(gens))
	for i, g := range gens {
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
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("connect subscribers: %w", err)
	}
	res.ConnectSeconds = time.Since(start).Seconds()
	for _, g := range gens {
		pr := g.Progress()
		res.Connected += pr.Connected
		res.ConnectFailed += pr.Failed
	}
	bar.Done(fmt.Sprintf("%d connected, %d failed", res.Connected, res.ConnectFailed))
	if res.Connected == 0 {
		return nil, errors.New("no subscriber could connect")
	}
	// Let the servers settle before measuring memory.
	sleep(ctx, time.Second)
	srv1 := sample(ctx, t.server)
	gen1 := sample(ctx, sourceOrNil(usage))

	t0 := time.Now()
	for _, g := range gens {
		if err := g.Start(t0); err != nil {
			return nil, err
		}
	}
	deliveries := func() int64 {
		var n int64
		for _, g := range gens {
			n += g.Progress().Deliveries
		}
		return n
	}
	pubBar := p.Phase(t.name+" publish", cfg.Duration.Seconds(), "s")
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
				pubBar.Set(time.Since(t0).Seconds())
			}
		}
	})
	pub, perr := t.pub.Publish(ctx, messages, cfg.Rate)
	stopBar()
	barWG.Wait()
	pubBar.Done(fmt.Sprintf("%d of %d messages sent", pub.Sent, messages))
	res.Publish = pub
	if perr != nil && ctx.Err() != nil {
		return nil, perr
	}
	if perr != nil {
		res.Publish.Errors = append(res.Publish.Errors, perr.Error())
	}

	// Drain: wait until every connected subscriber has every sent message,
	// or the bound passes.
	expected := int64(pub.Sent) * int64(res.Connected)
	deadline := time.Now().Add(cfg.Drain)
	for deliveries() < expected && time.Now().Before(deadline) && ctx.Err() == nil {
		sleep(ctx, 20*time.Millisecond)
	}
	end := time.Now()
	srv2 := sample(ctx, t.server)
	gen2 := sample(ctx, sourceOrNil(usage))

	counts := &Counts{Latency: hist.New()}
	for _, g := range gens {
		r, err := g.Stop(context.WithoutCancel(ctx))
		if err != nil {
			return nil, err
		}
		counts.Merge(r.Counts)
		res.FailReasons = mergeReasons(res.FailReasons, r.FailReasons)
		res.Disconnects = mergeReasons(res.Disconnects, r.Disconnects)
	}
	gens = nil
	res.Accounting = counts.Account(pub.sent)
	res.latency = counts.Latency
	res.Latency = counts.Latency.Summary()
	res.WindowSeconds = end.Sub(t0).Seconds()
	if res.WindowSeconds > 0 {
		res.DeliveriesPerSec = float64(res.Accounting.Delivered) / res.WindowSeconds
	}
	res.PerSecond = trimSeries(counts.PerSecond, res.WindowSeconds)
	res.Server = usageOf(srv0, srv1, srv2, res.Connected)
	res.Generator = usageOf(gen0, gen1, gen2, res.Connected)
	return res, nil
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

// usageOf turns samples before connecting (a), after connecting (b) and
// after the run (c) into CPU during the run and memory per connection.
func usageOf(a, b, c *procstat.Sample, conns int) *Usage {
	if a == nil || b == nil || c == nil {
		return nil
	}
	u := &Usage{Cores: procstat.Between(*b, *c).Cores, RSSBytes: c.RSSBytes}
	if conns > 0 {
		u.RSSPerConn = float64(b.RSSBytes-a.RSSBytes) / float64(conns)
	}
	return u
}

func mergeReasons(a, b map[string]int) map[string]int {
	if len(b) == 0 {
		return a
	}
	if a == nil {
		a = map[string]int{}
	}
	for k, v := range b {
		a[k] += v
	}
	return a
}

// trimSeries keeps the whole seconds of the per-second series within the window.
func trimSeries(s []int64, window float64) []int64 {
	n := min(len(s), max(int(window), 1)) // a partial last second would read as a drop
	return slices.Clone(s[:max(n, 0)])
}

func loopback(wsURL string) bool {
	u, err := url.Parse(wsURL)
	if err != nil {
		return false
	}
	ip := net.ParseIP(u.Hostname())
	return u.Hostname() == "localhost" || (ip != nil && ip.IsLoopback())
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
