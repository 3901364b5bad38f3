package storage_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fluxbase/fluxbase/internal/apitest"
	"github.com/fluxbase/fluxbase/pgrole"
	"github.com/fluxbase/fluxbase/storage"
)

const (
	alice = "11111111-1111-1111-1111-111111111111"
	bob   = "22222222-2222-2222-2222-222222222222"
)

// Policies an app would write: each user reads and writes the folder
// named by their id in the private bucket.
const folderPolicies = `
insert into storage.buckets (id, name, file_size_limit, allowed_mime_types) values ('private', 'private', 20, '{text/*}');
create policy own_read on storage.objects for select to authenticated
  using (bucket_id = 'private' and (storage.foldername(name))[1] = auth.uid()::text);
create policy own_write on storage.objects for insert to authenticated
  with check (bucket_id = 'private' and (storage.foldername(name))[1] = auth.uid()::text and owner_id = auth.uid()::text);
create policy own_update on storage.objects for update to authenticated
  using (bucket_id = 'private' and (storage.foldername(name))[1] = auth.uid()::text);
create policy own_delete on storage.objects for delete to authenticated
  using (bucket_id = 'private' and (storage.foldername(name))[1] = auth.uid()::text);
`

func user(sub string) storage.Caller {
	return storage.Caller{As: pgrole.As{Role: "authenticated", Claims: []byte(`{"role":"authenticated","sub":"` + sub + `"}`)}, Owner: sub}
}

func newStore(t *testing.T) (*storage.Store, *storage.Local) {
	t.Helper()
	pool := apitest.NewDB(t, folderPolicies)
	b, err := storage.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return storage.NewStore(pool, b, nil), b
}

func put(s *storage.Store, c storage.Caller, name, body string, upsert bool) (storage.Object, error) {
	return s.Put(context.Background(), c, storage.Upload{Bucket: "private", Name: name, Upsert: upsert,
		Body: strings.NewReader(body), Size: -1, ContentType: "text/plain"})
}

func read(t *testing.T, s *storage.Store, o storage.Object) string {
	t.Helper()
	r, err := s.Open(context.Background(), o, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, _ := io.ReadAll(r)
	return string(b)
}

// files counts the files under the local backend's root.
func files(t *testing.T, b *storage.Local) int {
	t.Helper()
	n := 0
	_ = filepath.WalkDir(b.Root(), func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return nil
	})
	return n
}

// Row-level security decides who writes and reads which folder; a
// refused write stores no bytes.
func TestStoreRLS(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, b := newStore(t)
	o, err := put(s, user(alice), alice+"/note.txt", "hello", false)
	if err != nil {
		t.Fatal(err)
	}
	if o.Owner != alice || o.Metadata.Size != 5 || o.Metadata.Mimetype != "text/plain" || o.Metadata.ETag == "" {
		t.Fatalf("object %+v", o)
	}
	if _, err := put(s, user(bob), alice+"/evil.txt", "x", false); !errors.Is(err, storage.ErrAccessDenied) {
		t.Fatalf("bob writing alice's folder: %v", err)
	}
	if _, err := s.Find(ctx, user(bob), "private", alice+"/note.txt", false); !errors.Is(err, storage.ErrNoSuchKey) {
		t.Fatalf("bob reading alice's file: %v", err)
	}
	if _, err := s.Find(ctx, storage.Caller{As: pgrole.As{Role: "anon"}}, "private", alice+"/note.txt", false); !errors.Is(err, storage.ErrNoSuchKey) {
		t.Fatalf("anon reading a private file: %v", err)
	}
	if _, err := s.Find(ctx, storage.Caller{}, "private", alice+"/note.txt", true); !errors.Is(err, storage.ErrNoSuchBucket) {
		t.Fatalf("a private bucket read as public: %v", err)
	}
	got, err := s.Find(ctx, user(alice), "private", alice+"/note.txt", false)
	if err != nil || read(t, s, got) != "hello" {
		t.Fatalf("alice reading her file: %v", err)
	}
	if removed, err := s.Remove(ctx, user(bob), "private", []string{alice + "/note.txt"}); err != nil || len(removed) != 0 {
		t.Fatalf("bob removing alice's file: %v %v", removed, err)
	}
	if n := files(t, b); n != 1 {
		t.Fatalf("%d files, want 1", n)
	}
}

