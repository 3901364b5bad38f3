package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// healChildEnv makes TestHealAfterDescriptorExhaustion run its scenario
// in this process: the scenario lowers the process's descriptor limit and
// exhausts it, which the package's other tests, running in parallel, must
// not share.
const healChildEnv = "FLUXBASE_TEST_HEAL_CHILD"

// A node that runs out of file descriptors (a flood of websockets) fails
// to open the change log's next block file, and JetStream keeps that
// write error: every later publish is refused, long after the descriptors
// are free again. The broker notices, restarts JetStream on the running
// server, and the log takes writes again — every acknowledged message in
// it once, in order — without a restart of the node.
func TestHealAfterDescriptorExhaustion(t *testing.T) {
	if os.Getenv(healChildEnv) == "" {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHealAfterDescriptorExhaustion$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), healChildEnv+"=1")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("scenario: %v\n%s", err, out.String())
		}
		t.Logf("scenario:\n%s", out.String())
		return
	}
	healScenario(t)
}

func healScenario(t *testing.T) {
	// A lower limit makes exhausting it cheap; restored at the end.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	saved := lim
	lim.Cur = min(lim.Cur, 2048)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &saved); err != nil {
			t.Error(err)
		}
	}()

	// With an fsync interval, JetStream opens each stream's state file to
	// sync it every interval, and fails to without descriptors. (Syncing
	// every write, it fails when it reopens a block file it closed idle.)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b, err := Start(ctx, Config{DataDir: t.TempDir(), SyncInterval: time.Second, DuplicateWindow: 10 * time.Minute},
		WithLogger(zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	srv := b.srv
	var acked int // messages m-0..m-(acked-1) are acknowledged
	pub := func(ctx context.Context) error {
		id := fmt.Sprintf("m-%d", acked)
		msg := &nats.Msg{Subject: "fluxbase.changes.public.t.insert", Header: nats.Header{},
			Data: []byte(id)}
		msg.Header.Set(jetstream.MsgIDHeader, id)
		_, err := b.js.PublishMsg(ctx, msg)
		if err == nil {
			acked++
		}
		return err
	}
	attempt := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return pub(ctx)
	}
	for range 10 {
		if err := attempt(); err != nil {
			t.Fatalf("publish before exhaustion: %v", err)
		}
	}

	// Hold every descriptor the process may still open.
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
	// Publish until the log's next sync fails and it refuses writes.
	var failed error
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if failed = attempt(); failed != nil {
			break
		}
	}
	for _, f := range held {
		f.Close()
	}
	if failed == nil {
		t.Fatal("every publish succeeded without descriptors")
	}
	t.Logf("publish %d refused without descriptors: %v", acked, failed)

	// The descriptors are free: publishes are taken again, the refused
	// message first, as the replication log retries it.
	ctx, cancel = context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	logged := false
	for want := acked + 20; acked < want; {
		err := attempt()
		if err != nil {
			if !logged {
				t.Logf("ready while refused: %v", b.Ready(ctx))
				logged = true
			}
			if ctx.Err() != nil {
				t.Fatalf("publish %d after the descriptors were freed: %v (ready: %v)", acked, err, b.Ready(context.Background()))
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

	got := readAll(t, b.js)
	expectSequence(t, got, [2]any{"m", acked})

	if n := recoveries(t, b); n < 1 {
		t.Fatalf("fluxbase_broker_recoveries_total = %v, want at least 1", n)
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
