package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sync/errgroup"

	"github.com/fluxbase/fluxbase/api"
	"github.com/fluxbase/fluxbase/auth"
	"github.com/fluxbase/fluxbase/broker"
	"github.com/fluxbase/fluxbase/broker/fanout"
	"github.com/fluxbase/fluxbase/change"
	"github.com/fluxbase/fluxbase/migrations"
	"github.com/fluxbase/fluxbase/replication"
)

// newLogger logs JSON for machines in serve, readable lines in dev; debug
// level with FLUXBASE_DEBUG.
func newLogger(cfg config, dev bool) *zap.Logger {
	level := zap.NewAtomicLevelAt(zap.InfoLevel)
	if cfg.Debug {
		level.SetLevel(zap.DebugLevel)
	}
	var zc zap.Config
	if dev {
		zc = zap.NewDevelopmentConfig()
		zc.EncoderConfig.EncodeLevel = zapcore.CapitalColorLevelEncoder
	} else {
		zc = zap.NewProductionConfig()
		zc.EncoderConfig.TimeKey = "ts"
		zc.EncoderConfig.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	}
	// Errors carry their context in fields; a stack trace per error line
	// buries it. Panics are logged with their stack by the recoverer.
	zc.DisableStacktrace = true
	zc.Level = level
	log, err := zc.Build()
	if err != nil {
		panic(err) // only for an invalid static configuration
	}
	return log.With(zap.String("node", cfg.NodeName))
}

// serve runs one node until ctx ends: migrations, the database pool, the
// broker, the replication reader, the realtime hub and the HTTP edge.
func serve(ctx context.Context, cfg config, log *zap.Logger) error {
	verifier, err := auth.NewVerifier(cfg.JWTSecret)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	// Listen before the slow parts so a port conflict is reported at once.
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on FLUXBASE_HTTP_ADDR: %w", err)
	}
	defer ln.Close()

	migrateCtx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	applied, err := migrations.Up(migrateCtx, cfg.DatabaseURL)
	cancel()
	if err != nil {
		return err
	}
	for _, m := range applied {
		log.Info("migration applied", zap.Int64("version", m.Version), zap.String("source", m.Source))
	}

	pool, err := newPool(ctx, cfg, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	var replicas []*pgxpool.Pool
	for _, r := range cfg.ReadReplicas {
		rp, err := newPool(ctx, cfg, replicaURL(cfg.DatabaseURL, r))
		if err != nil {
			return fmt.Errorf("FLUXBASE_DATABASE_READ_REPLICAS: %w", err)
		}
		defer rp.Close()
		replicas = append(replicas, rp)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	bus, err := startBroker(ctx, cfg, verifier, log)
	if err != nil {
		return err
	}
	defer bus.Close()
	reg.MustRegister(broker.NewCollector(bus))

	changeLog, err := replication.NewJetStreamLog(bus.Conn(), replication.JetStreamLogOptions{
		Stream:       change.Stream,
		SyncInterval: bus.SyncInterval(),
	})
	if err != nil {
		return err
	}
	repl, err := replication.New(replication.Config{
		DatabaseURL:         cfg.DatabaseURL,
		Tables:              cfg.ReplicationTables,
		ReplicaIdentityFull: cfg.ReplicaIdentityFull,
	}, changeLog, replication.WithLogger(log.Named("replication")), replication.WithRegisterer(reg))
	if err != nil {
		return err
	}
	defer repl.Close()

	rt := api.NewRealtime(api.RealtimeConfig{
		Verifier:   verifier,
		Pool:       pool,
		Source:     fanout.NewJetStreamSource(bus.JetStream(), change.Stream),
		Bus:        fanout.NewNATSBus(bus.Conn()),
		Hub:        fanout.Config{NodeID: cfg.NodeName},
		Log:        log,
		Registerer: reg,
	})

	srv := api.New(api.Config{
		Debug:        cfg.Debug,
		DrainTimeout: cfg.DrainTimeout,
		Checks: []api.NamedCheck{
			{Name: "database", Check: pool.Ping},
			{Name: "broker", Check: bus.Ready},
			{Name: "replication", Check: func(context.Context) error { return repl.Ready() }},
			{Name: "realtime", Check: func(context.Context) error { return rt.Hub().Ready() }},
		},
		Mounts: map[string]http.Handler{
			"/rest/v1":     api.NewREST(api.RESTConfig{Pool: pool, Replicas: replicas, Log: log.Named("rest")}),
			"/realtime/v1": rt,
		},
	}, verifier, log, reg)

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return repl.Run(ctx) })
	g.Go(func() error { return rt.Run(ctx) })
	g.Go(func() error { return srv.Serve(ctx, ln) })
	log.Info("serving", zap.String("addr", ln.Addr().String()), zap.String("version", version),
		zap.Int("broker_replicas", bus.Replicas()))
	err = g.Wait()
	log.Info("stopped")
	return err
}

// startBroker starts the node's embedded NATS (or connects to
// FLUXBASE_NATS_URL, with whatever credentials its URL carries). External
// consumers log in on the client port as service_role with a service key.
func startBroker(ctx context.Context, cfg config, verifier *auth.Verifier, log *zap.Logger) (*broker.Broker, error) {
	clientPort := cfg.NATSPort
	if clientPort < 0 {
		clientPort = 0
	}
	bc := broker.Config{
		DataDir:         filepath.Join(cfg.DataDir, "nats"),
		NodeName:        cfg.NodeName,
		ClientPort:      clientPort,
		ClusterPort:     cfg.ClusterPort,
		Routes:          cfg.ClusterRoutes,
		ExternalURL:     cfg.NATSURL,
		SyncInterval:    cfg.NATSSyncInterval,
		ChangesMaxAge:   cfg.ChangesMaxAge,
		ChangesMaxBytes: cfg.ChangesMaxBytes,
		RouteSecret:     cfg.JWTSecret,
		ServiceKeyValid: func(key string) bool {
			c, err := verifier.Verify(key)
			return err == nil && c.IsServiceRole()
		},
	}
	b, err := broker.Start(ctx, bc, broker.WithLogger(log.Named("broker")))
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	return b, nil
}

// replicaURL is a read replica's connection URL: replica itself when it
// is a URL, else DATABASE_URL with its host and port replaced (same user,
// password, database and options).
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
func newPool(ctx context.Context, cfg config, dbURL string) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return nil, fmt.Errorf("database URL %s: %w", redactURL(dbURL), err)
	}
	if cfg.DBMaxConns > 0 {
		pc.MaxConns = cfg.DBMaxConns
	}
	pc.MinConns = cfg.DBMinConns
	pc.MaxConnLifetime = cfg.DBMaxConnLifetime
	pc.MaxConnIdleTime = cfg.DBMaxConnIdleTime
	// A dead server is noticed by the next health check, not the next user.
	pc.HealthCheckPeriod = 5 * time.Second
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("database pool: %w", err)
	}
	return pool, nil
}
