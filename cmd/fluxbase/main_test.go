package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fluxbase/fluxbase/internal/pgcluster"
	"github.com/fluxbase/fluxbase/internal/pgtest"
)

// binary is the fluxbase command built once for the process tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fluxbase-bin-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "fluxbase")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build fluxbase: %v\n%s", err, out)
		os.Exit(1)
	}
	code := pgtest.Main(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

// reachableTempDir is a temporary directory the postgres system user can
// enter, for clusters started by tests that run as root.
func reachableTempDir(t *testing.T) string {
	dir := t.TempDir()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		_ = os.Chmod(d, 0o755)
	}
	return dir
}

func command(env ...string) *exec.Cmd {
	cmd := exec.Command(binary)
	// Only what the test sets: nothing leaks in from the caller's shell.
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	return cmd
}

// Every bad environment value gives its one-line error and exit code 2.
func TestBadEnvironmentExitsTwo(t *testing.T) {
	t.Parallel()
	base := []string{"DATABASE_URL=postgres://u@127.0.0.1:1/db", "FLUXBASE_JWT_SECRET=" + strings.Repeat("k", 32)}
	for _, kv := range []string{
		"FLUXBASE_NATS_PORT=abc",
		"FLUXBASE_HTTP_ADDR=nope",
		"FLUXBASE_JWT_SECRET=short",
		"FLUXBASE_DEBUG=2",
		"FLUXBASE_STORAGE_PROVIDER=ftp",
		"FLUXBASE_CHANGES_MAX_BYTES=huge",
		"DATABASE_URL=",
	} {
		for _, sub := range []string{"serve", "migrate"} {
			t.Run(sub+" "+kv, func(t *testing.T) {
				t.Parallel()
				cmd := command(append(base, kv)...)
				cmd.Args = append(cmd.Args, sub)
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				err := cmd.Run()
				exit, ok := err.(*exec.ExitError)
				if !ok || exit.ExitCode() != 2 {
					t.Fatalf("exit %v, want code 2; stderr %q", err, stderr.String())
				}
				name, _, _ := strings.Cut(kv, "=")
				lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
				if len(lines) != 1 || !strings.Contains(lines[0], name) {
					t.Fatalf("stderr %q: want one line naming %s", stderr.String(), name)
				}
			})
		}
	}
	t.Run("unknown command", func(t *testing.T) {
		t.Parallel()
		cmd := command()
		cmd.Args = append(cmd.Args, "serv")
		if err := cmd.Run(); err == nil || err.(*exec.ExitError).ExitCode() != 2 {
			t.Fatalf("exit %v", err)
		}
	})
}

// Five migrate processes started at once against one empty database all
// exit 0, and each migration is applied exactly once.
func TestConcurrentMigrateProcesses(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDB(t)
	const n = 5
	outputs := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := command("DATABASE_URL=" + url)
			cmd.Args = append(cmd.Args, "migrate")
			<-start
			out, err := cmd.CombinedOutput()
			outputs[i], errs[i] = string(out), err
		}()
	}
	close(start)
	wg.Wait()

	applied := map[string]int{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("process %d: %v\n%s", i, errs[i], outputs[i])
		}
		for _, line := range strings.Split(outputs[i], "\n") {
			if v, ok := strings.CutPrefix(line, "applied "); ok {
				applied[strings.Fields(v)[0]]++
			}
		}
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var rows, distinct int
	if err := conn.QueryRow(ctx, `select count(*), count(distinct version_id) from fluxbase.schema_migrations where version_id > 0`).Scan(&rows, &distinct); err != nil {
		t.Fatal(err)
	}
	if rows < 2 || rows != distinct || len(applied) != rows {
		t.Fatalf("bookkeeping rows %d (distinct %d); processes reported %v", rows, distinct, applied)
	}
	for v, count := range applied {
		if count != 1 {
			t.Errorf("migration %s applied by %d processes", v, count)
		}
	}
}

// process is a running fluxbase process.
type process struct {
	t      *testing.T
	cmd    *exec.Cmd
	url    string
	mu     sync.Mutex
	output bytes.Buffer
	done   chan struct{}
}

