package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sync/errgroup"

	"github.com/fluxbase/fluxbase/api"
	"github.com/fluxbase/fluxbase/auth"
	"github.com/fluxbase/fluxbase/migrations"
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
		zc.DisableStacktrace = true
	} else {
		zc = zap.NewProductionConfig()
		zc.EncoderConfig.TimeKey = "ts"
		zc.EncoderConfig.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	}
	zc.Level = level
	log, err := zc.Build()
	if err != nil {
		panic(err) // only for an invalid static configuration
	}
	return log.With(zap.String("node", cfg.NodeName))
}

// serve runs one node until ctx ends: migrations, the database pool, then
// the HTTP edge.
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

	pool, err := newPool(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	srv := api.New(api.Config{
		Debug:        cfg.Debug,
		DrainTimeout: cfg.DrainTimeout,
		Checks: []api.NamedCheck{
			{Name: "database", Check: pool.Ping},
		},
	}, verifier, log, reg)

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Serve(ctx, ln) })
	log.Info("serving", zap.String("addr", ln.Addr().String()), zap.String("version", version))
	err = g.Wait()
	log.Info("stopped")
	return err
}

func newPool(ctx context.Context, cfg config) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("DATABASE_URL: %w", err)
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
