package fanout

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/fluxbase/fluxbase/bench"
	"github.com/fluxbase/fluxbase/bench/baseline"
	"github.com/fluxbase/fluxbase/bench/harness"
	"github.com/fluxbase/fluxbase/bench/realtime"
)

// The whole scenario against the in-process baseline, two steps on the
// same connections: every message reaches every subscriber exactly once,
// so nothing is lost and the counts add up step by step. How fast is the
// benchmark's to measure, not this test's to demand: on a busy machine a
// step may fall behind the asked rate, so the rate figures are checked for
// their arithmetic and the verdict for following from them.
func TestBaselineDeliversEverything(t *testing.T) {
	t.Parallel()
	const subs = 40
	rep, err := Run(context.Background(), Config{
		Subscribers: subs, Deliveries: []float64{4000, 8000}, Duration: time.Second, Targets: []string{TargetBaseline},
		InProcess: true, Drain: 5 * time.Second, Idle: 10 * time.Millisecond, Pause: 10 * time.Millisecond,
	}, &harness.Env{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Targets) != 1 || rep.Targets[0].Status != bench.StatusOK {
		t.Fatalf("targets %+v", rep.Targets)
	}
	res := rep.Data.(*Data).Targets[0]
	if res.Connected != subs || len(res.Steps) != 2 {
		t.Fatalf("connected %d, %d steps", res.Connected, len(res.Steps))
	}
	for i, rate := range []int{100, 200} { // messages/s: 4000 and 8000 deliveries/s over 40 subscribers
		st := res.Steps[i]
		a := st.Accounting
		if st.Rate != float64(rate) || a.Published != rate || a.Expected != int64(subs*rate) || st.Publish.Sent != rate || st.Publish.Failed != 0 {
			t.Fatalf("step %d: rate %v, published %d, expected %d, publish %+v", i, st.Rate, a.Published, a.Expected, st.Publish)
		}
		if a.Delivered != a.Expected || a.Lost != 0 || a.SubscribersWithLoss != 0 || a.Duplicates != 0 || st.LateFrames != 0 || st.Disconnects != 0 {
			t.Errorf("step %d: accounting %+v, late %d, disconnects %d", i, a, st.LateFrames, st.Disconnects)
		}
		if st.Latency.Count != uint64(subs*rate) || st.Latency.P50 <= 0 || st.Latency.P50 > st.Latency.Max {
			t.Errorf("step %d: latency %+v", i, st.Latency)
		}
		if a.Complete != rate || a.Spread.Count != uint64(rate) {
			t.Errorf("step %d: complete %d, spread %+v", i, a.Complete, a.Spread)
		}
		// Deliveries/s are the deliveries over a window of at least the
		// scheduled second, so never above the rate asked.
		if st.Asked != float64(subs*rate) || st.WindowSeconds < 1 || st.DeliveriesPerSec != float64(a.Delivered)/st.WindowSeconds {
			t.Errorf("step %d: %v deliveries/s over %v s for %d deliveries, %v asked", i, st.DeliveriesPerSec, st.WindowSeconds, a.Delivered, st.Asked)
		}
		// The verdict is the default criteria's on these figures.
		if v := judge(st, MinAchieved, DefaultSaturateP99); st.Verdict != v {
			t.Errorf("step %d: verdict %+v, the criteria give %+v", i, st.Verdict, v)
		}
		var perSecond int64
		for _, v := range st.PerSecond {
			perSecond += v
		}
		// The series covers the whole seconds of the window; deliveries in a
		// partial last second (late ones on a busy machine) are left out of
		// it, and there are none when the window is the scheduled second.
		if perSecond <= 0 || perSecond > a.Delivered || len(st.PerSecond) != max(int(st.WindowSeconds), 1) ||
			(st.WindowSeconds == 1 && perSecond != a.Delivered) {
			t.Errorf("step %d: per-second series %v (sum %d) for %d deliveries in %.2f s", i, st.PerSecond, perSecond, a.Delivered, st.WindowSeconds)
		}
	}
	if res.Steps[1].Offset <= res.Steps[0].Offset {
		t.Errorf("offsets %v, %v", res.Steps[0].Offset, res.Steps[1].Offset)
	}
	md := rep.Markdown()
	for _, want := range []string{"Step 1: 4000 deliveries/s", "Step 2: 8000 deliveries/s", "latency p99.9 (ms)", "server CPU per delivery (µs)"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	if len(rep.Plots) != 2 {
		t.Errorf("%d plots", len(rep.Plots))
	}
}

// The saturation ramp goes on after the listed step while steps pass and
// ends at its bound; the point found is then a lower bound. Here steps are
// judged on their accounting alone (any rate and p99 pass), so a busy
// machine cannot end the ramp early; a share of the rate that no step can
// reach ends the search at the listed step, before any ramp.
func TestSaturationRampInProcess(t *testing.T) {
	t.Parallel()
	cfg := Config{
		Subscribers: 20, Deliveries: []float64{1000}, Duration: 500 * time.Millisecond, Targets: []string{TargetBaseline},
		InProcess: true, Idle: 10 * time.Millisecond, Pause: 10 * time.Millisecond,
		Saturate: true, SaturateIncrement: 1000, SaturateDuration: 500 * time.Millisecond, SaturateSteps: 2,
		SaturateMinAchieved: 1e-9, SaturateP99: time.Hour,
	}
	rep, err := Run(context.Background(), cfg, &harness.Env{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	res := rep.Data.(*Data).Targets[0]
	if len(res.Steps) != 3 {
		t.Fatalf("%d steps, want the listed one and 2 of the ramp", len(res.Steps))
	}
	// 1000, 2000 and 3000 deliveries/s over 20 subscribers for 0.5 s each.
	for i, want := range []struct {
		target   float64
		ramp     bool
		messages int
	}{{1000, false, 25}, {2000, true, 50}, {3000, true, 75}} {
		st := res.Steps[i]
		a := st.Accounting
		if st.Target != want.target || st.Ramp != want.ramp || a.Published != want.messages || st.Publish.Failed != 0 {
			t.Fatalf("step %d: target %v, ramp %v, published %d, publish %+v; want %v, %v, %d", i, st.Target, st.Ramp, a.Published, st.Publish, want.target, want.ramp, want.messages)
		}
		if a.Expected != int64(20*want.messages) || a.Delivered != a.Expected || a.Lost != 0 || a.Duplicates != 0 ||
			a.SubscribersWithLoss != 0 || a.Complete != want.messages || st.Latency.Count != uint64(a.Delivered) || st.LateFrames != 0 {
			t.Errorf("step %d: accounting %+v, latency count %d, late %d", i, a, st.Latency.Count, st.LateFrames)
		}
		if !st.Verdict.Pass {
			t.Errorf("step %d: verdict %+v", i, st.Verdict)
		}
	}
	if s := res.Saturation; s == nil || !s.Found || s.Deliveries != 3000 || s.Achieved != res.Steps[2].DeliveriesPerSec || s.FailedAt != 0 || s.Reason != "" {
		t.Errorf("saturation %+v", res.Saturation)
	}
	if !strings.Contains(rep.Markdown(), "≥ 3000") {
		t.Errorf("report lacks the lower bound:\n%s", rep.Markdown())
	}

	// Deliveries/s never exceed the rate asked, so twice that fails every
	// step: the listed one fails and the ramp does not start.
	cfg.SaturateMinAchieved = 2
	rep, err = Run(context.Background(), cfg, &harness.Env{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	res = rep.Data.(*Data).Targets[0]
	if len(res.Steps) != 1 || res.Steps[0].Ramp || res.Steps[0].Accounting.Lost != 0 || res.Steps[0].Verdict.Pass ||
		!strings.Contains(res.Steps[0].Verdict.Reason, "below 200% of 1000") {
		t.Fatalf("steps %+v", res.Steps)
	}
	if s := res.Saturation; s == nil || s.Found || s.FailedAt != 1000 || s.Reason != res.Steps[0].Verdict.Reason {
		t.Errorf("saturation %+v", res.Saturation)
	}
}

// waitFor polls cond until it holds, for at most a minute: a bound for a
// test that would otherwise hang, not a measure of speed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting for %s after a minute", what)
		}
	}
}

// lossyServer sends messages 0..messages-1 to every connection, except
// that the first `lossy` connections (in accept order) miss every seq with
// (seq+conn)%5 == 0, and connection 0 gets seq 1 twice. Each message is
// stamped (seq+1) ms in the past, so latencies are known to lie above that.
type lossyServer struct {
	messages, lossy int
	next            atomic.Int64
	upgrader        websocket.Upgrader
	wg              sync.WaitGroup
	start           chan struct{}
}

func (s *lossyServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	conn := int(s.next.Add(1) - 1)
	s.wg.Go(func() {
		defer c.Close()
		<-s.start
		send := func(seq int) {
			ts := time.Now().Add(-time.Duration(seq+1) * time.Millisecond).UnixNano()
			_ = c.WriteMessage(websocket.TextMessage, baseline.Frame("realtime:bench", "tick", seq, ts, "pad"))
		}
		for seq := range s.messages {
			if conn < s.lossy && (seq+conn)%5 == 0 {
				continue
			}
			send(seq)
			if conn == 0 && seq == 1 {
				send(seq)
			}
		}
		// Something that is not a message, and one outside the run.
		_ = c.WriteMessage(websocket.TextMessage, []byte(`[null,"7","phoenix","phx_reply",{"status":"ok","response":{}}]`))
		send(s.messages + 3)
		// Stay open until the client goes.
		for {
			if _, _, err := c.NextReader(); err != nil {
				return
			}
		}
	})
}

func TestLossAndDuplicatesAreCounted(t *testing.T) {
	t.Parallel()
	const subs, messages, lossy = 10, 100, 4
	srv := &lossyServer{messages: messages, lossy: lossy, start: make(chan struct{})}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	g, err := NewGenerator(Spec{URLs: []string{"ws" + strings.TrimPrefix(hs.URL, "http")}, Subscribers: subs})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Connect(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if err := g.Start(Step{Index: 1, T0: time.Now().UnixNano(), Messages: messages, Seconds: 10}); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	close(srv.start)
	// Every connection's last frame is the one outside the run: once every
	// subscriber has had it, everything the server sent has been observed.
	want := int64(subs*messages - lossy*messages/5)
	waitFor(t, "the frames outside the run", func() bool { return g.Collect().Unknown >= subs })
	counts := g.Collect()
	elapsed := time.Since(begin)
	res := g.Stop()
	srv.wg.Wait()

	a := counts.Account(sentAll(messages, messages))
	if a.Expected != subs*messages || a.Delivered != want || a.Lost != lossy*messages/5 || counts.Deliveries != want {
		t.Errorf("expected %d delivered %d (%d) lost %d; want %d, %d, %d", a.Expected, a.Delivered, counts.Deliveries, a.Lost, subs*messages, want, lossy*messages/5)
	}
	if a.SubscribersWithLoss != lossy || a.Duplicates != 1 {
		t.Errorf("subscribers with loss %d, duplicates %d", a.SubscribersWithLoss, a.Duplicates)
	}
	if counts.Control != subs || counts.Unknown != subs {
		t.Errorf("control %d unknown %d, want %d each", counts.Control, counts.Unknown, subs)
	}
	// A seq every subscriber got counts as complete: the lossy connections
	// miss seqs ≡ 0, 4, 3 and 2 (mod 5), so those ≡ 1 are complete.
	if a.Complete != messages/5 || a.Spread.Count != messages/5 {
		t.Errorf("complete %d, want %d", a.Complete, messages/5)
	}
	if got := a.LossRate(); got != float64(lossy*messages/5)/float64(subs*messages) {
		t.Errorf("loss rate %v", got)
	}
	// Stamps are (seq+1) ms old when sent, after begin, and every receipt
	// came before elapsed: each latency lies between its stamp's age and
	// that age plus elapsed, whatever the machine's speed. The median age
	// of the deliveries is 50 ms; quantiles are within 0.8%.
	l := counts.Latency
	if l.Count() != uint64(want) || l.Min() < int64(time.Millisecond) || l.Max() < int64(100*time.Millisecond) || l.Max() > int64(elapsed+100*time.Millisecond) {
		t.Errorf("latency count %d min %d max %d (%v elapsed)", l.Count(), l.Min(), l.Max(), elapsed)
	}
	if p50 := l.Quantile(0.5); p50 < int64(49*time.Millisecond) || float64(p50) > 1.01*float64(elapsed+50*time.Millisecond) {
		t.Errorf("latency p50 %v (%v elapsed)", time.Duration(p50), elapsed)
	}
	if len(res.Disconnects) != 0 || counts.Disconnected != 0 {
		t.Errorf("disconnects %v, %d", res.Disconnects, counts.Disconnected)
	}
}

// A server that closes connections mid-run: the missing deliveries are
// loss and the disconnects are reported.
func TestDisconnectsCountAsLoss(t *testing.T) {
	t.Parallel()
	const subs, messages = 5, 20
	upgrader := websocket.Upgrader{}
	start := make(chan struct{})
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		<-start
		for seq := range messages / 2 {
			_ = c.WriteMessage(websocket.TextMessage, baseline.Frame("t", "e", seq, time.Now().UnixNano(), ""))
		}
		c.Close()
	}))
	defer hs.Close()
	g, err := NewGenerator(Spec{URLs: []string{"ws" + strings.TrimPrefix(hs.URL, "http")}, Subscribers: subs})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Connect(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if err := g.Start(Step{Index: 1, T0: time.Now().UnixNano(), Messages: messages, Seconds: 5}); err != nil {
		t.Fatal(err)
	}
	close(start)
	// A subscriber sees its connection close after the frames sent before.
	waitFor(t, "the closes", func() bool { return g.Collect().Disconnected >= subs })
	counts := g.Collect()
	res := g.Stop()
	a := counts.Account(sentAll(messages, messages))
	if a.Lost != subs*messages/2 || a.Delivered != subs*messages/2 || a.SubscribersWithLoss != subs || counts.Disconnected != subs {
		t.Errorf("lost %d, delivered %d, subscribers with loss %d, disconnected %d", a.Lost, a.Delivered, a.SubscribersWithLoss, counts.Disconnected)
	}
	n := 0
	for _, v := range res.Disconnects {
		n += v
	}
	if n != subs {
		t.Errorf("disconnects %v", res.Disconnects)
	}
}

// phoenixServer answers phx_join with ok and heartbeats with ok, then
// broadcasts text frames when told.
func phoenixServer(t *testing.T, frames int) (*httptest.Server, *atomic.Int64) {
	var joins atomic.Int64
	upgrader := websocket.Upgrader{}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/realtime/v1/websocket" || r.URL.Query().Get("vsn") != "2.0.0" {
			http.NotFound(w, r)
			return
		}
		c, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			_, b, err := c.ReadMessage()
			if err != nil {
				return
			}
			m, err := realtime.Parse(b)
			if err != nil || m.Event != "phx_join" {
				continue
			}
			joins.Add(1)
			reply, _ := json.Marshal([]any{m.JoinRef, m.Ref, m.Topic, "phx_reply", map[string]any{"status": "ok", "response": map[string]any{"postgres_changes": []any{}}}})
			_ = c.WriteMessage(websocket.TextMessage, reply)
			for seq := range frames {
				_ = c.WriteMessage(websocket.TextMessage, baseline.Frame(m.Topic, "tick", seq, time.Now().UnixNano(), ""))
			}
		}
	}))
	t.Cleanup(hs.Close)
	return hs, &joins
}

