package fanout

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkHubDispatch measures one change through the hub for 10,000
// subscribers: decode, index match, encode, enqueue. Queues are drained
// outside the timed part.
func BenchmarkHubDispatch(b *testing.B) {
	const subs = 10000
	cases := []struct {
		name   string
		topic  func(i int) string
		filter func(i int) string
		match  int // subscribers a change reaches
	}{
		{"same-payload-all-match", func(int) string { return "realtime:room" }, func(int) string { return "" }, subs},
		{"own-topic-all-match", func(i int) string { return fmt.Sprintf("realtime:u%d", i) }, func(int) string { return "" }, subs},
		{"eq-filter-one-match", func(i int) string { return fmt.Sprintf("realtime:u%d", i) }, func(i int) string { return fmt.Sprintf("owner=eq.u%d", i) }, 1},
		{"eq-filter-100-match", func(i int) string { return fmt.Sprintf("realtime:u%d", i) }, func(i int) string { return fmt.Sprintf("owner=eq.u%d", i%100) }, 100},
		{"scan-filter-all-evaluated", func(i int) string { return fmt.Sprintf("realtime:u%d", i) }, func(i int) string { return fmt.Sprintf("n=gt.%d", i) }, 4999},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			h := New(Config{QueueFrames: 1 << 20, QueueBytes: 1 << 30}, nil, nil, nil, nil)
			defer h.Close()
			clients := make([]*Client, subs)
			for i := range clients {
				clients[i] = h.NewClient(V2)
				f, err := ParseFilter(tc.filter(i))
				if err != nil {
					b.Fatal(err)
				}
				_, err = clients[i].Join(JoinSpec{Topic: tc.topic(i), Changes: []Binding{
					{ID: BindingID("*", "public", "todos", tc.filter(i)), Event: "*", Schema: "public", Table: "todos", Filter: f}}})
				if err != nil {
					b.Fatal(err)
				}
			}
			data := changeJSON("insert", "todos", 1, map[string]any{"owner": "u0", "n": 4999, "title": "write the benchmark"})
			ctx := context.Background()
			var frames []Frame
			delivered := 0
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			b.ResetTimer()
			var timed time.Duration
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				h.Dispatch(ctx, []Msg{{Seq: uint64(i + 1), Data: data}})
				timed += time.Since(t0)
				b.StopTimer()
				n := 0
				for _, c := range clients {
					frames = c.Queue.Take(frames)
					n += len(frames)
				}
				if n != tc.match {
					b.Fatalf("change reached %d subscribers, want %d", n, tc.match)
				}
				delivered += n
				b.StartTimer()
			}
			// ns/op also counts stopping and restarting the timer around
			// the drain; ns/change is the dispatch alone.
			b.ReportMetric(float64(timed.Nanoseconds())/float64(b.N), "ns/change")
			b.ReportMetric(float64(delivered)/float64(b.N), "deliveries/op")
			if delivered > 0 {
				b.ReportMetric(float64(timed.Nanoseconds())/float64(delivered), "ns/delivery")
			}
		})
	}
}

// BenchmarkDecodeChange measures decoding one change event of the log as
// the dispatcher does, once per change and node.
func BenchmarkDecodeChange(b *testing.B) {
	data := changeJSON("update", "todos", 1, map[string]any{"owner": "u0", "n": 4999, "title": "write the benchmark"})
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := DecodeChange(uint64(i+1), data); err != nil {
			b.Fatal(err)
		}
	}
}
