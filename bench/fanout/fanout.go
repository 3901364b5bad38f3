// Package fanout is the realtime fan-out scenario: S websocket subscribers
// (in generator processes apart from the server) follow one channel while
// messages are published, and the run reports deliveries per second, loss,
// publish → client latency percentiles, how long one message takes to
// reach every subscriber, the server's CPU per delivery and its memory per
// idle connection.
//
// Subscribers connect once per target and sit idle (the memory reading);
// then the steps run one after the other on the same connections: one per
// deliveries/s target (-deliveries, the message rate being target ÷
// subscribers) or a single -rate step, and with -saturate a ramp that goes
// on until a step fails. Every step's figures, the saturation point and the
// realtime acceptance goals (goals.go) are judged from what was measured.
//
// Two targets run in the same invocation, one after the other:
//
//   - baseline: the bare broadcaster of bench/baseline, which writes one
//     prepared frame to every connection — the limit of this machine and
//     this generator;
//   - fluxbase: nodes speaking Supabase's realtime protocol (vsn 2.0.0),
//     fed by INSERTs into a table (postgres_changes) or by client
//     broadcasts. It is probed first (connect and phx_join) and reported as
//     not available while the endpoint does not exist. With RLSUsers the
//     table has a row-level policy and every subscriber joins with its own
//     user's token (rls.go); the baseline has no such notion.
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
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fluxbase/fluxbase/bench"
	"github.com/fluxbase/fluxbase/bench/baseline"
	"github.com/fluxbase/fluxbase/bench/harness"
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
	Subscribers int     // default 2000
	Rate        float64 // messages per second of the single step without Deliveries; default 100
	// Deliveries lists the steps' targets in deliveries per second; each
	// step publishes target ÷ Subscribers messages per second. Empty means
	// one step at Rate.
	Deliveries   []float64
	Duration     time.Duration // publishing time per step; default 20 s
	PayloadBytes int           // about this many bytes of payload; default 128
	Mode         string        // ModeChanges (default) or ModeBroadcast
	Targets      []string      // default baseline and fluxbase
	Nodes        int           // Fluxbase nodes (or baseline servers at least); default 1
	// BaselineWriters is the baseline server's writer goroutines; default 4.
	BaselineWriters int
	// InsertWriters is the number of connections inserting rows; default 4.
	InsertWriters int
	// Drain bounds the wait for deliveries after each step; default 5 s.
	Drain time.Duration
	// Idle is how long the connected subscribers sit idle before the
	// memory reading; default 3 s.
	Idle time.Duration
	// Pause is the quiet time between steps; default 1 s.
	Pause time.Duration

	// Saturate ramps the rate after the listed steps, SaturateIncrement
	// deliveries/s at a time (default 25000), each step SaturateDuration
	// long (default 5 s), until a step fails: achieved below
	// SaturateMinAchieved of the asked rate (default MinAchieved), loss, or
	// p99 above SaturateP99 (default 1 s). The ramp also ends after
	// SaturateSteps steps (default 40) or past SaturateMax deliveries/s
	// (0: no bound). Every step is judged by the same criteria.
	Saturate            bool
	SaturateIncrement   float64
	SaturateDuration    time.Duration
	SaturateMinAchieved float64
	SaturateP99         time.Duration
	SaturateSteps       int
	SaturateMax         float64

	// RLSUsers, when positive, puts a row-level membership policy on the
	// table and connects every Fluxbase subscriber with the token of one of
	// RLSUsers distinct users, all members of the room written to, beside
	// Outsiders subscribers (default 5) whose users are not (changes mode
	// only).
	RLSUsers  int
	Outsiders int

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
	if c.Idle <= 0 {
		c.Idle = 3 * time.Second
	}
	if c.Pause <= 0 {
		c.Pause = time.Second
	}
	if c.SaturateIncrement <= 0 {
		c.SaturateIncrement = 25000
	}
	if c.SaturateDuration <= 0 {
		c.SaturateDuration = 5 * time.Second
	}
	if c.SaturateMinAchieved <= 0 {
		c.SaturateMinAchieved = MinAchieved
	}
	if c.SaturateP99 <= 0 {
		c.SaturateP99 = DefaultSaturateP99
	}
	if c.SaturateSteps <= 0 {
		c.SaturateSteps = 40
	}
	if c.RLSUsers > 0 && c.Outsiders <= 0 {
		c.Outsiders = 5
	}
	if c.PerProcess <= 0 {
		c.PerProcess = 15000
	}
	if c.PerSource <= 0 {
		c.PerSource = 20000
	}
}

func (c *Config) validate() error {
	if c.Mode != ModeChanges && c.Mode != ModeBroadcast {
		return fmt.Errorf("fanout: mode %q: want changes or broadcast", c.Mode)
	}
	for _, d := range c.Deliveries {
		if d <= 0 {
			return fmt.Errorf("fanout: deliveries/s target %v: want a positive number", d)
		}
	}
	if c.RLSUsers > 0 && c.Mode != ModeChanges {
		return errors.New("fanout: row-level security applies to postgres_changes: -rls-users needs -mode changes")
	}
	return nil
}