// A replace switches the row to the new version and deletes the old
// bytes; without upsert it is refused; limits and MIME types refuse
// before or while the bytes pass and leave nothing.
func TestStoreReplaceAndLimits(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, b := newStore(t)
	first, err := put(s, user(alice), alice+"/a.txt", "one", false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := put(s, user(alice), alice+"/a.txt", "two", false); !errors.Is(err, storage.ErrKeyExists) {
		t.Fatalf("a second upload without upsert: %v", err)
	}
	second, err := put(s, user(alice), alice+"/a.txt", "two", true)
	if err != nil {
		t.Fatal(err)
	}
	if second.Version == first.Version || second.ID != first.ID || read(t, s, second) != "two" {
		t.Fatalf("replaced %+v by %+v", first, second)
	}
	if _, err := s.Open(ctx, first, 0, -1); !errors.Is(err, storage.ErrNoSuchKey) {
		t.Fatalf("the replaced version is still there: %v", err)
	}
	if _, err := put(s, user(alice), alice+"/big.txt", strings.Repeat("x", 21), false); !errors.Is(err, storage.ErrTooLarge) {
		t.Fatalf("over the bucket's limit: %v", err)
	}
	_, err = s.Put(ctx, user(alice), storage.Upload{Bucket: "private", Name: alice + "/i.png", Body: strings.NewReader("x"), Size: 1, ContentType: "image/png"})
	if !errors.Is(err, storage.ErrMimeType) {
		t.Fatalf("a MIME type outside the list: %v", err)
	}
	// The node's bound holds under a bucket's larger limit.
	s.WithMaxFileSize(4)
	if _, err := put(s, user(alice), alice+"/five.txt", "12345", false); !errors.Is(err, storage.ErrTooLarge) {
		t.Fatalf("over the node's bound: %v", err)
	}
	s.WithMaxFileSize(0)
	for _, name := range []string{"../x", alice + "/../x", "/abs", alice + "/a\\b", alice + "/\x00", alice + "/é"} {
		if _, err := put(s, user(alice), name, "x", false); !errors.Is(err, storage.ErrInvalidName) {
			t.Errorf("name %q: %v", name, err)
		}
	}
	if n := files(t, b); n != 1 {
		t.Fatalf("%d files, want 1", n)
	}
}

// Listing shows one folder level, folders by name only; move and copy
// keep the bytes with the row.
func TestStoreListMoveCopy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, b := newStore(t)
	for _, n := range []string{"a.txt", "b.txt", "sub/c.txt", "sub/deeper/d.txt"} {
		if _, err := put(s, user(alice), alice+"/"+n, n, false); err != nil {
			t.Fatal(err)
		}
	}
	list, err := s.List(ctx, user(alice), "private", storage.ListOptions{Prefix: alice})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range list {
		names = append(names, e.Name)
		if (e.Name == "sub") != (e.ID == nil) {
			t.Errorf("entry %+v", e)
		}
	}
	if strings.Join(names, ",") != "a.txt,b.txt,sub" {
		t.Fatalf("listed %v", names)
	}
	if list, _ := s.List(ctx, user(bob), "private", storage.ListOptions{Prefix: alice}); len(list) != 0 {
		t.Fatalf("bob lists alice's folder: %v", list)
	}
	list, _ = s.List(ctx, user(alice), "private", storage.ListOptions{Prefix: alice, Search: "b", Desc: true})
	if len(list) != 1 || list[0].Name != "b.txt" {
		t.Fatalf("search: %+v", list)
	}
	if err := s.Move(ctx, user(alice), "private", alice+"/a.txt", "private", alice+"/moved.txt"); err != nil {
		t.Fatal(err)
	}
	if err := s.Move(ctx, user(alice), "private", alice+"/b.txt", "private", bob+"/stolen.txt"); !errors.Is(err, storage.ErrAccessDenied) {
		t.Fatalf("moving into bob's folder: %v", err)
	}
	c, err := s.Copy(ctx, user(alice), "private", alice+"/moved.txt", "private", alice+"/copy.txt", true)
	if err != nil || read(t, s, c) != "a.txt" {
		t.Fatalf("copy: %v", err)
	}
	m, err := s.Find(ctx, user(alice), "private", alice+"/moved.txt", false)
	if err != nil || read(t, s, m) != "a.txt" {
		t.Fatalf("moved: %v", err)
	}
	if n := files(t, b); n != 5 {
		t.Fatalf("%d files, want 5", n)
	}
}

// The path helpers policies use.
func TestPathFunctions(t *testing.T) {
	t.Parallel()
	pool := apitest.NewDB(t, `insert into storage.buckets (id, name) values ('b', 'b');
	  insert into storage.objects (bucket_id, name) values ('b', 'x/y/z.txt')`)
	var folders, tokens []string
	var file, ext string
	err := pool.QueryRow(context.Background(), `select storage.foldername('a/b/c.png'), storage.filename('a/b/c.png'), storage.extension('a/b/c.tar.gz'),
	  (select path_tokens from storage.objects)`).Scan(&folders, &file, &ext, &tokens)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(folders, ",") != "a,b" || file != "c.png" || ext != "gz" || strings.Join(tokens, ",") != "x,y,z.txt" {
		t.Fatalf("foldername %v filename %q extension %q path_tokens %v", folders, file, ext, tokens)
	}
}
