package auth

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/fluxbase/fluxbase/broker"
)

// RateKV is the shared bucket the counters live in: the broker's
// RateLimitBucket, whose entries expire after an hour.
type RateKV interface {
	Get(ctx context.Context, key string) (broker.Entry, error)
	Create(ctx context.Context, key string, value []byte) (uint64, error)
	Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error)
}

// RateLimiter counts requests per key in windows shared by every node: a
// counter in the broker's bucket, changed only at the revision it was
// read at (compare and swap), so N requests spread over any number of
// nodes are counted N times and a limit admits no more than it says.
// A window starts with its first request, so a burst cannot straddle
// two aligned windows and pass twice the limit.
type RateLimiter struct {
	kv  RateKV
	now func() time.Time
}

// NewRateLimiter returns a limiter over kv.
func NewRateLimiter(kv RateKV) *RateLimiter { return &RateLimiter{kv: kv, now: time.Now} }

type rateWindow struct {
	Start int64 `json:"start"` // unix milliseconds
	Count int   `json:"count"`
}

// maxRateAttempts bounds the compare-and-swap retries of one request
// when many nodes count the same key at once.
const maxRateAttempts = 50

// Allow counts one request for key under name ("token", "signup") and
// reports whether it is within limit per window; when it is not, retry
// says when the window ends. The key is escaped here.
func (l *RateLimiter) Allow(ctx context.Context, name, key string, limit int, window time.Duration) (ok bool, retry time.Duration, err error) {
	k := "auth." + name + "." + hex.EncodeToString([]byte(key))
	for range maxRateAttempts {
		now := l.now()
		e, err := l.kv.Get(ctx, k)
		if errors.Is(err, broker.ErrKeyNotFound) {
			v, _ := json.Marshal(rateWindow{Start: now.UnixMilli(), Count: 1})
			_, err := l.kv.Create(ctx, k, v)
			if errors.Is(err, broker.ErrKeyExists) {
				continue // another node counted first
			}
			if err != nil {
				return false, 0, fmt.Errorf("rate limit %s: %w", name, err)
			}
			return limit >= 1, window, nil
		}
		if err != nil {
			return false, 0, fmt.Errorf("rate limit %s: %w", name, err)
		}
		var w rateWindow
		if json.Unmarshal(e.Value, &w) != nil {
			w = rateWindow{}
		}
		end := time.UnixMilli(w.Start).Add(window)
		if !now.Before(end) {
			w = rateWindow{Start: now.UnixMilli()}
			end = now.Add(window)
		}
		if w.Count >= limit {
			return false, end.Sub(now), nil
		}
		w.Count++
		v, _ := json.Marshal(w)
		_, err = l.kv.Update(ctx, k, v, e.Revision)
		if errors.Is(err, broker.ErrWrongRevision) {
			continue
		}
		if err != nil {
			return false, 0, fmt.Errorf("rate limit %s: %w", name, err)
		}
		return true, 0, nil
	}
	return false, window, nil
}
