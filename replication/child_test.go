package replication

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// The crash and memory tests need processes they can SIGKILL: they run this
// test binary again with FLUXBASE_TEST_ROLE set, and TestMain hands over to
// childMain before any test (or PostgreSQL cluster) starts.
//
//	broker    a standalone NATS server with JetStream in $NATS_DIR on
//	          $NATS_PORT, creating the change stream if it is missing
//	node      a Replicator streaming $PG_URL into the stream at $NATS_URL
//	embedded  both in one process, as a production node runs them

const roleEnv = "FLUXBASE_TEST_ROLE"

func childMain(role string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var err error
	switch role {
	case "broker":
		var s *server.Server
		if s, err = startBroker(os.Getenv("NATS_DIR"), os.Getenv("NATS_PORT"), os.Getenv("NATS_SYNC")); err == nil {
			<-ctx.Done()
			s.Shutdown()
		}
	case "node":
		err = runNode(ctx, os.Getenv("NATS_URL"))
	case "embedded":
		var s *server.Server
		if s, err = startBroker(os.Getenv("NATS_DIR"), os.Getenv("NATS_PORT"), os.Getenv("NATS_SYNC")); err == nil {
			err = runNode(ctx, s.ClientURL())
			s.Shutdown()
		}
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, role+":", err)
		return 1
	}
	return 0
}

// startBroker runs a NATS server with JetStream and makes sure the change
// stream exists. sync is "always" (fsync every write) or a duration.
func startBroker(dir, port, sync string) (*server.Server, error) {
	p, err := strconv.Atoi(port)
	if err != nil {
		return nil, fmt.Errorf("NATS_PORT: %w", err)
	}
	opts := &server.Options{Host: "127.0.0.1", Port: p, JetStream: true, StoreDir: dir, NoSigs: true, NoLog: true}
	if sync == "" || sync == "always" {
		opts.SyncAlways = true
	} else if opts.SyncInterval, err = time.ParseDuration(sync); err != nil {
		return nil, fmt.Errorf("NATS_SYNC: %w", err)
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, err
	}
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		return nil, errors.New("nats server did not start")
	}
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:     "FLUXBASE_CHANGES",
		Subjects: []string{SubjectPrefix + ">"},
		Storage:  jetstream.FileStorage,
		// Deliberately short: exactly-once must not depend on it.
		Duplicates: time.Second,
	})
	return s, err
}

// runNode streams the slot into the stream at natsURL until ctx ends.
func runNode(ctx context.Context, natsURL string) error {
	nc, err := nats.Connect(natsURL, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond),
		nats.RetryOnFailedConnect(true),
		// Fail publishes while disconnected instead of buffering them.
		nats.ReconnectBufSize(-1))
	if err != nil {
		return err
	}
	defer nc.Close()
	var syncInterval time.Duration
	if s := os.Getenv("NATS_SYNC"); s != "" && s != "always" {
		syncInterval, _ = time.ParseDuration(s)
	}
	log, err := NewJetStreamLog(nc, JetStreamLogOptions{SyncInterval: syncInterval, AckTimeout: 5 * time.Second})
	if err != nil {
		return err
	}
	logger, _ := zap.NewDevelopment()
	r, err := New(Config{
		DatabaseURL:       os.Getenv("PG_URL"),
		SlotName:          os.Getenv("SLOT"),
		StatusInterval:    200 * time.Millisecond,
		StandbyRetry:      250 * time.Millisecond,
		HeartbeatInterval: time.Second,
	}, log, WithLogger(logger.With(zap.String("node", os.Getenv("NODE")))))
	if err != nil {
		return err
	}
	defer r.Close()
	return r.Run(ctx)
}

// child is a process started by a test.
type child struct {
	name string
	cmd  *exec.Cmd
	out  string
	done chan struct{}
}

func startChild(t *testing.T, name, role string, env ...string) *child {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), name+".log")
	f, err := os.OpenFile(out, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(append(os.Environ(), roleEnv+"="+role, "NODE="+name), env...)
	cmd.Stdout, cmd.Stderr = f, f
	// Dies with the test process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	c := &child{name: name, cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		c.kill()
		if t.Failed() {
			c.dumpLog(t)
		}
	})
	return c
}

// kill sends SIGKILL and waits for the process to be gone.
func (c *child) kill() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
}

func (c *child) dumpLog(t *testing.T) {
	b, _ := os.ReadFile(c.out)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	t.Logf("last lines of %s:\n%s", c.name, strings.Join(lines, "\n"))
}

// vmHWM is the peak resident set size of a running process, from /proc.
func vmHWM(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmHWM")
}
