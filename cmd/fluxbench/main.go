// Command fluxbench measures Fluxbase beside baselines that show what the
// machine and PostgreSQL do on their own, so a deployment can be sized and
// compared with what runs today.
//
//	fluxbench fanout          realtime fan-out to websocket subscribers
//	fluxbench cdc-drain       draining a backlog of changes from a slot
//	fluxbench write-overhead  insert throughput under each change capture
//	fluxbench rest            REST reads
//	fluxbench suite [-short]  all of them, writing bench/results/<date>-<scenario>.md
//
// It starts what it needs (a PostgreSQL cluster, Fluxbase nodes, its own
// helper processes) unless given existing targets, stops by itself within
// -timeout, and writes each report as JSON, Markdown and PNG plots. The
// scenarios live in bench/; main is wiring.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/fluxbase/fluxbase/bench"
	"github.com/fluxbase/fluxbase/bench/harness"
	"github.com/fluxbase/fluxbase/bench/procstat"
)

const usage = `usage: fluxbench <command> [flags]

scenarios:
  fanout          websocket subscribers on a channel, messages in steps of deliveries/s
                  (-deliveries) or at one -rate: deliveries/s, loss, latency, server CPU
                  per delivery, memory per idle connection, the saturation point
                  (-saturate), a row-level security mode (-rls-users), the realtime
                  goals judged (bare broadcaster baseline beside Fluxbase)
  cdc-drain       drain a backlog of N changes: pg_recvlogical beside Fluxbase
  write-overhead  insert tps of W writers with no capture, trigger+pg_notify,
                  a pg_recvlogical slot, and Fluxbase
  rest            single-row reads through /rest/v1/ beside PostgreSQL
  suite           every scenario in turn; -short is the quick suite of make bench

helpers (started by the scenarios):
  baseline-server the bare websocket broadcaster
  fanout-worker   a subscriber generator process

Run "fluxbench <command> -h" for its flags.
`

// Exit codes: 1 for a failed run, 2 for bad usage or missing prerequisites.
const (
	exitFailure = 1
	exitUsage   = 2
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return exitUsage
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "help", "-h", "-help", "--help":
		fmt.Print(usage)
		return 0
	case "baseline-server":
		return baselineServer(rest)
	case "fanout-worker":
		return fanoutWorker()
	}
	sc, ok := scenarios[cmd]
	if !ok {
		fmt.Fprintf(os.Stderr, "fluxbench: unknown command %q\n\n%s", cmd, usage)
		return exitUsage
	}
	fs := flag.NewFlagSet("fluxbench "+cmd, flag.ContinueOnError)
	var c common
	c.register(fs, sc.defaultTimeout)
	runScenario := sc.flags(fs)
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "fluxbench %s: unexpected arguments %q\n", cmd, fs.Args())
		return exitUsage
	}
	return c.run(cmd, runScenario)
}

// common are the flags every scenario takes.
type common struct {
	out         string
	timeout     time.Duration
	workDir     string
	fluxbaseBin string
	urls        string
	apiKey      string
	db          string
	noWrite     bool
}

func (c *common) register(fs *flag.FlagSet, timeout time.Duration) {
	fs.StringVar(&c.out, "out", "", "directory for the reports (default bench/results of the module, else ./bench-results)")
	fs.DurationVar(&c.timeout, "timeout", timeout, "bound on the whole run; it stops by itself after this")
	fs.StringVar(&c.workDir, "work-dir", "", "directory for the PostgreSQL cluster and node data (default: a temporary one, removed)")
	fs.StringVar(&c.fluxbaseBin, "fluxbase-bin", "", "fluxbase binary (default build/bin/fluxbase, built with go build when missing)")
	fs.StringVar(&c.urls, "url", "", "use running Fluxbase nodes at these comma-separated URLs instead of starting them")
	fs.StringVar(&c.apiKey, "apikey", "", "anon key of the nodes given with -url")
	fs.StringVar(&c.db, "db", "", "use this PostgreSQL URL instead of starting a cluster (its data is changed)")
	fs.BoolVar(&c.noWrite, "no-write", false, "print the results only; write no report files")
}

