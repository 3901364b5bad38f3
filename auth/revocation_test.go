package auth

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/fluxbase/fluxbase/broker"
)

// Two nodes' Revocations on one bucket: a revocation on one reaches the
// other's memory and its subscribers; expired entries are swept from both
// and from the bucket.
func TestRevocationsShared(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	kv := BucketForTest(t, broker.RevocationsBucket)
	a, other := NewRevocations(kv), NewRevocations(kv)
	other.sweepEvery = 50 * time.Millisecond
	seen := make(chan string, 10)
	other.OnRevoke(func(id string) { seen <- id })

	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, r := range []*Revocations{a, other} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.Run(runCtx); err != nil {
				t.Errorf("run: %v", err)
			}
		}()
	}
	defer func() { stop(); wg.Wait() }()

	live, short := newUUID(), newUUID()
	if err := a.Revoke(ctx, time.Now().Add(time.Hour), live, "not-a-session-id"); err != nil {
		t.Fatal(err)
	}
	if !a.Revoked(live) {
		t.Fatal("the revoking node does not refuse at once")
	}
	select {
	case id := <-seen:
		if id != live {
			t.Fatalf("subscriber got %s", id)
		}
	case <-ctx.Done():
		t.Fatal("the revocation never reached the other node")
	}
	if !other.Revoked(live) || other.Revoked(newUUID()) {
		t.Fatal("the other node's set is wrong")
	}
	// An entry whose tokens have expired is forgotten and deleted.
	if err := a.Revoke(ctx, time.Now().Add(-time.Second), short); err != nil {
		t.Fatal(err)
	}
	if a.Revoked(short) {
		t.Fatal("an expired revocation still refuses")
	}
	for {
		_, err := kv.Get(ctx, revocationPrefix+short)
		if errors.Is(err, broker.ErrKeyNotFound) {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the expired entry was never swept")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := kv.Get(ctx, revocationPrefix+live); err != nil {
		t.Fatalf("a live entry was swept: %v", err)
	}
}

// A window counts up to the limit, refuses with the time left, and
// starts again with the first request after it ends; keys count apart.
func TestRateLimiterWindows(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	kv := BucketForTest(t, broker.RateLimitBucket)
	l := NewRateLimiter(kv)
	now := time.Unix(1_800_000_000, 0)
	l.now = func() time.Time { return now }
	allow := func(key string) (bool, time.Duration) {
		t.Helper()
		ok, retry, err := l.Allow(ctx, "token", key, 3, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return ok, retry
	}
	for i := range 3 {
		if ok, _ := allow("10.0.0.1"); !ok {
			t.Fatalf("request %d refused", i+1)
		}
	}
	now = now.Add(20 * time.Second)
	if ok, retry := allow("10.0.0.1"); ok || retry != 40*time.Second {
		t.Fatalf("fourth: ok %v, retry %v", ok, retry)
	}
	if ok, _ := allow("2001:db8::1"); !ok {
		t.Fatal("another address shares the count")
	}
	now = now.Add(40 * time.Second)
	if ok, _ := allow("10.0.0.1"); !ok {
		t.Fatal("a new window still refuses")
	}
}
