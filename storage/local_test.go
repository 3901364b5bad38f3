package storage_test

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fluxbase/fluxbase/storage"
)

func TestLocalConformance(t *testing.T) {
	t.Parallel()
	b, err := storage.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	conformance(t, b)
}

// Whatever the key, the files stay under the root: keys that would
// climb out are refused, and the ones accepted that look like a climb
// when decoded (%2e%2e) land inside, escaped. No temporary file stays.
func TestLocalStaysUnderRoot(t *testing.T) {
	t.Parallel()
	parent := t.TempDir()
	root := filepath.Join(parent, "root")
	b, err := storage.NewLocal(root)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, k := range []string{"b/%2e%2e/%2e%2e/x", "b/.hidden", "b/...", "b/a:b*c?d", "b/ünï cödé", "%2e%2e/x", "b/.tmp-1"} {
		if _, err := b.Put(ctx, k, strings.NewReader("x"), 1); err != nil {
			t.Errorf("put %q: %v", k, err)
		}
	}
	for _, k := range []string{"../x", "b/../../x", "/x", "b\\..\\..\\x", "b/\x00"} {
		if _, err := b.Put(ctx, k, strings.NewReader("x"), 1); err == nil {
			t.Errorf("put %q was accepted", k)
		}
	}
	entries, _ := os.ReadDir(parent)
	if len(entries) != 1 || entries[0].Name() != "root" {
		t.Fatalf("files beside the root: %v", entries)
	}
	var files int
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if p != root && strings.HasPrefix(name, ".") {
			t.Errorf("a dot file under the root: %s", p)
		}
		if !d.IsDir() {
			files++
		}
		return nil
	})
	if files != 7 {
		t.Fatalf("%d files under the root, want 7", files)
	}
	// Deleting the last object of a folder removes the folders it leaves
	// empty, but not the root.
	for _, k := range []string{"b/%2e%2e/%2e%2e/x", "%2e%2e/x"} {
		if err := b.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "%252e%252e")); !os.IsNotExist(err) {
		t.Fatalf("an emptied folder stayed: %v", err)
	}
	if _, err := os.Stat(root); err != nil {
		t.Fatal(err)
	}
}

func TestValidateKey(t *testing.T) {
	t.Parallel()
	for _, k := range badKeys {
		if storage.ValidateKey(k) == nil {
			t.Errorf("%q accepted", k)
		}
	}
	for _, k := range []string{"a", "a/b/c.txt", "a/%2e%2e", "a/ x (1)!.png", "a/" + strings.Repeat("x", 255)} {
		if err := storage.ValidateKey(k); err != nil {
			t.Errorf("%q: %v", k, err)
		}
	}
}

// blockingReader sends its first bytes, then waits for release.
type blockingReader struct {
	first   string
	sent    chan struct{}
	release chan struct{}
	state   int
}

func (b *blockingReader) Read(p []byte) (int, error) {
	switch b.state {
	case 0:
		b.state = 1
		close(b.sent)
		return copy(p, b.first), nil
	case 1:
		<-b.release
		b.state = 2
		return copy(p, "rest"), nil
	}
	return 0, io.EOF
}

// Deleting a key removes an unfinished write to it — what a crashed
// node left, or one still running, which then fails and stores nothing.
func TestLocalDeleteTakesUnfinishedWrites(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	root := t.TempDir()
	b, err := storage.NewLocal(root)
	if err != nil {
		t.Fatal(err)
	}
	body := &blockingReader{first: "first bytes", sent: make(chan struct{}), release: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		_, err := b.Put(ctx, "bk/obj/v1", body, -1)
		done <- err
	}()
	<-body.sent
	temps, _ := filepath.Glob(filepath.Join(root, "bk", "obj", ".*"))
	if len(temps) != 1 {
		t.Fatalf("temporary files %v, want one", temps)
	}
	if err := b.Delete(ctx, "bk/obj/v1"); err != nil {
		t.Fatal(err)
	}
	close(body.release)
	if err := <-done; err == nil {
		t.Fatal("a write whose key was deleted meanwhile succeeded")
	}
	if _, err := b.Stat(ctx, "bk/obj/v1"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("stat: %v", err)
	}
	var left []string
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			left = append(left, p)
		}
		return nil
	})
	if len(left) != 0 {
		t.Fatalf("files left: %v", left)
	}
}
