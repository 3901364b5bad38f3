package storage_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/fluxbase/fluxbase/internal/pgtest"
	"github.com/fluxbase/fluxbase/internal/s3test"
	"github.com/fluxbase/fluxbase/storage"
)

var s3server *s3test.Server

// TestMain starts one S3 server and one PostgreSQL cluster for the
// package's tests.
func TestMain(m *testing.M) {
	var err error
	s3server, err = s3test.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "s3test:", err)
		os.Exit(1)
	}
	code := pgtest.Main(m)
	s3server.Stop()
	os.Exit(code)
}

// The backend creates its bucket when missing, and finds it the next
// time.
func TestS3Conformance(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := s3server.Config("conformance")
	b, err := storage.NewS3(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := storage.NewS3(ctx, cfg); err != nil {
		t.Fatalf("again, with the bucket there: %v", err)
	}
	conformance(t, b)
}
