package storage_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/fluxbase/fluxbase/storage"
)

// conformance is what every Backend must do; it runs against Local and
// against S3 on a real server.
func conformance(t *testing.T, b storage.Backend) {
	ctx := context.Background()
	md5hex := func(p []byte) string { s := md5.Sum(p); return hex.EncodeToString(s[:]) }

	t.Run("PutGetStat", func(t *testing.T) {
		t.Parallel()
		data := []byte("hello, objects")
		info, err := b.Put(ctx, "b1/dir/hello.txt/v1", bytes.NewReader(data), int64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		if info.Size != int64(len(data)) || info.ETag != md5hex(data) || info.ModTime.IsZero() {
			t.Fatalf("put info %+v", info)
		}
		st, err := b.Stat(ctx, "b1/dir/hello.txt/v1")
		if err != nil || st.Size != int64(len(data)) {
			t.Fatalf("stat %+v %v", st, err)
		}
		r, gi, err := b.Get(ctx, "b1/dir/hello.txt/v1", 0, -1)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(r)
		r.Close()
		if !bytes.Equal(got, data) || gi.Size != int64(len(data)) {
			t.Fatalf("get %q %+v", got, gi)
		}
		r, _, err = b.Get(ctx, "b1/dir/hello.txt/v1", 7, 5)
		if err != nil {
			t.Fatal(err)
		}
		got, _ = io.ReadAll(r)
		r.Close()
		if string(got) != "objec" {
			t.Fatalf("range: %q", got)
		}
		r, _, err = b.Get(ctx, "b1/dir/hello.txt/v1", 7, -1)
		if err != nil {
			t.Fatal(err)
		}
		got, _ = io.ReadAll(r)
		r.Close()
		if string(got) != "objects" {
			t.Fatalf("open range: %q", got)
		}
	})

	t.Run("Replace", func(t *testing.T) {
		t.Parallel()
		for _, s := range []string{"first version", "second"} {
			if _, err := b.Put(ctx, "b1/replace/v", strings.NewReader(s), -1); err != nil {
				t.Fatal(err)
			}
		}
		r, _, err := b.Get(ctx, "b1/replace/v", 0, -1)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(r)
		r.Close()
		if string(got) != "second" {
			t.Fatalf("after replace: %q", got)
		}
	})

	t.Run("Missing", func(t *testing.T) {
		t.Parallel()
		if _, err := b.Stat(ctx, "b1/nope/v"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("stat: %v", err)
		}
		if _, _, err := b.Get(ctx, "b1/nope/v", 0, -1); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("get: %v", err)
		}
		if err := b.Delete(ctx, "b1/nope/v"); err != nil {
			t.Fatalf("delete of a missing key: %v", err)
		}
		if _, err := b.Copy(ctx, "b1/nope/v", "b1/nope2/v"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("copy: %v", err)
		}
	})

	t.Run("DeleteCopy", func(t *testing.T) {
		t.Parallel()
		data := []byte("copy me")
		if _, err := b.Put(ctx, "b1/c/src/v", bytes.NewReader(data), -1); err != nil {
			t.Fatal(err)
		}
		info, err := b.Copy(ctx, "b1/c/src/v", "b2/c/dst/v")
		if err != nil || info.Size != int64(len(data)) || info.ETag != md5hex(data) {
			t.Fatalf("copy %+v %v", info, err)
		}
		if err := b.Delete(ctx, "b1/c/src/v"); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Stat(ctx, "b1/c/src/v"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("deleted source: %v", err)
		}
		if _, err := b.Stat(ctx, "b2/c/dst/v"); err != nil {
			t.Fatalf("copy lost with its source: %v", err)
		}
	})

	// A body that ends before its declared length, or fails, stores
	// nothing.
	t.Run("CutOff", func(t *testing.T) {
		t.Parallel()
		if _, err := b.Put(ctx, "b1/cut/v", strings.NewReader("short"), 100); err == nil {
			t.Fatal("a short body was stored")
		}
		if _, err := b.Stat(ctx, "b1/cut/v"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("after a short body: %v", err)
		}
		bad := io.MultiReader(strings.NewReader("some bytes"), iotest.ErrReader(errors.New("connection reset")))
		if _, err := b.Put(ctx, "b1/cut2/v", bad, -1); err == nil {
			t.Fatal("a failing body was stored")
		}
		if _, err := b.Stat(ctx, "b1/cut2/v"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("after a failing body: %v", err)
		}
	})

	// More than one multipart part, of unknown length.
	t.Run("Large", func(t *testing.T) {
		t.Parallel()
		size := int64(storage.S3PartSize*2 + 12345)
		src := rand.New(rand.NewPCG(1, 2))
		h := md5.New()
		body := io.TeeReader(io.LimitReader(readerFunc(func(p []byte) (int, error) {
			for i := range p {
				p[i] = byte(src.Uint32())
			}
			return len(p), nil
		}), size), h)
		info, err := b.Put(ctx, "b1/large/v", body, -1)
		if err != nil {
			t.Fatal(err)
		}
		want := hex.EncodeToString(h.Sum(nil))
		if info.Size != size || info.ETag != want {
			t.Fatalf("large put %+v, want size %d etag %s", info, size, want)
		}
		r, _, err := b.Get(ctx, "b1/large/v", 0, -1)
		if err != nil {
			t.Fatal(err)
		}
		h2 := md5.New()
		n, err := io.Copy(h2, r)
		r.Close()
		if err != nil || n != size || hex.EncodeToString(h2.Sum(nil)) != want {
			t.Fatalf("large get: %d bytes, %v", n, err)
		}
	})

	t.Run("InvalidKeys", func(t *testing.T) {
		t.Parallel()
		for _, k := range badKeys {
			if _, err := b.Put(ctx, k, strings.NewReader("x"), 1); !errors.Is(err, storage.ErrInvalidKey) {
				t.Errorf("put %q: %v, want ErrInvalidKey", k, err)
			}
			if _, err := b.Stat(ctx, k); !errors.Is(err, storage.ErrInvalidKey) {
				t.Errorf("stat %q: %v", k, err)
			}
		}
	})
}

var badKeys = []string{
	"", "/etc/passwd", "b/../../etc/passwd", "..", "b/./x", "b//x", "b/x/",
	"b\\..\\x", "b/x\x00y", "b/x\ny", "b/\x7f", "b/" + strings.Repeat("a", 256),
	strings.Repeat("abcdefgh/", 120), "b/\xff\xfe",
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }
