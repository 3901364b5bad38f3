package fanout

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fluxbase/fluxbase/bench"
	"github.com/fluxbase/fluxbase/bench/baseline"
	"github.com/fluxbase/fluxbase/bench/realtime"
)

// publisher sends count messages (seq first..first+count-1) at rate per
// second, each stamped with its send time, and says which went out.
type publisher interface {
	Publish(ctx context.Context, first int64, count int, rate float64) (PublishStats, error)
	Close()
}

// PublishStats describe a publish phase.
type PublishStats struct {
	Sent     int      `json:"sent"`
	Failed   int      `json:"failed"`
	Seconds  float64  `json:"seconds"`
	MaxLagMs float64  `json:"max_lag_ms"` // worst delay behind schedule
	Errors   []string `json:"errors,omitempty"`
	sent     []bool   // by seq - first
}

func payloadPad(payloadBytes int) string { return strings.Repeat("x", max(payloadBytes-40, 0)) }

// baselinePublisher asks each baseline server to publish; each paces and
// stamps its own frames.
type baselinePublisher struct {
	urls         []string // http://host:port of each server
	topic        string
	payloadBytes int
}

func (b *baselinePublisher) Publish(ctx context.Context, first int64, count int, rate float64) (PublishStats, error) {
	spec, _ := json.Marshal(baseline.PublishSpec{First: first, Count: count, Rate: rate, PayloadBytes: b.payloadBytes, Topic: b.topic})
	results := make([]baseline.PublishResult, len(b.urls))
	errs := make([]error, len(b.urls))
	var wg sync.WaitGroup
	start := time.Now()
	for i, u := range b.urls {
		wg.Go(func() {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, u+"/publish", bytes.NewReader(spec))
			if err != nil {
				errs[i] = err
				return
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				errs[i] = fmt.Errorf("publish on %s: %w", u, err)
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				errs[i] = fmt.Errorf("publish on %s: %s", u, resp.Status)
				return
			}
			errs[i] = json.NewDecoder(resp.Body).Decode(&results[i])
		})
	}
	wg.Wait()
	st := PublishStats{Sent: count, Seconds: time.Since(start).Seconds()}
	for i := range results {
		st.Sent = min(st.Sent, results[i].Sent)
		st.MaxLagMs = max(st.MaxLagMs, results[i].MaxLagMs)
	}
	st.sent = sentAll(st.Sent, count)
	return st, errors.Join(errs...)
}

func (b *baselinePublisher) Close() {}

// insertPublisher writes one row per message into the table whose changes
// the subscribers follow, from a few connections so one commit's latency
// does not cap the rate.
type insertPublisher struct {
	pool         *pgxpool.Pool
	table        string // quoted, schema-qualified
	writers      int
	payloadBytes int
	room         int64 // written to room_id when positive (the row-level security mode)
}

func (p *insertPublisher) Publish(ctx context.Context, first int64, count int, rate float64) (PublishStats, error) {
	st := PublishStats{sent: make([]bool, count)}
	pad := payloadPad(p.payloadBytes)
	seqs := make(chan int, p.writers*4)
	var failed atomic.Int64
	var mu sync.Mutex // guards st.Errors
	var wg sync.WaitGroup
	sql := "insert into " + p.table + " (bench_seq, bench_ts, pad) values ($1, $2, $3)"
	args := func(seq int) []any { return []any{first + int64(seq), time.Now().UnixNano(), pad} }
	if p.room > 0 {
		sql = "insert into " + p.table + " (bench_seq, bench_ts, pad, room_id) values ($1, $2, $3, $4)"
		args = func(seq int) []any { return []any{first + int64(seq), time.Now().UnixNano(), pad, p.room} }
	}
	for range p.writers {
		wg.Go(func() {
			for seq := range seqs {
				_, err := p.pool.Exec(ctx, sql, args(seq)...)
				if err != nil {
					failed.Add(1)
					mu.Lock()
					if len(st.Errors) < 5 {
						st.Errors = append(st.Errors, err.Error())
					}
					mu.Unlock()
					continue
				}
				st.sent[seq] = true // each seq is written by one goroutine only
			}
		})
	}
	start := time.Now()
	lag, err := bench.Pace(ctx, count, rate, func(seq int) error {
		select {
		case seqs <- seq:
		case <-ctx.Done():
		}
		return nil
	})
	close(seqs)
	wg.Wait()
	st.Seconds = time.Since(start).Seconds()
	st.MaxLagMs = float64(lag) / float64(time.Millisecond)
	st.Failed = int(failed.Load())
	for _, ok := range st.sent {
		if ok {
			st.Sent++
		}
	}
	return st, err
}

// Close leaves the pool to its owner.
func (p *insertPublisher) Close() {}

// broadcastPublisher joins the channel on one node and sends client
// broadcasts, as supabase-js's channel.send does.
type broadcastPublisher struct {
	c            *websocket.Conn
	drained      chan struct{} // closed when the reader has stopped
	topic        string
	payloadBytes int
}

func newBroadcastPublisher(ctx context.Context, url, topic, token string, payloadBytes int) (*broadcastPublisher, error) {
	c, err := realtime.Dial(ctx, realtime.Dialer(nil, 10*time.Second), url)
	if err != nil {
		return nil, err
	}
	if err := realtime.Join(c, "1", topic, realtime.JoinPayload(token, nil), 10*time.Second); err != nil {
		c.Close()
		return nil, err
	}
	b := &broadcastPublisher{c: c, drained: make(chan struct{}), topic: topic, payloadBytes: payloadBytes}
	// Replies and anything else the server sends are read and dropped.
	go func() {
		defer close(b.drained)
		for {
			if _, _, err := c.NextReader(); err != nil {
				return
			}
		}
	}()
	return b, nil
}

func (b *broadcastPublisher) Publish(ctx context.Context, first int64, count int, rate float64) (PublishStats, error) {
	st := PublishStats{sent: make([]bool, count)}
	pad := payloadPad(b.payloadBytes)
	var ref uint64 = 1
	start := time.Now()
	lag, err := bench.Pace(ctx, count, rate, func(seq int) error {
		ref++
		payload := fmt.Appendf(nil, `{"bench_seq":%d,"bench_ts":%d,"pad":"%s"}`, first+int64(seq), time.Now().UnixNano(), pad)
		_ = b.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if werr := b.c.WriteMessage(websocket.TextMessage, realtime.BroadcastFrame("1", realtime.Ref(ref), b.topic, "tick", payload)); werr != nil {
			st.Failed++
			if len(st.Errors) < 5 {
				st.Errors = append(st.Errors, werr.Error())
			}
			return nil
		}
		st.sent[seq] = true
		st.Sent++
		return nil
	})
	st.Seconds = time.Since(start).Seconds()
	st.MaxLagMs = float64(lag) / float64(time.Millisecond)
	return st, err
}

func (b *broadcastPublisher) Close() {
	b.c.Close()
	<-b.drained
}
