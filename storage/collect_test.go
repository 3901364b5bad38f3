package storage_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/fluxbase/fluxbase/storage"
)

func pending(t *testing.T, s *storage.Store) int {
	t.Helper()
	var n int
	if err := s.Pool().QueryRow(context.Background(), `select count(*) from storage.fluxbase_pending`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Uploads, replaces, moves, copies and removes leave no record behind;
// bytes whose row went without them (a delete in SQL, the node's death
// after its bytes) are collected, uploads in flight only when older than
// the age given.
func TestCollect(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, b := newStore(t)
	if _, err := put(s, user(alice), alice+"/a.txt", "one", false); err != nil {
		t.Fatal(err)
	}
	if _, err := put(s, user(alice), alice+"/a.txt", "two", true); err != nil {
		t.Fatal(err)
	}
	if err := s.Move(ctx, user(alice), "private", alice+"/a.txt", "private", alice+"/b.txt"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Copy(ctx, user(alice), "private", alice+"/b.txt", "private", alice+"/c.txt", true); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Remove(ctx, user(alice), "private", []string{alice + "/c.txt"}); err != nil {
		t.Fatal(err)
	}
	if n := pending(t, s); n != 0 || files(t, b) != 1 {
		t.Fatalf("%d records and %d files after the calls, want 0 and 1", n, files(t, b))
	}

	// An app deletes the row in SQL: the trigger records the version.
	if _, err := s.Pool().Exec(ctx, `delete from storage.objects where name = $1`, alice+"/b.txt"); err != nil {
		t.Fatal(err)
	}
	// A node died after writing an upload's bytes, before its row.
	if _, err := s.Pool().Exec(ctx, `insert into storage.fluxbase_pending (bucket_id, name, version, kind) values ('private', $1, 'v-dead', 'upload')`, alice+"/d.txt"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Put(ctx, storage.Key("private", alice+"/d.txt", "v-dead"), strings.NewReader("orphan"), -1); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Collect(ctx, time.Hour); err != nil || n != 1 {
		t.Fatalf("collected %d (%v), want the deleted row's version only", n, err)
	}
	if n, err := s.Collect(ctx, 0); err != nil || n != 1 {
		t.Fatalf("collected %d (%v), want the dead upload", n, err)
	}
	if n := files(t, b); n != 0 || pending(t, s) != 0 {
		t.Fatalf("%d files and %d records left", n, pending(t, s))
	}
}

// collectingReader runs a collection, with no age, in the middle of the
// upload whose body it is.
type collectingReader struct {
	s    *storage.Store
	r    io.Reader
	done bool
	err  error
}

func (c *collectingReader) Read(p []byte) (int, error) {
	if !c.done {
		c.done = true
		_, c.err = c.s.Collect(context.Background(), 0)
	}
	return c.r.Read(p)
}

// An upload whose record a collector took while it ran fails, and
// leaves neither bytes nor a row: its row never names collected bytes.
func TestUploadOutlivingCollection(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, b := newStore(t)
	body := &collectingReader{s: s, r: strings.NewReader("slow")}
	_, err := s.Put(ctx, user(alice), storage.Upload{Bucket: "private", Name: alice + "/slow.txt", Body: body, Size: -1, ContentType: "text/plain"})
	if body.err != nil {
		t.Fatal(body.err)
	}
	if err == nil {
		t.Fatal("an upload whose bytes were collected succeeded")
	}
	if _, err := s.Find(ctx, user(alice), "private", alice+"/slow.txt", false); !errors.Is(err, storage.ErrNoSuchKey) {
		t.Fatalf("find: %v", err)
	}
	if n := files(t, b); n != 0 || pending(t, s) != 0 {
		t.Fatalf("%d files and %d records left", n, pending(t, s))
	}
}
