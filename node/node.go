// Package node builds and runs one Fluxbase node from its configuration:
// the migrations, the database pools, the broker, the replication reader,
// the realtime hub and the HTTP edge with every API surface. `fluxbase
// serve` and `fluxbase dev`, the end-to-end tests and the benchmarks all
// build their nodes here, so there is one wiring to keep right.
//
// It owns the order of start-up and shutdown and nothing else: what each
// part does is its own package's business (docs/ARCHITECTURE.md has the
// map).
package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/fluxbase/fluxbase/api"
	apiauth "github.com/fluxbase/fluxbase/api/auth"
	"github.com/fluxbase/fluxbase/api/realtime"
	"github.com/fluxbase/fluxbase/api/rest"
	apistorage "github.com/fluxbase/fluxbase/api/storage"
	"github.com/fluxbase/fluxbase/auth"
	"github.com/fluxbase/fluxbase/broker"
	"github.com/fluxbase/fluxbase/broker/fanout"
	"github.com/fluxbase/fluxbase/change"
	"github.com/fluxbase/fluxbase/migrations"
	"github.com/fluxbase/fluxbase/pgrole"
	"github.com/fluxbase/fluxbase/replication"
	"github.com/fluxbase/fluxbase/storage"
)

// Config is a node's whole configuration, one section per subsystem, each
// in that subsystem's own type. FromEnv reads it from the environment;
// tests build it directly. Zero values mean defaults, and a node fills in
// what it derives (the broker's data folder and server name, the
// replication reader's database URL, ...).
type Config struct {
	// Name names the node in logs, metrics and the NATS cluster.
	Name string
	// DataDir holds the node's files (the broker's JetStream store).
	DataDir string
	// Debug logs at debug level and serves /debug/pprof/ to the service
	// key.
	Debug bool
	// Version is reported in the start-up log line.
	Version string

	HTTP        HTTPConfig
	Database    DatabaseConfig
	Auth        auth.Config
	Broker      broker.Config
	Replication replication.Config
	// Realtime tunes the fan-out hub; its NodeID defaults to Name.
	Realtime fanout.Config
	// RealtimeLimits bound what realtime clients may ask. Its
	// MaxConnections is lowered to what the open-file limit leaves
	// websockets (see FDBudget); 0 takes all of that.
	RealtimeLimits realtime.Limits
	// REST holds the REST surface's limits; the node gives it its pools,
	// the roles' settings and its log.
	REST    rest.Config
	Storage storage.Config
}

// HTTPConfig configures the node's HTTP edge.
type HTTPConfig struct {
	// Addr is the listening address; ":0" picks a free port (Node.Addr
	// tells which).
	Addr string
	// DrainTimeout bounds how long shutdown waits for requests in flight.
	DrainTimeout time.Duration
	// DrainDelay is how long a draining node keeps serving, with /ready
	// at 503, before it stops listening: the time a load balancer needs
	// to notice and send new requests elsewhere. Its websockets are
	// closed over the first half of it.
	DrainDelay time.Duration
	// BodyTimeout bounds how long a request body may take to arrive
	// (api.Config.BodyTimeout).
	BodyTimeout time.Duration
	// FDReserve is how many of the process's descriptors websockets never
	// take (see FDBudget); 0 means a quarter of the limit, at most 1024.
	FDReserve int
}

// DatabaseConfig configures the PostgreSQL pools.
type DatabaseConfig struct {
	// URL is the primary's connection URL.
	URL string
	// MaxConns and MinConns size each pool; 0 keeps pgx's defaults.
	MaxConns, MinConns int32
	MaxConnLifetime    time.Duration
	MaxConnIdleTime    time.Duration
	// ReadReplicas are host:port pairs (DATABASE_URL's user, password,
	// database and options) or URLs; REST reads go there in turn.
	ReadReplicas []string
	// SkipMigrations leaves the schema as it is (the caller migrated).
	SkipMigrations bool
	// RoleSettingsRefresh is how often the roles' own settings (ALTER
	// ROLE ... SET, such as anon's statement_timeout) are read again.
	// Default 30 s.
	RoleSettingsRefresh time.Duration
}

// Node is one running Fluxbase node.
type Node struct {
	cfg    Config
	log    *zap.Logger
	ln     *limitListener
	budget FDBudget

	pool     *pgxpool.Pool
	replicas []*pgxpool.Pool
	roles    *pgrole.Roles
	bus      *broker.Broker
	repl     *replication.Replicator
	rt       *realtime.Endpoint
	files    *storage.Store
	srv      *api.Server
	revs     *auth.Revocations

	reg       *prometheus.Registry
	started   time.Time
	draining  atomic.Bool
	closeOnce sync.Once
}

// errDraining is the readiness of a node that is shutting down.
var errDraining = errors.New("the node is shutting down")