// scenarioRun runs one scenario with the shared environment.
type scenarioRun func(ctx context.Context, env *harness.Env, p *bench.Progress) ([]*bench.Report, error)

type scenario struct {
	defaultTimeout time.Duration
	// needs says which prerequisites to check: a local PostgreSQL, and
	// pg_recvlogical.
	needsPG, needsRecvLogical bool
	flags                     func(fs *flag.FlagSet) scenarioRun
}

var scenarios = map[string]scenario{
	"fanout":         {defaultTimeout: 15 * time.Minute, flags: fanoutFlags},
	"cdc-drain":      {defaultTimeout: 15 * time.Minute, needsPG: true, needsRecvLogical: true, flags: cdcFlags},
	"write-overhead": {defaultTimeout: 15 * time.Minute, needsPG: true, needsRecvLogical: true, flags: writeFlags},
	"rest":           {defaultTimeout: 10 * time.Minute, needsPG: true, flags: restFlags},
	"suite":          {defaultTimeout: 30 * time.Minute, needsPG: true, needsRecvLogical: true, flags: suiteFlags},
}

func (c *common) run(cmd string, runScenario scenarioRun) int {
	sc := scenarios[cmd]
	if missing := harness.Missing(sc.needsPG && c.db == "", sc.needsRecvLogical); len(missing) > 0 {
		fmt.Fprintf(os.Stderr, "fluxbench %s: missing prerequisites:\n  %s\n", cmd, strings.Join(missing, "\n  "))
		return exitUsage
	}
	if c.urls != "" && c.apiKey == "" {
		fmt.Fprintf(os.Stderr, "fluxbench %s: -url needs -apikey (the nodes' anon key)\n", cmd)
		return exitUsage
	}
	soft, hard, err := procstat.RaiseNoFile()
	if err != nil {
		fmt.Fprintf(os.Stderr, "fluxbench: %v\n", err)
	}
	out := c.out
	if out == "" {
		if root, err := harness.ModuleRoot(); err == nil {
			out = filepath.Join(root, "bench", "results")
		} else {
			out = "bench-results"
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()

	p := bench.NewProgress(os.Stderr)
	env := &harness.Env{WorkDir: c.workDir, DatabaseURL: c.db, APIKey: c.apiKey, FluxbaseBin: c.fluxbaseBin, Log: progressWriter{p}}
	if c.urls != "" {
		env.FluxbaseURLs = strings.Split(c.urls, ",")
	}
	defer env.Close()

	reports, err := runScenario(ctx, env, p)
	command := "fluxbench " + shellJoin(os.Args[1:])
	for _, r := range reports {
		r.Command = command
		r.Machine.NoFile = fmt.Sprintf("%d/%d", soft, hard)
		if busy := r.Machine.Busy(); busy != "" {
			r.Notes = append(r.Notes, busy)
		}
		r.Print(os.Stdout)
		if c.noWrite {
			continue
		}
		path, werr := r.Write(out)
		if werr != nil {
			fmt.Fprintf(os.Stderr, "fluxbench: %v\n", werr)
			err = errors.Join(err, werr)
			continue
		}
		fmt.Printf("report: %s\n", path)
	}
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			fmt.Fprintf(os.Stderr, "fluxbench %s: stopped by -timeout %s\n", cmd, c.timeout)
		} else {
			fmt.Fprintf(os.Stderr, "fluxbench %s: %v\n", cmd, err)
		}
		return exitFailure
	}
	return 0
}

// progressWriter sends the harness's lines through the progress display.
type progressWriter struct{ p *bench.Progress }

func (w progressWriter) Write(b []byte) (int, error) {
	w.p.Logf("%s", strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// shellJoin quotes arguments that a shell would split or expand.
func shellJoin(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$`*?[]{}()<>|&;#~!") {
			out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		} else {
			out[i] = a
		}
	}
	return strings.Join(out, " ")
}

func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}
