package broker

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fluxbase/fluxbase/change"
)

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func start(t testing.TB, cfg Config) *Broker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start broker %s: %v", cfg.NodeName, err)
	}
	return b
}

// publish stores n messages with ids prefix-0..n-1, each acknowledged.
func publish(t testing.TB, js jetstream.JetStream, prefix string, n int) {
	t.Helper()
	// Generous: after a node stops, the stream's leader is elected again
	// by timeouts of several seconds each, slower still under -race on a
	// loaded machine.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for i := range n {
		id := fmt.Sprintf("%s-%d", prefix, i)
		msg := &nats.Msg{Subject: "fluxbase.changes.public.t.insert", Data: []byte(id), Header: nats.Header{}}
		msg.Header.Set(jetstream.MsgIDHeader, id)
		// Publish one at a time with retries, as the replication log does
		// after a failure: the message id makes a retry harmless.
		var failed error // the last failure that was not the deadline's
		for {
			_, err := js.PublishMsg(ctx, msg)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("publish %s: %v (before that: %v)", id, err, failed)
			}
			failed = err
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// readAll reads the whole stream through js with an ordered consumer.
func readAll(t testing.TB, js jetstream.JetStream) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var s jetstream.Stream
	var err error
	for s, err = js.Stream(ctx, change.Stream); err != nil; s, err = js.Stream(ctx, change.Stream) {
		if ctx.Err() != nil {
			t.Fatalf("stream info: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	total := s.CachedInfo().State.Msgs
	c, err := js.OrderedConsumer(ctx, change.Stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for uint64(len(out)) < total {
		batch, err := c.Fetch(int(min(500, total-uint64(len(out)))), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			out = append(out, string(m.Data()))
		}
		if batch.Error() != nil && ctx.Err() != nil {
			t.Fatal(batch.Error())
		}
	}
	return out
}

func expectSequence(t testing.TB, got []string, parts ...[2]any) {
	t.Helper()
	var want []string
	for _, p := range parts {
		for i := range p[1].(int) {
			want = append(want, fmt.Sprintf("%s-%d", p[0], i))
		}
	}
	if len(got) != len(want) {
		t.Fatalf("read %d messages, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("message %d is %q, want %q", i, got[i], want[i])
		}
	}
}

// Standalone: 1,000 messages survive a restart, in order.
func TestStandaloneRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := Config{DataDir: dir, NodeName: "solo", DuplicateWindow: time.Minute}
	b := start(t, cfg)
	publish(t, b.JetStream(), "m", 1000)
	// A redelivered publish inside the duplicate window is stored once.
	publish(t, b.JetStream(), "m", 10)
	b.Close()

	b = start(t, cfg)
	defer b.Close()
	expectSequence(t, readAll(t, b.JetStream()), [2]any{"m", 1000})
	if err := b.Ready(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// The replication log's precondition on the previous message's id holds
// across a restart that comes long after the duplicate window: the server
// takes the last id from the last stored message, not from the window.
func TestLastMsgIDOutlivesDuplicateWindow(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := Config{DataDir: dir, NodeName: "solo", DuplicateWindow: 100 * time.Millisecond}
	b := start(t, cfg)
	publish(t, b.JetStream(), "w", 3)
	b.Close()
	time.Sleep(300 * time.Millisecond) // three windows
	b = start(t, cfg)
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	send := func(id, expect string) error {
		msg := &nats.Msg{Subject: "fluxbase.changes.public.t.insert", Data: []byte(id), Header: nats.Header{}}
		msg.Header.Set(jetstream.MsgIDHeader, id)
		msg.Header.Set(jetstream.ExpectedLastMsgIDHeader, expect)
		_, err := b.JetStream().PublishMsg(ctx, msg)
		return err
	}
	if err := send("w-3", "w-1"); err == nil {
		t.Fatal("a publish expecting a stale last id was stored")
	}
	if err := send("w-3", "w-2"); err != nil {
		t.Fatalf("publish expecting the last stored id after a restart: %v", err)
	}
	expectSequence(t, readAll(t, b.JetStream()), [2]any{"w", 4})
}

// A restart with other limits updates the stream.
func TestRestartUpdatesLimits(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	b := start(t, Config{DataDir: dir, ChangesMaxAge: time.Hour, ChangesMaxBytes: 1 << 30})
	b.Close()
	b = start(t, Config{DataDir: dir, ChangesMaxAge: 2 * time.Hour, ChangesMaxBytes: 2 << 30})
	defer b.Close()
	s, err := b.JetStream().Stream(context.Background(), change.Stream)
	if err != nil {
		t.Fatal(err)
	}
	if c := s.CachedInfo().Config; c.MaxAge != 2*time.Hour || c.MaxBytes != 2<<30 || c.Duplicates != DefaultDuplicateWindow {
		t.Fatalf("stream config after restart: age %v bytes %d dupes %v", c.MaxAge, c.MaxBytes, c.Duplicates)
	}
}

// Three nodes: published through node 1, read through node 3; with node 2
// stopped the stream still takes and serves messages; node 2 restarts and
// catches up; nothing lost or duplicated.
func TestCluster(t *testing.T) {
	t.Parallel()
	nodes, cfg := startCluster(t, 3, "cluster-secret")
	if r := nodes[0].Replicas(); r != 3 {
		t.Fatalf("replicas %d, want 3", r)
	}
	publish(t, nodes[0].JetStream(), "a", 200)
	expectSequence(t, readAll(t, nodes[2].JetStream()), [2]any{"a", 200})

	nodes[1].Close()
	publish(t, nodes[0].JetStream(), "b", 200)
	expectSequence(t, readAll(t, nodes[2].JetStream()), [2]any{"a", 200}, [2]any{"b", 200})

	nodes[1] = start(t, cfg(1))
	publish(t, nodes[1].JetStream(), "c", 100)
	for _, i := range []int{1, 2, 0} {
		expectSequence(t, readAll(t, nodes[i].JetStream()), [2]any{"a", 200}, [2]any{"b", 200}, [2]any{"c", 100})
	}
}

// startCluster starts n brokers clustered by routes on loopback, all at
// once (the cluster starts once a majority is up), and closes them when
// tb ends. cfg(i) is node i's configuration, to restart it; each of
// adjust changes it.
func startCluster(tb testing.TB, n int, secret string, adjust ...func(*Config)) (nodes []*Broker, cfg func(i int) Config) {
	tb.Helper()
	ports := make([]int, n)
	routes := make([]string, n)
	for i := range ports {
		ports[i] = freePort(tb)
		routes[i] = "nats://127.0.0.1:" + strconv.Itoa(ports[i])
	}
	base := tb.TempDir()
	cfg = func(i int) Config {
		c := Config{
			DataDir:     filepath.Join(base, strconv.Itoa(i)),
			NodeName:    "n" + strconv.Itoa(i),
			ClusterHost: "127.0.0.1",
			ClusterPort: ports[i],
			Routes:      routes,
			RouteSecret: secret,
		}
		for _, a := range adjust {
			a(&c)
		}
		return c
	}
	nodes = make([]*Broker, n)
	errs := make(chan error, n)
	for i := range nodes {
		go func() {
			var err error
			nodes[i], err = Start(context.Background(), cfg(i))
			errs <- err
		}()
	}
	var first error
	for range nodes {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	tb.Cleanup(func() {
		for _, b := range nodes {
			if b != nil {
				b.Close()
			}
		}
	})
	if first != nil {
		tb.Fatal(first)
	}
	return nodes, cfg
}

// An external client reads the change stream on the client port with the
// service key, and is refused without it.
func TestExternalClient(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	b := start(t, Config{
		DataDir: t.TempDir(), ClientPort: port, ClientHost: "127.0.0.1",
		ServiceKeyValid: func(p string) bool { return p == "the-service-key" },
	})
	defer b.Close()
	publish(t, b.JetStream(), "x", 5)
	url := "nats://127.0.0.1:" + strconv.Itoa(port)

	for _, opt := range []nats.Option{nil, nats.UserInfo(ServiceUser, "wrong"), nats.UserInfo("fluxbase-node", "guess")} {
		opts := []nats.Option{nats.MaxReconnects(0)}
		if opt != nil {
			opts = append(opts, opt)
		}
		if nc, err := nats.Connect(url, opts...); err == nil {
			nc.Close()
			t.Fatal("connected without the service key")
		}
	}
	nc, err := nats.Connect(url, nats.UserInfo(ServiceUser, "the-service-key"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	expectSequence(t, readAll(t, js), [2]any{"x", 5})

	// A reader, not a writer: it can neither add to the log nor delete it.
	// (A refused request gets no answer: each waits out its own timeout.)
	short := func() context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		t.Cleanup(cancel)
		return ctx
	}
	if _, err := js.Publish(short(), "fluxbase.changes.public.t.insert", []byte("forged")); err == nil {
		t.Fatal("an external client published into the change log")
	}
	if err := js.DeleteStream(short(), change.Stream); err == nil {
		t.Fatal("an external client deleted the change log")
	}
	if _, err := js.Stream(short(), change.Stream); err != nil {
		t.Fatalf("stream info after the refused writes: %v", err)
	}
	expectSequence(t, readAll(t, b.JetStream()), [2]any{"x", 5})
}