// Data is a run's data: each target's measurement and the goal checks.
type Data struct {
	Targets []*TargetResult `json:"targets"`
	Goals   []Check         `json:"goals"`
}

// TargetResult is one target's measurement: its connections, their idle
// memory, and one StepResult per rate.
type TargetResult struct {
	Target         string         `json:"target"`
	Subscribers    int            `json:"subscribers"`
	Connected      int            `json:"connected"`
	ConnectFailed  int            `json:"connect_failed"`
	FailReasons    map[string]int `json:"connect_fail_reasons,omitempty"`
	Disconnects    map[string]int `json:"disconnects,omitempty"`
	ConnectSeconds float64        `json:"connect_seconds"`
	// ServerIdle and GeneratorIdle are the memory the idle connections
	// hold; nil when not measurable.
	ServerIdle    *IdleMemory   `json:"server_idle,omitempty"`
	GeneratorIdle *IdleMemory   `json:"generator_idle,omitempty"`
	Steps         []*StepResult `json:"steps"`
	Saturation    *Saturation   `json:"saturation,omitempty"`
	RLS           *RLSInfo      `json:"row_level_security,omitempty"`
}

// IdleMemory is a process group's resident memory before the subscribers
// connected and after they sat idle, and the growth per connection.
type IdleMemory struct {
	RSSBeforeBytes int64   `json:"rss_before_connect_bytes"`
	RSSIdleBytes   int64   `json:"rss_idle_bytes"`
	Connections    int     `json:"connections"`
	IdleSeconds    float64 `json:"idle_seconds"`
	PerConnBytes   float64 `json:"rss_per_idle_connection_bytes"`
}

// step returns the listed (not ramp) step at target deliveries/s.
func (r *TargetResult) step(target float64) *StepResult {
	for _, s := range r.Steps {
		if !s.Ramp && s.Target == target {
			return s
		}
	}
	return nil
}

// target is something to measure: where subscribers connect, how they
// join, who publishes, and how to sample the server.
type target struct {
	name     string
	urls     []string
	protocol bool
	topic    string
	join     json.RawMessage
	// joins, when set, is every subscriber's own join payload, and
	// outsiderJoins those of the subscribers the row-level policy leaves out.
	joins         []json.RawMessage
	outsiderJoins []json.RawMessage
	rls           *RLSInfo
	pub           publisher
	server        procstat.Source // nil when not measurable
	database      procstat.Source // PostgreSQL, when it runs here; nil otherwise
	stop          func()
}

