package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/fluxbase/fluxbase/broker"
)

// RevocationKV is the shared bucket revocations travel through: the
// broker's RevocationsBucket, which every node watches.
type RevocationKV interface {
	Put(ctx context.Context, key string, value []byte) (uint64, error)
	Delete(ctx context.Context, key string) error
	Watch(ctx context.Context, pattern string, fn func(broker.Entry) error) error
}

// Revocations is one node's copy of the revoked sessions: a session ended
// on any node is written to the shared bucket, every node's watch adds it
// to its map within the broker's delivery time (milliseconds), and a
// request's token is checked against the map with no round trip. An
// entry lives until the session's last access token has expired, then
// any node deletes it.
type Revocations struct {
	kv RevocationKV

	mu      sync.RWMutex
	revoked map[string]time.Time // session id → when its tokens have all expired
	subs    []func(sessionID string)
	now     func() time.Time
	// sweepEvery is how often expired entries are deleted.
	sweepEvery time.Duration
}

// revocationPrefix heads every key: "session.<id>".
const revocationPrefix = "session."

type revocationValue struct {
	Until int64 `json:"until"`
}

// NewRevocations returns the revocations kept in kv; Run keeps them current.
func NewRevocations(kv RevocationKV) *Revocations {
	return &Revocations{kv: kv, revoked: map[string]time.Time{}, now: time.Now, sweepEvery: time.Minute}
}

// Revoke records sessionIDs as revoked until until, here at once and on
// every node through the bucket.
func (r *Revocations) Revoke(ctx context.Context, until time.Time, sessionIDs ...string) error {
	v, _ := json.Marshal(revocationValue{Until: until.Unix()})
	for _, id := range sessionIDs {
		if !validUUID(id) {
			continue
		}
		r.add(id, until)
		if _, err := r.kv.Put(ctx, revocationPrefix+id, v); err != nil {
			return err
		}
	}
	return nil
}

// Revoked reports whether the session's tokens are revoked.
func (r *Revocations) Revoked(sessionID string) bool {
	r.mu.RLock()
	until, ok := r.revoked[sessionID]
	r.mu.RUnlock()
	return ok && r.now().Before(until)
}

// OnRevoke calls fn with each session revoked from now on (on this node
// or another), on the watcher's goroutine: fn must not block.
func (r *Revocations) OnRevoke(fn func(sessionID string)) {
	r.mu.Lock()
	r.subs = append(r.subs, fn)
	r.mu.Unlock()
}

func (r *Revocations) add(id string, until time.Time) {
	r.mu.Lock()
	prev, had := r.revoked[id]
	if !had || until.After(prev) {
		r.revoked[id] = until
	}
	subs := r.subs
	r.mu.Unlock()
	if !had {
		for _, fn := range subs {
			fn(id)
		}
	}
}

// Run watches the bucket until ctx ends, retrying when the broker
// connection drops, and sweeps expired entries once a minute.
func (r *Revocations) Run(ctx context.Context) error {
	sweep := time.NewTicker(r.sweepEvery)
	defer sweep.Stop()
	done := make(chan error, 1)
	go func() { done <- r.watch(ctx) }()
	for {
		select {
		case err := <-done:
			return err
		case <-sweep.C:
			r.sweep(ctx)
		}
	}
}

func (r *Revocations) watch(ctx context.Context) error {
	for {
		err := r.kv.Watch(ctx, revocationPrefix+"*", func(e broker.Entry) error {
			id := strings.TrimPrefix(e.Key, revocationPrefix)
			if e.Deleted {
				r.mu.Lock()
				if until, ok := r.revoked[id]; ok && !r.now().Before(until) {
					delete(r.revoked, id)
				}
				r.mu.Unlock()
				return nil
			}
			var v revocationValue
			if json.Unmarshal(e.Value, &v) != nil {
				return nil
			}
			r.add(id, time.Unix(v.Until, 0))
			return nil
		})
		if ctx.Err() != nil {
			return nil
		}
		if err != nil && !errors.Is(err, broker.ErrClosed) {
			return fmt.Errorf("watch revocations: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// sweep forgets and deletes the entries whose tokens have all expired.
func (r *Revocations) sweep(ctx context.Context) {
	now := r.now()
	var gone []string
	r.mu.Lock()
	for id, until := range r.revoked {
		if !now.Before(until) {
			gone = append(gone, id)
			delete(r.revoked, id)
		}
	}
	r.mu.Unlock()
	for _, id := range gone {
		_ = r.kv.Delete(ctx, revocationPrefix+id)
	}
}
