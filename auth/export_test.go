package auth

import (
	"context"
	"testing"
	"time"

	"github.com/fluxbase/fluxbase/broker"
)

// BucketForTest starts a standalone broker, closed when the test ends,
// and opens one of its buckets; the package's tests of both kinds use it.
func BucketForTest(t testing.TB, name string) *broker.KV {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b, err := broker.Start(ctx, broker.Config{DataDir: t.TempDir(), NodeName: "auth-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	kv, err := b.Bucket(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}
