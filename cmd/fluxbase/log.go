package main

import (
	"context"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/fluxbase/fluxbase/node"
)

// newLogger logs JSON for machines in serve, readable lines in dev; debug
// level with FLUXBASE_DEBUG.
func newLogger(cfg node.Config, dev bool) *zap.Logger {
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
	return log.With(zap.String("node", cfg.Name))
}

// serve runs one node until ctx ends.
func serve(ctx context.Context, cfg node.Config, log *zap.Logger) error {
	cfg.Version = version
	n, err := node.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	return n.Run(ctx)
}
