// Command fluxbase runs a Fluxbase node.
//
//	fluxbase serve     a production node, configured by the environment
//	fluxbase dev       a node with its own private PostgreSQL under .fluxbase/
//	fluxbase migrate   apply the embedded migrations to DATABASE_URL and exit
//	fluxbase status    print the cluster's nodes, change stream and slot
//	fluxbase version   print the version
//
// main is wiring only: configuration from the environment, components
// started in order, a signal to stop them.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/fluxbase/fluxbase/migrations"
	"github.com/fluxbase/fluxbase/node"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `usage: fluxbase <command>

commands:
  serve     run a node, configured by environment variables (see README)
  dev       run a node with a private PostgreSQL under $FLUXBASE_DATA_DIR (default .fluxbase)
  migrate   apply pending migrations to DATABASE_URL and exit
  status    print the cluster's state, asked of the node at $FLUXBASE_URL
            (default: this host's $FLUXBASE_HTTP_ADDR) with $FLUXBASE_JWT_SECRET
  version   print the version and exit
`

// Exit codes: 1 for a failure while running, 2 for bad usage or configuration.
const (
	exitFailure = 1
	exitUsage   = 2
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) != 1 {
		fmt.Fprint(os.Stderr, usage)
		return exitUsage
	}
	cmd := args[0]
	switch cmd {
	case "version", "--version", "-v":
		fmt.Printf("fluxbase %s (%s %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return 0
	case "help", "--help", "-h":
		fmt.Print(usage)
		return 0
	case "status":
		return status(os.Getenv, os.Stdout, os.Stderr)
	case "serve", "dev", "migrate":
	default:
		fmt.Fprintf(os.Stderr, "fluxbase: unknown command %q\n%s", cmd, usage)
		return exitUsage
	}

	mode := map[string]node.Mode{"serve": node.Serve, "dev": node.Dev, "migrate": node.Migrate}[cmd]
	cfg, err := node.FromEnv(os.Getenv, mode)
	if err != nil {
		fmt.Fprintf(os.Stderr, "fluxbase: %v\n", err)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	switch cmd {
	case "migrate":
		err = migrate(ctx, cfg)
	case "serve":
		log := newLogger(cfg, false)
		defer log.Sync() //nolint:errcheck // stderr sync fails on terminals
		err = serve(ctx, cfg, log)
	case "dev":
		log := newLogger(cfg, true)
		defer log.Sync() //nolint:errcheck
		err = dev(ctx, cfg, log)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(os.Stderr, "fluxbase: %v\n", err)
		return exitFailure
	}
	return 0
}

func migrate(ctx context.Context, cfg node.Config) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	applied, err := migrations.Up(ctx, cfg.Database.URL)
	if err != nil {
		return err
	}
	for _, r := range applied {
		fmt.Printf("applied %05d %s\n", r.Version, r.Source)
	}
	if len(applied) == 0 {
		fmt.Println("database schema is current")
	}
	return nil
}