func TestProtocolJoinsAndProbe(t *testing.T) {
	t.Parallel()
	hs, joins := phoenixServer(t, 3)
	ws := "ws" + strings.TrimPrefix(hs.URL, "http")
	join := realtime.JoinPayload("key", []realtime.Binding{{Event: "INSERT", Schema: "public", Table: Table}})
	if err := probe(context.Background(), ws+"/realtime/v1/websocket?vsn=2.0.0", "realtime:x", join); err != nil {
		t.Fatalf("probe of a working endpoint: %v", err)
	}
	err := probe(context.Background(), ws+"/realtime/v1/missing", "realtime:x", join)
	if !errors.Is(err, bench.ErrNotAvailable) || !strings.Contains(err.Error(), "realtime endpoint not available") {
		t.Fatalf("probe of a missing endpoint: %v", err)
	}

	g, err := NewGenerator(Spec{URLs: []string{ws + "/realtime/v1/websocket?vsn=2.0.0"}, Subscribers: 3, Protocol: true, JoinPayload: join})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(Step{Index: 1, T0: time.Now().UnixNano(), Messages: 3, Seconds: 2}); err != nil {
		t.Fatal(err)
	}
	if err := g.Connect(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for g.Progress().Deliveries < 9 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	counts := g.Collect()
	res := g.Stop()
	if res.Connected != 3 || counts.Deliveries != 9 || joins.Load() != 4 {
		t.Errorf("connected %d deliveries %d joins %d", res.Connected, counts.Deliveries, joins.Load())
	}
}

// The generator process's JSON-lines protocol, over pipes.
func TestWorkerProtocol(t *testing.T) {
	t.Parallel()
	srv := baseline.New(baseline.Config{Writers: 2})
	hs := httptest.NewServer(srv)
	defer hs.Close()
	defer srv.Close()

	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- ServeWorker(context.Background(), inR, outW); outW.Close() }()
	// A worker that falls silent fails the test instead of hanging it.
	watchdog := time.AfterFunc(30*time.Second, func() { outW.CloseWithError(errors.New("the worker did not finish the test in 30 s")) })
	defer watchdog.Stop()
	enc := json.NewEncoder(inW)
	dec := json.NewDecoder(outR)
	next := func(want string) event {
		for {
			var ev event
			if err := dec.Decode(&ev); err != nil {
				t.Fatalf("waiting for %s: %v", want, err)
			}
			if ev.Event == want {
				return ev
			}
			if ev.Event == "error" {
				t.Fatalf("worker error: %s", ev.Error)
			}
		}
	}
	if err := enc.Encode(Spec{URLs: []string{"ws" + strings.TrimPrefix(hs.URL, "http") + "/ws"}, Subscribers: 5}); err != nil {
		t.Fatal(err)
	}
	if ev := next("ready"); ev.Progress.Connected != 5 {
		t.Fatalf("ready %+v", ev.Progress)
	}
	// The client side is ready once the handshake is answered; the server
	// counts a connection a moment later, and publishes only to those.
	for srv.Connections() < 5 {
		time.Sleep(time.Millisecond)
	}
	// Two steps on the same connections; the second's seqs follow the first's.
	for i, first := range []int64{0, 10} {
		_ = enc.Encode(command{Cmd: "start", Step: &Step{Index: i + 1, T0: time.Now().UnixNano(), First: first, Messages: 10, Seconds: 5}})
		next("started")
		if _, err := srv.Publish(context.Background(), baseline.PublishSpec{First: first, Count: 10, Rate: 1000}); err != nil {
			t.Fatal(err)
		}
		// Progress events carry the step's deliveries; wait for all 50.
		for {
			ev := next("progress")
			if ev.Progress.Step == i+1 && ev.Progress.Deliveries == 50 {
				break
			}
		}
		_ = enc.Encode(command{Cmd: "collect"})
		ev := next("counts")
		if a := ev.Counts.Account(sentAll(10, 10)); a.Lost != 0 || a.Delivered != 50 || ev.Counts.Latency.Count() != 50 || ev.Counts.Unknown != 0 {
			t.Errorf("step %d: counts %+v", i+1, ev.Counts)
		}
	}
	// A step the receipt bits cannot hold is refused, and the worker goes on.
	_ = enc.Encode(command{Cmd: "start", Step: &Step{Index: 3, Messages: 1 << 40}})
	if ev := next("error"); !strings.Contains(ev.Error, "receipt bits") {
		t.Errorf("error %q", ev.Error)
	}
	_ = enc.Encode(command{Cmd: "stop"})
	ev := next("result")
	if ev.Result.Connected != 5 || len(ev.Result.Disconnects) != 0 {
		t.Errorf("result %+v", ev.Result)
	}
	inW.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
