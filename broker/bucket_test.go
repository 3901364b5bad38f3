package broker

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

// kvBroker starts a standalone broker closed when the test ends, before
// its directory is removed.
func kvBroker(t *testing.T) *Broker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := Start(ctx, Config{DataDir: t.TempDir(), NodeName: "kv"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

func TestBucketOperations(t *testing.T) {
	t.Parallel()
	b := kvBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := b.Bucket(ctx, "other"); err == nil {
		t.Fatal("opened a bucket the broker does not provision")
	}
	for _, name := range []string{PresenceBucket, RateLimitBucket, RevocationsBucket} {
		t.Run(name, func(t *testing.T) {
			kv, err := b.Bucket(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := kv.Get(ctx, "a"); !errors.Is(err, ErrKeyNotFound) {
				t.Fatalf("get missing: %v", err)
			}
			if keys, err := kv.Keys(ctx); err != nil || len(keys) != 0 {
				t.Fatalf("keys of an empty bucket: %v %v", keys, err)
			}
			r1, err := kv.Create(ctx, "a", []byte("1"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := kv.Create(ctx, "a", []byte("2")); !errors.Is(err, ErrKeyExists) {
				t.Fatalf("create existing: %v", err)
			}
			r2, err := kv.Update(ctx, "a", []byte("2"), r1)
			if err != nil || r2 <= r1 {
				t.Fatalf("update: %d %v", r2, err)
			}
			if _, err := kv.Update(ctx, "a", []byte("3"), r1); !errors.Is(err, ErrWrongRevision) {
				t.Fatalf("update at a stale revision: %v", err)
			}
			e, err := kv.Get(ctx, "a")
			if err != nil || string(e.Value) != "2" || e.Revision != r2 || e.Key != "a" || e.Deleted {
				t.Fatalf("get: %+v %v", e, err)
			}
			if _, err := kv.Put(ctx, "b.c", []byte("x")); err != nil {
				t.Fatal(err)
			}
			keys, err := kv.Keys(ctx)
			slices.Sort(keys)
			if err != nil || !slices.Equal(keys, []string{"a", "b.c"}) {
				t.Fatalf("keys: %v %v", keys, err)
			}
			if err := kv.Delete(ctx, "a"); err != nil {
				t.Fatal(err)
			}
			if _, err := kv.Get(ctx, "a"); !errors.Is(err, ErrKeyNotFound) {
				t.Fatalf("get deleted: %v", err)
			}
			if _, err := kv.Create(ctx, "a", []byte("again")); err != nil {
				t.Fatalf("create after delete: %v", err)
			}
		})
	}
	kv, err := b.Bucket(ctx, RevocationsBucket)
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	if _, err := kv.Get(ctx, "a"); !errors.Is(err, ErrClosed) {
		t.Fatalf("get after close: %v", err)
	}
}

func TestBucketWatch(t *testing.T) {
	t.Parallel()
	b := kvBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	kv, err := b.Bucket(ctx, PresenceBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "room1.alice", []byte("here")); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "room2.carol", []byte("elsewhere")); err != nil {
		t.Fatal(err)
	}
	seen := make(chan Entry, 10)
	done := make(chan error, 1)
	go func() {
		done <- kv.Watch(ctx, "room1.*", func(e Entry) error {
			seen <- e
			if e.Deleted {
				return ErrStopWatch
			}
			return nil
		})
	}()
	next := func() Entry {
		t.Helper()
		select {
		case e := <-seen:
			return e
		case <-ctx.Done():
			t.Fatal("no watch event")
			return Entry{}
		}
	}
	if e := next(); e.Key != "room1.alice" || string(e.Value) != "here" || e.Deleted {
		t.Fatalf("current value: %+v", e)
	}
	if _, err := kv.Put(ctx, "room1.bob", []byte("joined")); err != nil {
		t.Fatal(err)
	}
	if e := next(); e.Key != "room1.bob" || string(e.Value) != "joined" {
		t.Fatalf("change: %+v", e)
	}
	if err := kv.Delete(ctx, "room1.alice"); err != nil {
		t.Fatal(err)
	}
	if e := next(); e.Key != "room1.alice" || !e.Deleted {
		t.Fatalf("deletion: %+v", e)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// A watch ends when its context does.
	wctx, wcancel := context.WithCancel(ctx)
	go func() { done <- kv.Watch(wctx, ">", func(Entry) error { return nil }) }()
	wcancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("watch did not end with its context")
	}

	// And when the broker closes, whether the watch had started or not.
	go func() { done <- kv.Watch(ctx, ">", func(Entry) error { return nil }) }()
	b.Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("watch after close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("watch did not end when the broker closed")
	}
}