// New builds a node: it listens first (so a port conflict is reported at
// once), applies the migrations, opens the database pools, starts the
// broker (which, clustered, waits for a majority of its peers), and builds
// the replication reader, the realtime hub and the HTTP edge. Nothing
// serves until Run. On error everything acquired is released.
func New(ctx context.Context, cfg Config, log *zap.Logger) (n *Node, err error) {
	if log == nil {
		log = zap.NewNop()
	}
	n = &Node{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	verifier, err := auth.NewVerifierWithKeys(cfg.Auth.JWTSecret, cfg.Auth.JWTKeys)
	if err != nil {
		return nil, err
	}
	if cfg.DataDir == "" {
		return nil, errors.New("node: no data directory")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	limit, err := openFileLimit()
	if err != nil {
		return nil, err
	}
	var clamped bool
	if n.budget, clamped, err = fdBudget(limit, cfg.HTTP.FDReserve, cfg.RealtimeLimits.MaxConnections); err != nil {
		return nil, err
	}
	if clamped {
		log.Warn("FLUXBASE_REALTIME_MAX_CONNECTIONS lowered to what the open-file limit leaves websockets",
			zap.Int("asked", cfg.RealtimeLimits.MaxConnections), zap.Int("websockets", n.budget.Websockets),
			zap.Int("open_file_limit", limit), zap.Int("reserve", n.budget.Reserve))
	}
	ln, err := net.Listen("tcp", cfg.HTTP.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen on FLUXBASE_HTTP_ADDR: %w", err)
	}
	n.ln = newLimitListener(ln, n.budget.HTTPConns)

	if !cfg.Database.SkipMigrations {
		migrateCtx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		applied, err := migrations.Up(migrateCtx, cfg.Database.URL)
		cancel()
		if err != nil {
			return nil, err
		}
		for _, m := range applied {
			log.Info("migration applied", zap.Int64("version", m.Version), zap.String("source", m.Source))
		}
	}

	if n.pool, err = newPool(ctx, cfg.Database, cfg.Database.URL); err != nil {
		return nil, err
	}
	if _, err := checkConnBudget(ctx, n.pool, clusterNodes(cfg.Broker.Routes), log); err != nil {
		log.Warn("could not check the connection budget", zap.Error(err))
	}
	for _, r := range cfg.Database.ReadReplicas {
		rp, err := newPool(ctx, cfg.Database, replicaURL(cfg.Database.URL, r))
		if err != nil {
			return nil, fmt.Errorf("FLUXBASE_DATABASE_READ_REPLICAS: %w", err)
		}
		n.replicas = append(n.replicas, rp)
	}
	if n.roles, err = pgrole.LoadRoles(ctx, n.pool); err != nil {
		return nil, err
	}

	reg := prometheus.NewRegistry()
	n.reg = reg
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		newPoolCollector(n.pool))

	if n.bus, err = startBroker(ctx, cfg, verifier, log); err != nil {
		return nil, err
	}
	reg.MustRegister(broker.NewCollector(n.bus))

	// Ended sessions, shared by every node through the broker and held in
	// memory here: the guard and realtime refuse their tokens at once.
	revKV, err := n.bus.Bucket(ctx, broker.RevocationsBucket)
	if err != nil {
		return nil, err
	}
	n.revs = auth.NewRevocations(revKV)
	rateKV, err := n.bus.Bucket(ctx, broker.RateLimitBucket)
	if err != nil {
		return nil, err
	}
	authCfg := cfg.Auth
	authCfg.MailLimiter = auth.NewRateLimiter(rateKV)
	users, err := auth.NewService(authCfg, n.pool, n.revs)
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}

	changeLog, err := replication.NewJetStreamLog(n.bus.Conn(), replication.JetStreamLogOptions{
		Stream:       change.Stream,
		SyncInterval: n.bus.SyncInterval(),
	})
	if err != nil {
		return nil, err
	}
	rc := cfg.Replication
	rc.DatabaseURL = cfg.Database.URL
	if n.repl, err = replication.New(rc, changeLog, replication.WithLogger(log.Named("replication")), replication.WithRegisterer(reg)); err != nil {
		return nil, err
	}

	hub := cfg.Realtime
	if hub.NodeID == "" {
		hub.NodeID = cfg.Name
	}
	limits := cfg.RealtimeLimits
	limits.MaxConnections = n.budget.Websockets
	n.rt = realtime.New(realtime.Config{
		Limits:      limits,
		Verifier:    verifier,
		Pool:        n.pool,
		Source:      fanout.NewJetStreamSource(n.bus.JetStream(), change.Stream),
		Bus:         fanout.NewNATSBus(n.bus.Conn()),
		Hub:         hub,
		Log:         log,
		Registerer:  reg,
		Revocations: n.revs,
	})

	backend, err := openStorage(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	n.files = storage.NewStore(n.pool, backend, log.Named("storage")).WithMaxFileSize(cfg.Storage.MaxFileSize)

	restCfg := cfg.REST
	restCfg.Pool, restCfg.Replicas, restCfg.Roles, restCfg.Log = n.pool, n.replicas, n.roles, log.Named("rest")
	n.srv = api.New(api.Config{
		NodeName:     cfg.Name,
		Debug:        cfg.Debug,
		DrainTimeout: cfg.HTTP.DrainTimeout,
		BodyTimeout:  cfg.HTTP.BodyTimeout,
		Checks: []api.NamedCheck{
			{Name: "draining", Check: func(context.Context) error {
				if n.draining.Load() {
					return errDraining
				}
				return nil
			}},
			{Name: "database", Check: n.pool.Ping},
			{Name: "broker", Check: n.bus.Ready},
			{Name: "replication", Check: func(context.Context) error { return n.repl.Ready() }},
			{Name: "realtime", Check: func(context.Context) error { return n.rt.Hub().Ready() }},
		},
		Surfaces: []api.Surface{
			rest.New(restCfg),
			n.rt.Surface(),
			apiauth.New(apiauth.Config{Service: users, Limiter: authCfg.MailLimiter, Version: cfg.Version, Log: log.Named("auth")}),
			apistorage.New(apistorage.Config{
				Store:    n.files,
				Signer:   storage.NewSigner(cfg.Auth.JWTSecret),
				BodyIdle: cfg.HTTP.BodyTimeout,
				Log:      log.Named("storage"),
			}),
			{Prefix: "/cluster", Routes: []api.Route{
				{Method: http.MethodGet, Pattern: "/", Access: api.NeedService, Handler: http.HandlerFunc(n.serveCluster)},
			}},
		},
		Revocations: n.revs,
	}, verifier, log, reg)
	return n, nil
}

// Addr is the address the node's HTTP edge listens on.
func (n *Node) Addr() net.Addr { return n.ln.Addr() }

// URL is the node's HTTP base URL on loopback when it listens on every
// interface.
func (n *Node) URL() string {
	host, port, _ := net.SplitHostPort(n.ln.Addr().String())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// Broker is the node's broker, for tests that read the change log.
func (n *Node) Broker() *broker.Broker { return n.bus }

// Run serves until ctx ends or a part fails, then shuts every part down
// and releases what New acquired. It returns the first failure, or nil.
//
// When ctx ends the node drains before it stops (docs/ARCHITECTURE.md,
// "Leaving the cluster"): /ready answers 503 at once; the replication
// slot is released, so a standby node takes it on its next try;
// websockets are refused and the open ones closed with 1001, spread over
// half of HTTP.DrainDelay, their presence removed on every node; HTTP
// keeps serving for HTTP.DrainDelay, then stops listening and lets the
// requests in flight finish within HTTP.DrainTimeout. Only then do the
// hub and the broker stop.
func (n *Node) Run(ctx context.Context) error {
	defer n.Close()
	n.started = time.Now()
	stopStatus, err := n.answerStatus()
	if err != nil {
		return fmt.Errorf("answer status requests: %w", err)
	}
	defer stopStatus()
	// The parts run under a context of their own, ended after the drain,
	// not by ctx.
	parts, stopParts := context.WithCancel(context.Background())
	defer stopParts()
	g, gctx := errgroup.WithContext(parts)
	httpCtx, stopHTTP := context.WithCancel(gctx)
	defer stopHTTP()
	g.Go(func() error { return n.repl.Run(gctx) })
	g.Go(func() error { return n.rt.Run(gctx) })
	g.Go(func() error { return n.revs.Run(gctx) })
	g.Go(func() error { return n.files.RunCollector(gctx, collectInterval, storage.DefaultUploadAge) })
	g.Go(func() error {
		err := n.srv.Serve(httpCtx, n.ln)
		stopParts() // the requests in flight are done: the rest may stop
		return err
	})
	g.Go(func() error {
		every := n.cfg.Database.RoleSettingsRefresh
		if every <= 0 {
			every = 30 * time.Second
		}
		n.roles.Run(gctx, every, func(err error) { n.log.Warn("role settings not refreshed", zap.Error(err)) })
		return nil
	})
	n.log.Info("serving", zap.String("addr", n.ln.Addr().String()), zap.String("version", n.cfg.Version),
		zap.Int("broker_replicas", n.bus.Replicas()), zap.Int("open_file_limit", n.budget.Limit),
		zap.Int("max_http_connections", n.budget.HTTPConns), zap.Int("max_websockets", n.budget.Websockets))
	select {
	case <-ctx.Done():
		n.drain(gctx)
		stopHTTP()
	case <-gctx.Done(): // a part failed
	}
	err = g.Wait()
	n.log.Info("stopped")
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// drain turns the node unready, gives up the slot and its websockets,
// and keeps serving HTTP for the drain delay; it returns early when a
// part fails (ctx).
func (n *Node) drain(ctx context.Context) {
	n.draining.Store(true)
	delay := n.cfg.HTTP.DrainDelay
	n.log.Info("draining", zap.Duration("delay", delay), zap.Duration("shutdown_timeout", n.cfg.HTTP.DrainTimeout))
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		_ = n.repl.Close() // returns once the slot is released
	}()
	go func() {
		defer wg.Done()
		n.rt.Drain(ctx, delay/2)
	}()
	select {
	case <-ctx.Done():
	case <-time.After(delay):
	}
	wg.Wait()
}

// Close releases what New acquired, in reverse order. Run calls it; call
// it yourself only for a node that never ran. It is idempotent.
func (n *Node) Close() {
	n.closeOnce.Do(func() {
		if n.rt != nil {
			_ = n.rt.Close()
		}
		if n.repl != nil {
			_ = n.repl.Close()
		}
		if n.bus != nil {
			n.bus.Close()
		}
		for _, rp := range n.replicas {
			rp.Close()
		}
		if n.pool != nil {
			n.pool.Close()
		}
		if n.ln != nil {
			_ = n.ln.Close()
		}
	})
}

// collectInterval is how often a node deletes the object bytes no row
// names (see storage.Store.Collect).
const collectInterval = 10 * time.Minute

// openStorage opens the storage backend: local files under LocalPath
// (default <DataDir>/storage), or the S3 bucket, created when missing.
func openStorage(ctx context.Context, cfg Config, log *zap.Logger) (storage.Backend, error) {
	sc := cfg.Storage
	if sc.Provider == "" {
		sc.Provider = storage.ProviderLocal
	}
	if sc.Provider == storage.ProviderLocal {
		if sc.LocalPath == "" {
			sc.LocalPath = filepath.Join(cfg.DataDir, "storage")
		}
		if len(cfg.Broker.Routes) > 0 && !sc.LocalShared {
			log.Warn("FLUXBASE_STORAGE_PROVIDER=local in a cluster: each node keeps its own files, so an object uploaded through one node is missing on the others unless FLUXBASE_STORAGE_LOCAL_PATH is a shared folder (then set FLUXBASE_STORAGE_LOCAL_SHARED=true); use s3",
				zap.String("path", sc.LocalPath))
		}
	}
	b, err := storage.Open(ctx, sc)
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	return b, nil
}

// startBroker starts the node's embedded NATS (or connects to
// FLUXBASE_NATS_URL, with whatever credentials its URL carries). External
// consumers log in on the client port as service_role with a service key.
func startBroker(ctx context.Context, cfg Config, verifier *auth.Verifier, log *zap.Logger) (*broker.Broker, error) {
	bc := cfg.Broker
	if bc.DataDir == "" {
		bc.DataDir = filepath.Join(cfg.DataDir, "nats")
	}
	if bc.NodeName == "" {
		bc.NodeName = cfg.Name
	}
	if bc.RouteSecret == "" {
		bc.RouteSecret = cfg.Auth.JWTSecret
	}
	if bc.ServiceKeyValid == nil {
		bc.ServiceKeyValid = func(key string) bool {
			c, err := verifier.Verify(key)
			return err == nil && c.IsServiceRole()
		}
	}
	b, err := broker.Start(ctx, bc, broker.WithLogger(log.Named("broker")))
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	return b, nil
}

// replicaURL is a read replica's connection URL: replica itself when it
// is a URL, else the primary's URL with its host and port replaced (same
// user, password, database and options).
func replicaURL(primary, replica string) string {
	if strings.Contains(replica, "://") {
		return replica
	}
	u, err := url.Parse(primary)
	if err != nil {
		return replica // reported by newPool
	}
	u.Host = replica
	return u.String()
}

// newPool opens a pool on dbURL with the configured sizes and lifetimes.
func newPool(ctx context.Context, cfg DatabaseConfig, dbURL string) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return nil, fmt.Errorf("database URL %s: %w", redactURL(dbURL), err)
	}
	if cfg.MaxConns > 0 {
		pc.MaxConns = cfg.MaxConns
	}
	pc.MinConns = cfg.MinConns
	pc.MaxConnLifetime = cfg.MaxConnLifetime
	pc.MaxConnIdleTime = cfg.MaxConnIdleTime
	// A dead server is noticed by the next health check, not the next user.
	pc.HealthCheckPeriod = 5 * time.Second
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("database pool: %w", err)
	}
	return pool, nil
}