// Run measures every configured target and returns the report.
func Run(ctx context.Context, cfg Config, env *harness.Env, p *bench.Progress) (*bench.Report, error) {
	cfg.defaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	rep := &bench.Report{
		Scenario: "fanout",
		Title:    "Realtime fan-out",
		About: "S websocket subscribers follow one channel. They connect once per target and sit idle " +
			"(memory per idle connection: the server's resident memory after that, less before connecting, per connection); " +
			"then messages are published in steps, one per deliveries/s target, at target ÷ S messages/s, on the same connections. " +
			"Latency runs from the send stamp in each message (taken just before the INSERT, or before the broadcast frame is queued) " +
			"to its receipt by a subscriber on the same machine. Deliveries/s count from the start of publishing to the later of the " +
			"last receipt and the scheduled end. Server CPU is that of the server processes alone (the Fluxbase nodes); " +
			"PostgreSQL's (its server and backends, when fluxbench started it) is shown apart. " +
			"The baseline is a bare websocket broadcaster (one prepared frame written to every connection, each in a write call of its own, " +
			"no protocol): what this machine and load generator do with no protocol at all, up to the baseline's own saturation " +
			"(a note says when it falls behind where Fluxbase keeps up).",
		Started: time.Now(),
		Machine: bench.DescribeMachine(),
	}
	if cfg.RLSUsers > 0 {
		// Its own report files: a plain run of the same day keeps its own.
		rep.Scenario, rep.Title = "fanout-rls", "Realtime fan-out with row-level security"
	}
	plan := cfg.plan()
	rep.AddParam("subscribers", cfg.Subscribers)
	if len(cfg.Deliveries) == 0 {
		rep.AddParam("rate (messages/s)", cfg.Rate)
	}
	steps := make([]string, len(plan))
	for i, s := range plan {
		steps[i] = fmt.Sprintf("%.0f/s (%.4g msg/s, %d messages)", s.Deliveries, s.Rate, s.Messages)
	}
	rep.AddParam("steps (deliveries/s target)", strings.Join(steps, ", "))
	rep.AddParam("duration per step", cfg.Duration)
	rep.AddParam("idle before the memory reading", cfg.Idle)
	rep.AddParam("drain bound / pause between steps", fmt.Sprintf("%s / %s", cfg.Drain, cfg.Pause))
	if cfg.Saturate {
		bound := "none"
		if cfg.SaturateMax > 0 {
			bound = fmt.Sprintf("%.0f/s", cfg.SaturateMax)
		}
		rep.AddParam("saturation ramp", fmt.Sprintf("+%.0f/s per %s step, at most %d steps, bound %s; a step fails below %.0f%% of the asked rate, on loss, or with p99 above %s",
			cfg.SaturateIncrement, cfg.SaturateDuration, cfg.SaturateSteps, bound, 100*cfg.SaturateMinAchieved, cfg.SaturateP99))
	}
	rep.AddParam("payload bytes", cfg.PayloadBytes)
	rep.AddParam("mode (Fluxbase feed)", cfg.Mode)
	if cfg.RLSUsers > 0 {
		rep.AddParam("row-level security (Fluxbase only)", fmt.Sprintf("%d distinct users, members of the room written to; %d outsiders", cfg.RLSUsers, cfg.Outsiders))
	}
	rep.AddParam("nodes", cfg.Nodes)
	rep.AddParam("baseline writer goroutines", cfg.BaselineWriters)
	rep.AddParam("subscribers per generator process", cfg.PerProcess)
	if cfg.RLSUsers > 0 && slices.Contains(cfg.Targets, TargetBaseline) {
		rep.Notes = append(rep.Notes, "Row-level security is Fluxbase's alone: the baseline has no notion of users or policies "+
			"and broadcasts every frame to every connection, so beside an RLS run it shows only the machine's limit.")
	}

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
		rep.AddOutcome(p, name, err)
		// A run cut short keeps the steps it measured.
		if res != nil {
			results = append(results, res)
		}
		if ctx.Err() != nil {
			break
		}
	}
	data := &Data{Targets: results, Goals: checkGoals(cfg, results)}
	if n := baselineNote(results); n != "" {
		rep.Notes = append(rep.Notes, n)
	}
	rep.Data = data
	addTables(rep, cfg, data)
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
		if err := createTable(ctx, pool, cfg.RLSUsers > 0, cfg.RLSUsers, cfg.Outsiders); err != nil {
			return fail(err)
		}
	}
	cluster, err = env.Fluxbase(ctx, dbURL, cfg.Nodes)
	if err != nil {
		return fail(err)
	}
	if cfg.RLSUsers > 0 && cluster.JWTSecret == "" {
		return fail(errors.New("-rls-users signs each subscriber's token with the nodes' JWT secret: it needs nodes started here, not -url"))
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
	if cfg.RLSUsers > 0 {
		// Tokens outlive any run: -timeout bounds it well below a day.
		users, err := userJoins(cluster.JWTSecret, 0, cfg.RLSUsers, bindings, 24*time.Hour)
		if err != nil {
			return fail(err)
		}
		t.joins = subscriberJoins(users, cfg.Subscribers)
		if t.outsiderJoins, err = userJoins(cluster.JWTSecret, cfg.RLSUsers, cfg.Outsiders, bindings, 24*time.Hour); err != nil {
			return fail(err)
		}
		t.join = t.joins[0]
		t.rls = &RLSInfo{Users: cfg.RLSUsers, Outsiders: cfg.Outsiders, Policy: Policy}
	}
	if err := probe(ctx, t.urls[0], t.topic, t.join); err != nil {
		return fail(err)
	}
	t.server = cluster.Usage()
	if env.DatabaseURL == "" {
		t.database = postmaster(ctx, pool)
	}
	if cfg.InProcess {
		t.server, t.database = nil, nil
	}
	switch cfg.Mode {
	case ModeChanges:
		ip := &insertPublisher{pool: pool, table: "public." + Table, writers: cfg.InsertWriters, payloadBytes: cfg.PayloadBytes}
		if cfg.RLSUsers > 0 {
			ip.room = Room
		}
		t.pub = ip
	case ModeBroadcast:
		bp, err := newBroadcastPublisher(ctx, t.urls[0], t.topic, cluster.AnonKey, cfg.PayloadBytes)
		if err != nil {
			return fail(fmt.Errorf("broadcast sender: %w", err))
		}
		t.pub = bp
	}
	return t, nil
}

// postmaster finds the local PostgreSQL server (the parent of a backend)
// to sample with its backends; nil when it cannot.
func postmaster(ctx context.Context, pool *pgxpool.Pool) procstat.Source {
	var backend int
	if err := pool.QueryRow(ctx, `select pg_backend_pid()`).Scan(&backend); err != nil {
		return nil
	}
	pid, err := procstat.Parent(backend)
	if err != nil || pid <= 1 {
		return nil
	}
	return procstat.Tree(pid)
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
