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
	"go.uber.org/zap"

	"github.com/fluxbase/fluxbase/broker"
	"github.com/fluxbase/fluxbase/change"
)

// The crash and memory tests need processes they can SIGKILL: they run this
// test binary again with FLUXBASE_TEST_ROLE set, and TestMain hands over to
// childMain before any test (or PostgreSQL cluster) starts.
//
//	nats      an operator's NATS server with JetStream (what
//	          FLUXBASE_NATS_URL points at), files in $NATS_DIR, port
//	          $NATS_PORT, fsync $NATS_SYNC ("always" or an interval)
//	node      a node of the FLUXBASE_NATS_URL kind: the broker package
//	          connected to $NATS_URL (it provisions the change stream, with
//	          duplicate window $NATS_DUPLICATES), and a Replicator streaming
//	          $PG_URL into it
//	embedded  a node as `fluxbase serve` runs one: the broker package's
//	          embedded server (client port $NATS_PORT for the test to read
//	          with the service key) and the Replicator in one process
//
// External clients of an embedded broker may only read the change log, so
// nodes that share one log across processes share an operator's NATS.

const roleEnv = "FLUXBASE_TEST_ROLE"

// testServiceKey is the password external clients of a test broker use.
const testServiceKey = "test-service-key"

func childMain(role string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var err error
	switch role {
	case "nats":
		var s *server.Server
		if s, err = startNATS(os.Getenv("NATS_DIR"), os.Getenv("NATS_PORT"), os.Getenv("NATS_SYNC")); err == nil {
			<-ctx.Done()
			s.Shutdown()
		}
	case "node":
		cfg := broker.Config{NodeName: os.Getenv("NODE"), ExternalURL: os.Getenv("NATS_URL")}
		if cfg.DuplicateWindow, err = durationEnv("NATS_DUPLICATES"); err != nil {
			break
		}
		var b *broker.Broker
		if b, err = broker.Start(ctx, cfg); err == nil {
			err = runNode(ctx, b)
			b.Close()
		}
	case "embedded":
		var b *broker.Broker
		if b, err = startTestBroker(ctx, os.Getenv("NATS_DIR"), os.Getenv("NATS_PORT"), os.Getenv("NATS_SYNC")); err == nil {
			err = runNode(ctx, b)
			b.Close()
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

// startTestBroker runs an embedded broker. port 0 (or "") opens no client
// port; sync is "always" (fsync every write) or a duration.
func startTestBroker(ctx context.Context, dir, port, sync string) (*broker.Broker, error) {
	cfg := broker.Config{
		DataDir:         dir,
		NodeName:        "test",
		ClientHost:      "127.0.0.1",
		ServiceKeyValid: func(p string) bool { return p == testServiceKey },
	}
	var err error
	if cfg.DuplicateWindow, err = durationEnv("NATS_DUPLICATES"); err != nil {
		return nil, err
	}
	if port != "" {
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("NATS_PORT: %w", err)
		}
		cfg.ClientPort = p
	}
	if sync != "" && sync != "always" {
		d, err := time.ParseDuration(sync)
		if err != nil {
			return nil, fmt.Errorf("NATS_SYNC: %w", err)
		}
		cfg.SyncInterval = d
	}
	return broker.Start(ctx, cfg)
}

// durationEnv reads a duration from the environment; unset is 0.
func durationEnv(name string) (time.Duration, error) {
	v := os.Getenv(name)
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	return d, nil
}

// startNATS runs a plain NATS server with JetStream, as an operator would
// for FLUXBASE_NATS_URL. sync is "always" (fsync every write) or an interval.
func startNATS(dir, port, sync string) (*server.Server, error) {
	p, err := strconv.Atoi(port)
	if err != nil {
		return nil, fmt.Errorf("NATS_PORT: %w", err)
	}
	opts := &server.Options{Host: "127.0.0.1", Port: p, JetStream: true, StoreDir: dir, NoSigs: true, NoLog: true}
	if sync == "" || sync == "always" {
		opts.SyncAlways = true
		opts.SyncInterval = 2 * time.Minute // unused with SyncAlways, but must be set
	} else if opts.SyncInterval, err = time.ParseDuration(sync); err != nil {
		return nil, fmt.Errorf("NATS_SYNC: %w", err)
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, err
	}
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		return nil, errors.New("nats server did not start")
	}
	return s, nil
}

// brokerLog is the replication log on b, wired as cmd/fluxbase wires it.
func brokerLog(b *broker.Broker) (*JetStreamLog, error) {
	return NewJetStreamLog(b.Conn(), JetStreamLogOptions{Stream: change.Stream, SyncInterval: b.SyncInterval(), AckTimeout: 5 * time.Second})
}

// runNode streams the slot into b's change stream until ctx ends.
func runNode(ctx context.Context, b *broker.Broker) error {
	log, err := brokerLog(b)
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

// connectTestBroker connects to a test broker's client port (the service
// key is ignored by a plain NATS server without authentication).
func connectTestBroker(url string) (*nats.Conn, error) {
	return nats.Connect(url, nats.UserInfo(broker.ServiceUser, testServiceKey),
		nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
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
