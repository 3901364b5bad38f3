package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/fluxbase/fluxbase/bench/baseline"
	"github.com/fluxbase/fluxbase/bench/fanout"
	"github.com/fluxbase/fluxbase/bench/procstat"
)

// helperContext ends on SIGTERM or SIGINT, or when stdin closes: the parent
// holds our stdin, so its end is ours too.
func helperContext(watchStdin bool) (context.Context, context.CancelFunc) {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	if watchStdin {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			cancel()
		}()
	}
	return ctx, cancel
}

// baselineServer runs the bare broadcaster and prints {"addr": ...} once it
// listens.
func baselineServer(args []string) int {
	fs := flag.NewFlagSet("fluxbench baseline-server", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	writers := fs.Int("writers", 4, "writer goroutines")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if _, _, err := procstat.RaiseNoFile(); err != nil {
		fmt.Fprintf(os.Stderr, "baseline-server: %v\n", err)
	}
	ctx, cancel := helperContext(true)
	defer cancel()
	err := baseline.ListenAndServe(ctx, *addr, baseline.Config{Writers: *writers}, func(a net.Addr) {
		_ = json.NewEncoder(os.Stdout).Encode(map[string]any{"addr": a.String(), "pid": os.Getpid()})
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "baseline-server: %v\n", err)
		return exitFailure
	}
	return 0
}

// fanoutWorker runs one subscriber generator, driven over stdin/stdout.
func fanoutWorker() int {
	if _, _, err := procstat.RaiseNoFile(); err != nil {
		fmt.Fprintf(os.Stderr, "fanout-worker: %v\n", err)
	}
	ctx, cancel := helperContext(false)
	defer cancel()
	if err := fanout.ServeWorker(ctx, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "fanout-worker: %v\n", err)
		return exitFailure
	}
	return 0
}
