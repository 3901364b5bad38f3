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
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		srv := b.srv
		for want := l.acked + 20; l.acked < want; {
			if err := l.publish(); err != nil {
				if ctx.Err() != nil {
					t.Fatalf("publish %d after the descriptors were freed: %v (ready: %v)", l.acked, err, b.Ready(context.Background()))
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		if b.srv != srv || !srv.Running() {
			t.Fatal("the server was replaced or stopped")
		}
		if err := b.Ready(ctx); err != nil {
			t.Fatalf("ready after recovery: %v", err)
		}
		expectSequence(t, readAll(t, b.js), [2]any{"m", l.acked})
		if n := recoveries(t, b); n < 1 {
			t.Fatalf("fluxbase_broker_recoveries_total = %v, want at least 1", n)
		}
	})
}

// While the change log refuses writes, Ready says so, and why.
func TestReadyWhileRefusingWrites(t *testing.T) {
	inChild(t, func(t *testing.T) {
		b, _ := refuseWrites(t, withoutHealing)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		for {
			err := b.Ready(ctx)
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
// lowers (restored at the test's end), publishes, holds every descriptor
// the process may open until a publish is refused, and frees them again.
func refuseWrites(t *testing.T, opts ...func(*Broker)) (*Broker, *testLog) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	saved := lim
	lim.Cur = min(lim.Cur, 2048) // cheap to exhaust
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &saved); err != nil {
			t.Error(err)
		}
	})

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
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
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
	return b, l
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
