package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// healChildEnv names the test whose scenario runs in this process: the
// scenarios lower the process's descriptor limit and exhaust it, which the
// package's other tests, running in parallel, must not share. The test
// runs this test binary again for it.
const healChildEnv = "FLUXBASE_TEST_HEAL_CHILD"

// inChild runs scenario in a child process, or, in that child, here.
func inChild(t *testing.T, scenario func(*testing.T)) {
	if os.Getenv(healChildEnv) == t.Name() {
		scenario(t)
		return
	}
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), healChildEnv+"="+t.Name())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("scenario: %v\n%s", err, out.String())
	}
	t.Logf("scenario:\n%s", out.String())
}

// A node that runs out of file descriptors (a flood of websockets) fails
// to sync the change log's state file, and JetStream keeps that write
// error: every later publish is refused, long after the descriptors are
// free again. The broker notices, restarts JetStream on the running
// server, and the log takes writes again — every acknowledged message in
// it once, in order — without a restart of the node.
func TestHealAfterDescriptorExhaustion(t *testing.T) {
	inChild(t, func(t *testing.T) {
		b, l := refuseWrites(t)

		// The descriptors are free: publishes are taken again, the
		// refused message first, as the replication log retries it.
		srv := b.srv
		publishAfter(t, l, 20, func() error { return b.Ready(context.Background()) })
		if b.srv != srv || !srv.Running() {
			t.Fatal("the server was replaced or stopped")
		}
		if err := b.Ready(context.Background()); err != nil {
			t.Fatalf("ready after recovery: %v", err)
		}
		expectSequence(t, readAll(t, b.js), [2]any{"m", l.acked})
		if n := recoveries(t, b); n < 1 {
			t.Fatalf("fluxbase_broker_recoveries_total = %v, want at least 1", n)
		}
	})
}

// A whole cluster runs out of descriptors at once: each node heals its
// own JetStream, the cluster takes writes again, and every node serves the
// acknowledged messages once, in order.
func TestClusterHealAfterDescriptorExhaustion(t *testing.T) {
	inChild(t, func(t *testing.T) {
		lowerFDLimit(t)
		nodes, _ := startCluster(t, 3, "heal-secret", func(c *Config) {
			c.SyncInterval, c.DuplicateWindow = time.Second, 10*time.Minute
		})
		// Clustered, publishes go on being acknowledged while the
		// stores fail to sync their state files, until a raft log must
		// reopen a block file it closed idle (after 30 s) and its node
		// stops.
		l := &testLog{js: nodes[0].js}
		refuse(t, l, 40*time.Second)
		// Every node heals its own JetStream; the cluster then elects
		// its leaders again.
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		for i, b := range nodes {
			for err := ready(ctx, b); err != nil; err = ready(ctx, b) {
				if ctx.Err() != nil {
					t.Fatalf("node %d not ready after the descriptors were freed: %v", i, err)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		publishAfter(t, l, 20, func() error { return nodes[0].Ready(context.Background()) })
		var healed float64
		for _, b := range nodes {
			expectSequence(t, readAll(t, b.js), [2]any{"m", l.acked})
			healed += recoveries(t, b)
		}
		if healed < 1 {
			t.Fatal("no node recovered")
		}
		t.Logf("%v recoveries", healed)
	})
}

// While the change log refuses writes, Ready says so, and why.
func TestReadyWhileRefusingWrites(t *testing.T) {
	inChild(t, func(t *testing.T) {
		b, _ := refuseWrites(t, withoutHealing)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		for {
			err := ready(ctx, b)
			if err != nil && strings.Contains(err.Error(), "too many open files") {
				t.Logf("ready: %v", err)
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("ready while the log refuses writes: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}

// ready asks b's Ready once, as /ready does, for at most 5 s of ctx.
func ready(ctx context.Context, b *Broker) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return b.Ready(ctx)
}

// withoutHealing stops the broker's healer, to see the failure stay.
func withoutHealing(b *Broker) { b.heal.stop() }

// testLog publishes m-0, m-1, … one at a time, each until acknowledged.
type testLog struct {
	js    jetstream.JetStream
	acked int // m-0..m-(acked-1) are acknowledged
}

// publish tries to store the next message once.
func (l *testLog) publish() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	id := fmt.Sprintf("m-%d", l.acked)
	msg := &nats.Msg{Subject: "fluxbase.changes.public.t.insert", Header: nats.Header{}, Data: []byte(id)}
	msg.Header.Set(jetstream.MsgIDHeader, id)
	_, err := l.js.PublishMsg(ctx, msg)
	if err == nil {
		l.acked++
	}
	return err
}

// refuseWrites starts a broker in a process whose descriptor limit it
// lowers, publishes, and has a publish refused for want of descriptors.
func refuseWrites(t *testing.T, opts ...func(*Broker)) (*Broker, *testLog) {
	lowerFDLimit(t)
	// With an fsync interval, as by default, JetStream opens each stream's
	// state file to sync it every interval, and without descriptors fails
	// to. (Syncing every write, it fails when it reopens a block file it
	// closed idle.)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b, err := Start(ctx, Config{DataDir: t.TempDir(), SyncInterval: time.Second, DuplicateWindow: 10 * time.Minute},
		WithLogger(zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	for _, o := range opts {
		o(b)
	}
	l := &testLog{js: b.js}
	refuse(t, l, 100*time.Millisecond)
	return b, l
}

// lowerFDLimit makes the process's descriptors cheap to exhaust, until
// the test ends.
func lowerFDLimit(t *testing.T) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	saved := lim
	lim.Cur = min(lim.Cur, 2048)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &saved); err != nil {
			t.Error(err)
		}
	})
}

// refuse publishes 10 messages through l, then holds every descriptor the
// process may open until a publish, pause after the one before, is
// refused, and frees them again.
func refuse(t *testing.T, l *testLog, pause time.Duration) {
	for range 10 {
		if err := l.publish(); err != nil {
			t.Fatalf("publish before exhaustion: %v", err)
		}
	}
	var held []*os.File
	for {
		f, err := os.Open(os.DevNull)
		if err != nil {
			if !errors.Is(err, syscall.EMFILE) {
				t.Fatalf("exhaust descriptors: %v", err)
			}
			break
		}
		held = append(held, f)
	}
	t.Logf("holding %d descriptors", len(held))
	var refused error
	for deadline := time.Now().Add(2*time.Minute + 3*pause); time.Now().Before(deadline); {
		time.Sleep(pause)
		if refused = l.publish(); refused != nil {
			break
		}
	}
	for _, f := range held {
		f.Close()
	}
	if refused == nil {
		t.Fatal("every publish succeeded without descriptors")
	}
	t.Logf("publish %d refused without descriptors: %v", l.acked, refused)
}

// publishAfter publishes n more messages through l, each retried until
// acknowledged, within a generous deadline.
func publishAfter(t *testing.T, l *testLog, n int, ready func() error) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	for want := l.acked + n; l.acked < want; {
		if err := l.publish(); err != nil {
			if ctx.Err() != nil {
				t.Fatalf("publish %d after the descriptors were freed: %v (ready: %v)", l.acked, err, ready())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// recoveries reads fluxbase_broker_recoveries_total from b's collector.
func recoveries(t *testing.T, b *Broker) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(b))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "fluxbase_broker_recoveries_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatal("no fluxbase_broker_recoveries_total")
	return 0
}
