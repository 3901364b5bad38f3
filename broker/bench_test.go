package broker

import (
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// benchPublish publishes b.N messages of 256 bytes through js with at most
// window unacknowledged, as the replication log does, and reports msgs/s.
func benchPublish(b *testing.B, nc *nats.Conn, window int) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(window))
	if err != nil {
		b.Fatal(err)
	}
	payload := make([]byte, 256)
	b.SetBytes(int64(len(payload)))
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		msg := &nats.Msg{Subject: "fluxbase.changes.public.bench.insert", Data: payload, Header: nats.Header{}}
		msg.Header.Set(jetstream.MsgIDHeader, strconv.Itoa(i))
		if _, err := js.PublishMsgAsync(msg, jetstream.WithStallWait(time.Minute)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("publishes not acknowledged")
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

// BenchmarkPublishR1: a standalone node, fsync on every write.
func BenchmarkPublishR1(b *testing.B) {
	br := start(b, Config{DataDir: b.TempDir()})
	defer br.Close()
	benchPublish(b, br.Conn(), 4096)
}

// BenchmarkPublishR1Interval: a standalone node syncing every 100 ms.
func BenchmarkPublishR1Interval(b *testing.B) {
	br := start(b, Config{DataDir: b.TempDir(), SyncInterval: 100 * time.Millisecond})
	defer br.Close()
	benchPublish(b, br.Conn(), 4096)
}

// BenchmarkPublishR3: three nodes on loopback, the stream replicated three
// ways; published through node 1.
func BenchmarkPublishR3(b *testing.B) {
	nodes, _ := startCluster(b, 3, "bench")
	benchPublish(b, nodes[0].Conn(), 4096)
}