func startNode(t *testing.T, sub string, env ...string) *process {
	t.Helper()
	port, err := pgcluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	n := &process{t: t, url: "http://127.0.0.1:" + strconv.Itoa(port), done: make(chan struct{})}
	n.cmd = command(append(env, "FLUXBASE_HTTP_ADDR=127.0.0.1:"+strconv.Itoa(port), "FLUXBASE_NATS_PORT=-1")...)
	n.cmd.Args = append(n.cmd.Args, sub)
	pr, pw := io.Pipe()
	n.cmd.Stdout, n.cmd.Stderr = pw, pw
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			n.mu.Lock()
			n.output.WriteString(sc.Text() + "\n")
			n.mu.Unlock()
		}
	}()
	go func() {
		n.cmd.Wait()
		pw.Close()
		close(n.done)
	}()
	t.Cleanup(func() {
		n.cmd.Process.Kill()
		<-n.done
	})
	return n
}

func (n *process) log() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.output.String()
}

// waitStatus polls path until it answers want, or fails after limit.
func (n *process) waitStatus(path string, want int, limit time.Duration) time.Duration {
	n.t.Helper()
	start := time.Now()
	for time.Since(start) < limit {
		select {
		case <-n.done:
			n.t.Fatalf("node exited: %v\n%s", n.cmd.ProcessState, n.log())
		default:
		}
		resp, err := http.Get(n.url + path)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == want {
				return time.Since(start)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	n.t.Fatalf("%s did not answer %d within %v\n%s", path, want, limit, n.log())
	return 0
}

func (n *process) stop(sig syscall.Signal) {
	n.t.Helper()
	n.cmd.Process.Signal(sig)
	select {
	case <-n.done:
	case <-time.After(30 * time.Second):
		n.t.Fatalf("node did not stop on %v\n%s", sig, n.log())
	}
	if code := n.cmd.ProcessState.ExitCode(); code != 0 {
		n.t.Fatalf("node exited with %d\n%s", code, n.log())
	}
}

var keyLine = regexp.MustCompile(`(anon|service) key:\s+(\S+)`)

// postgresRunning reports whether a postmaster with the data directory is
// alive, by reading /proc.
func postgresRunning(dataDir string) bool {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(dataDir)) && bytes.Contains(b, []byte("postgres")) {
			return true
		}
	}
	return false
}

// `fluxbase dev` on nothing prepared: it answers /health, prints the keys,
// leaves no postgres behind on SIGINT or SIGTERM, and a second run reuses
// the data and keys.
func TestDevLifecycle(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(reachableTempDir(t), "data")
	var firstKeys string
	for i, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		n := startNode(t, "dev", "FLUXBASE_DATA_DIR="+dataDir)
		n.waitStatus("/health", 200, 60*time.Second)
		n.waitStatus("/ready", 200, 10*time.Second)
		keys := keyLine.FindAllStringSubmatch(n.log(), -1)
		if len(keys) != 2 {
			t.Fatalf("keys not printed:\n%s", n.log())
		}
		got := keys[0][2] + keys[1][2]
		if i == 0 {
			firstKeys = got
		} else if got != firstKeys {
			t.Fatal("second run printed other keys: the data was not reused")
		}
		// The printed anon key is accepted, a tampered one is not.
		for key, want := range map[string]int{keys[0][2]: 404, keys[0][2] + "x": 401} {
			req, _ := http.NewRequest("GET", n.url+"/rest/v1/nothing", nil)
			req.Header.Set("apikey", key)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Fatalf("key %q…: status %d, want %d", key[:10], resp.StatusCode, want)
			}
		}
		if !postgresRunning(dataDir) {
			t.Fatal("no postgres process found for the dev cluster")
		}
		n.stop(sig)
		if postgresRunning(dataDir) {
			t.Fatalf("postgres still running after %v", sig)
		}
	}
}

// /ready turns 503 within 5 s of the database going away and back to 200
// when it returns.
func TestReadyFollowsDatabase(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(reachableTempDir(t), "pg")
	ctx := context.Background()
	c, err := pgcluster.Start(ctx, pgcluster.Options{Dir: dir, Ephemeral: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { c.Stop() }()
	n := startNode(t, "serve", "DATABASE_URL="+c.URL("postgres"), "FLUXBASE_JWT_SECRET="+strings.Repeat("r", 40),
		"FLUXBASE_DATA_DIR="+t.TempDir())
	n.waitStatus("/ready", 200, 30*time.Second)

	c.Stop()
	took := n.waitStatus("/ready", 503, 5*time.Second)
	t.Logf("/ready answered 503 %v after the database stopped", took)

	c, err = pgcluster.Start(ctx, pgcluster.Options{Dir: dir, Port: c.Port, Ephemeral: true})
	if err != nil {
		t.Fatal(err)
	}
	took = n.waitStatus("/ready", 200, 15*time.Second)
	t.Logf("/ready answered 200 %v after the database returned", took)
}
