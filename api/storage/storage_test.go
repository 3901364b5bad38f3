package storage

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"io/fs"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/fluxbase/fluxbase/api"
	"github.com/fluxbase/fluxbase/auth"
	"github.com/fluxbase/fluxbase/internal/apitest"
	"github.com/fluxbase/fluxbase/storage"
)

const (
	alice = "11111111-1111-1111-1111-111111111111"
	bob   = "22222222-2222-2222-2222-222222222222"
)

// schema: a public bucket anyone reads and the service writes, and a
// private one where each user owns the folder named by their id.
const schema = `
insert into storage.buckets (id, name, public) values ('pub', 'pub', true);
insert into storage.buckets (id, name, file_size_limit, allowed_mime_types) values ('priv', 'priv', 1000, '{text/*,image/png}');
create policy own_read on storage.objects for select to authenticated
  using (bucket_id = 'priv' and (storage.foldername(name))[1] = auth.uid()::text);
create policy own_write on storage.objects for insert to authenticated
  with check (bucket_id = 'priv' and (storage.foldername(name))[1] = auth.uid()::text);
create policy own_update on storage.objects for update to authenticated
  using (bucket_id = 'priv' and (storage.foldername(name))[1] = auth.uid()::text);
create policy own_delete on storage.objects for delete to authenticated
  using (bucket_id = 'priv' and (storage.foldername(name))[1] = auth.uid()::text);
create policy see_buckets on storage.buckets for select to authenticated using (true);
`

type env struct {
	srv                *httptest.Server
	store              *storage.Store
	root               string
	signer             *storage.Signer
	anon, service      string
	aliceTok, bobToken string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	pool := apitest.NewDB(t, schema)
	root := t.TempDir()
	b, err := storage.NewLocal(root)
	if err != nil {
		t.Fatal(err)
	}
	signer := storage.NewSigner(apitest.Secret)
	store := storage.NewStore(pool, b, nil)
	surface := New(Config{Store: store, Signer: signer})
	srv := httptest.NewServer(api.New(api.Config{Surfaces: []api.Surface{surface}}, apitest.Verifier(t), zap.NewNop(), prometheus.NewRegistry()))
	t.Cleanup(srv.Close)
	return &env{srv: srv, store: store, root: root, signer: signer,
		anon: apitest.Key(t, auth.RoleAnon), service: apitest.Key(t, auth.RoleServiceRole),
		aliceTok: apitest.UserToken(t, alice), bobToken: apitest.UserToken(t, bob)}
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

// json decodes the body into v.
func (r resp) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("status %d, body %q: %v", r.status, r.body, err)
	}
}

// storageErr checks the body is storage-api's error with code and
// statusCode.
func (r resp) wantErr(t *testing.T, statusCode, code string) {
	t.Helper()
	var e struct{ StatusCode, Code, Error, Message string }
	r.json(t, &e)
	if e.StatusCode != statusCode || e.Code != code || e.Error == "" || e.Message == "" {
		t.Fatalf("got %d %s, want statusCode %s code %s", r.status, r.body, statusCode, code)
	}
	wantHTTP := http.StatusBadRequest
	if code == "InvalidRange" {
		wantHTTP = http.StatusRequestedRangeNotSatisfiable
	}
	if r.status != wantHTTP {
		t.Fatalf("HTTP %d for %s, want %d", r.status, code, wantHTTP)
	}
}

// do sends a request as token (also the apikey, unless it is ""); the
// pairs in headers are added.
func (e *env) do(t *testing.T, method, path, token string, body io.Reader, headers ...string) resp {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+"/storage/v1"+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("apikey", token)
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

func (e *env) json(t *testing.T, method, path, token, body string) resp {
	t.Helper()
	return e.do(t, method, path, token, strings.NewReader(body), "Content-Type", "application/json")
}

func (e *env) upload(t *testing.T, path, token, body string, headers ...string) resp {
	t.Helper()
	return e.do(t, http.MethodPost, "/object/"+path, token, strings.NewReader(body), append([]string{"Content-Type", "text/plain"}, headers...)...)
}

// files counts the files under the backend's root.
func (e *env) files(t *testing.T) int {
	t.Helper()
	n := 0
	_ = filepath.WalkDir(e.root, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return nil
	})
	return n
}

func TestBuckets(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.json(t, "POST", "/bucket", e.service, `{"id":"avatars","name":"avatars","public":true,"file_size_limit":"20MB","allowed_mime_types":["image/*"]}`)
	if r.status != 200 || !strings.Contains(string(r.body), `"name":"avatars"`) {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	e.json(t, "POST", "/bucket", e.service, `{"id":"avatars"}`).wantErr(t, "409", "BucketAlreadyExists")
	e.json(t, "POST", "/bucket", e.anon, `{"id":"mine"}`).wantErr(t, "403", "AccessDenied")
	e.json(t, "POST", "/bucket", e.service, `{"id":"bad/id"}`).wantErr(t, "400", "InvalidKey")
	e.json(t, "POST", "/bucket", e.service, `{"id":"x","file_size_limit":"lots"}`).wantErr(t, "400", "InvalidRequest")
	e.json(t, "POST", "/bucket", e.service, `{"id":`).wantErr(t, "400", "InvalidRequest")

	var b storage.Bucket
	e.do(t, "GET", "/bucket/avatars", e.service, nil).json(t, &b)
	if !b.Public || b.FileSizeLimit == nil || *b.FileSizeLimit != 20<<20 || len(b.AllowedMimeTypes) != 1 || b.Type != "STANDARD" {
		t.Fatalf("bucket %+v", b)
	}
	e.do(t, "GET", "/bucket/nope", e.service, nil).wantErr(t, "404", "NoSuchBucket")
	// No policy lets anon see buckets.
	e.do(t, "GET", "/bucket/avatars", e.anon, nil).wantErr(t, "404", "NoSuchBucket")

	var list []storage.Bucket
	e.do(t, "GET", "/bucket?sortColumn=name&sortOrder=desc&limit=2", e.service, nil).json(t, &list)
	if len(list) != 2 || list[0].ID != "pub" || list[1].ID != "priv" {
		t.Fatalf("list %+v", list)
	}
	e.do(t, "GET", "/bucket?search=ava", e.service, nil).json(t, &list)
	if len(list) != 1 || list[0].ID != "avatars" {
		t.Fatalf("search %+v", list)
	}
	e.do(t, "GET", "/bucket?sortColumn=owner", e.service, nil).wantErr(t, "400", "InvalidRequest")

	if r := e.json(t, "PUT", "/bucket/avatars", e.service, `{"public":false,"file_size_limit":1024,"allowed_mime_types":null}`); r.status != 200 {
		t.Fatalf("update: %d %s", r.status, r.body)
	}
	e.do(t, "GET", "/bucket/avatars", e.service, nil).json(t, &b)
	if b.Public || *b.FileSizeLimit != 1024 || b.AllowedMimeTypes != nil {
		t.Fatalf("updated %+v", b)
	}
	e.json(t, "PUT", "/bucket/nope", e.service, `{"public":true}`).wantErr(t, "404", "NoSuchBucket")

	if r := e.upload(t, "avatars/a.txt", e.service, "x"); r.status != 200 {
		t.Fatalf("upload: %d %s", r.status, r.body)
	}
	e.json(t, "DELETE", "/bucket/avatars", e.service, `{}`).wantErr(t, "409", "BucketNotEmpty")
	if r := e.json(t, "POST", "/bucket/avatars/empty", e.service, `{}`); r.status != 200 {
		t.Fatalf("empty: %d %s", r.status, r.body)
	}
	if r := e.json(t, "DELETE", "/bucket/avatars", e.service, `{}`); r.status != 200 || !strings.Contains(string(r.body), "Successfully deleted") {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	e.json(t, "DELETE", "/bucket/avatars", e.service, `{}`).wantErr(t, "404", "NoSuchBucket")
	if n := e.files(t); n != 0 {
		t.Fatalf("%d files left", n)
	}
}

func TestUploadDownload(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	meta := base64.StdEncoding.EncodeToString([]byte(`{"color":"blue"}`))
	r := e.upload(t, "pub/docs/hello.txt", e.service, "hello, world", "x-upsert", "false", "Cache-Control", "max-age=60", "x-metadata", meta)
	var up struct{ ID, Key string }
	r.json(t, &up)
	if r.status != 200 || up.Key != "pub/docs/hello.txt" || up.ID == "" {
		t.Fatalf("upload: %d %s", r.status, r.body)
	}
	e.upload(t, "pub/docs/hello.txt", e.service, "again", "x-upsert", "false").wantErr(t, "409", "KeyAlreadyExists")

	// The public URL needs no key; the bytes and headers are the upload's.
	r = e.do(t, "GET", "/object/public/pub/docs/hello.txt", "", nil)
	etag := r.header.Get("ETag")
	if r.status != 200 || string(r.body) != "hello, world" || r.header.Get("Content-Type") != "text/plain" ||
		r.header.Get("Cache-Control") != "max-age=60" || r.header.Get("Content-Length") != "12" || etag == "" ||
		r.header.Get("Last-Modified") == "" || r.header.Get("Accept-Ranges") != "bytes" {
		t.Fatalf("public download: %d %q %v", r.status, r.body, r.header)
	}
	if r := e.do(t, "GET", "/object/public/pub/docs/hello.txt", "", nil, "If-None-Match", etag); r.status != 304 || len(r.body) != 0 {
		t.Fatalf("If-None-Match: %d", r.status)
	}
	r = e.do(t, "GET", "/object/pub/docs/hello.txt", e.service, nil, "Range", "bytes=7-")
	if r.status != 206 || string(r.body) != "world" || r.header.Get("Content-Range") != "bytes 7-11/12" {
		t.Fatalf("range: %d %q %v", r.status, r.body, r.header)
	}
	r = e.do(t, "GET", "/object/authenticated/pub/docs/hello.txt", e.service, nil, "Range", "bytes=-5")
	if r.status != 206 || string(r.body) != "world" {
		t.Fatalf("suffix range: %d %q", r.status, r.body)
	}
	r = e.do(t, "GET", "/object/pub/docs/hello.txt", e.service, nil, "Range", "bytes=50-60")
	r.wantErr(t, "416", "InvalidRange")
	if r.header.Get("Content-Range") != "bytes */12" {
		t.Fatalf("unsatisfiable range header %v", r.header)
	}
	r = e.do(t, "GET", "/object/public/pub/docs/hello.txt?download=greeting.txt", "", nil)
	if cd := r.header.Get("Content-Disposition"); !strings.HasPrefix(cd, `attachment; filename="greeting.txt"`) {
		t.Fatalf("download name: %q", cd)
	}
	r = e.do(t, "GET", "/object/public/pub/docs/hello.txt?download", "", nil)
	if cd := r.header.Get("Content-Disposition"); !strings.HasPrefix(cd, `attachment; filename="hello.txt"`) {
		t.Fatalf("download: %q", cd)
	}
	r = e.do(t, "HEAD", "/object/pub/docs/hello.txt", e.service, nil)
	if r.status != 200 || len(r.body) != 0 || r.header.Get("Content-Length") != "12" || r.header.Get("ETag") != etag {
		t.Fatalf("HEAD: %d %v", r.status, r.header)
	}
	var info objectInfo
	e.do(t, "GET", "/object/info/pub/docs/hello.txt", e.service, nil).json(t, &info)
	if info.Size != 12 || info.ContentType != "text/plain" || info.ETag != etag || string(info.Metadata) != `{"color":"blue"}` || info.Version == "" || info.BucketID != "pub" {
		t.Fatalf("info %+v", info)
	}
	e.do(t, "GET", "/object/info/pub/docs/nope.txt", e.service, nil).wantErr(t, "404", "NoSuchKey")

	// A multipart form as storage-js sends a Blob: fields, then the file
	// part named "". PUT replaces.
	var form bytes.Buffer
	mw := multipart.NewWriter(&form)
	_ = mw.WriteField("cacheControl", "3600")
	_ = mw.WriteField("metadata", `{"v":2}`)
	h := make(map[string][]string)
	h["Content-Disposition"] = []string{`form-data; name=""; filename="blob"`}
	h["Content-Type"] = []string{"text/markdown"}
	fw, _ := mw.CreatePart(h)
	_, _ = fw.Write([]byte("# replaced"))
	_ = mw.Close()
	r = e.do(t, "PUT", "/object/pub/docs/hello.txt", e.service, &form, "Content-Type", mw.FormDataContentType())
	if r.status != 200 {
		t.Fatalf("multipart PUT: %d %s", r.status, r.body)
	}
	r = e.do(t, "GET", "/object/public/pub/docs/hello.txt", "", nil)
	if string(r.body) != "# replaced" || r.header.Get("Content-Type") != "text/markdown" || r.header.Get("Cache-Control") != "max-age=3600" || r.header.Get("ETag") == etag {
		t.Fatalf("after replace: %q %v", r.body, r.header)
	}
	if n := e.files(t); n != 1 {
		t.Fatalf("%d files after a replace, want 1", n)
	}
	// A private bucket is not public.
	e.upload(t, "priv/"+alice+"/x.txt", e.service, "secret")
	e.do(t, "GET", "/object/public/priv/"+alice+"/x.txt", "", nil).wantErr(t, "404", "NoSuchBucket")
	e.do(t, "GET", "/object/priv/"+alice+"/x.txt", e.anon, nil).wantErr(t, "404", "NoSuchKey")
	e.do(t, "GET", "/object/priv/"+alice+"/x.txt", "", nil).wantErr(t, "401", "FB001")
}

func TestRowLevelSecurity(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if r := e.upload(t, "priv/"+alice+"/a.txt", e.aliceTok, "alice's"); r.status != 200 {
		t.Fatalf("alice uploads to her folder: %d %s", r.status, r.body)
	}
	e.upload(t, "priv/"+alice+"/b.txt", e.bobToken, "bob's").wantErr(t, "403", "AccessDenied")
	e.upload(t, "priv/"+alice+"/c.txt", e.anon, "anon's").wantErr(t, "403", "AccessDenied")
	e.do(t, "GET", "/object/priv/"+alice+"/a.txt", e.bobToken, nil).wantErr(t, "404", "NoSuchKey")
	if r := e.do(t, "GET", "/object/priv/"+alice+"/a.txt", e.aliceTok, nil); string(r.body) != "alice's" {
		t.Fatalf("alice reads: %d %s", r.status, r.body)
	}
	var removed []map[string]any
	e.json(t, "DELETE", "/object/priv", e.bobToken, `{"prefixes":["`+alice+`/a.txt"]}`).json(t, &removed)
	if len(removed) != 0 {
		t.Fatalf("bob removed %v", removed)
	}
	e.json(t, "POST", "/object/move", e.bobToken, `{"bucketId":"priv","sourceKey":"`+alice+`/a.txt","destinationKey":"`+bob+`/a.txt"}`).wantErr(t, "404", "NoSuchKey")
	e.json(t, "POST", "/object/move", e.aliceTok, `{"bucketId":"priv","sourceKey":"`+alice+`/a.txt","destinationKey":"`+bob+`/a.txt"}`).wantErr(t, "403", "AccessDenied")
	e.json(t, "POST", "/object/sign/priv/"+alice+"/a.txt", e.bobToken, `{"expiresIn":60}`).wantErr(t, "404", "NoSuchKey")
	var list []map[string]any
	e.json(t, "POST", "/object/list/priv", e.bobToken, `{"prefix":"`+alice+`"}`).json(t, &list)
	if len(list) != 0 {
		t.Fatalf("bob lists %v", list)
	}
	e.json(t, "POST", "/object/upload/sign/priv/"+alice+"/z.txt", e.bobToken, `{}`).wantErr(t, "403", "AccessDenied")
	if n := e.files(t); n != 1 {
		t.Fatalf("%d files, want 1", n)
	}
}

func TestListMoveCopyRemove(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, n := range []string{"f/a.txt", "f/b.txt", "f/sub/c.txt", "f/sub/deep/d.txt", "top.txt"} {
		if r := e.upload(t, "pub/"+n, e.service, n); r.status != 200 {
			t.Fatalf("upload %s: %d %s", n, r.status, r.body)
		}
	}
	var list []storage.Entry
	e.json(t, "POST", "/object/list/pub", e.service, `{"prefix":"f","limit":100,"offset":0,"sortBy":{"column":"name","order":"asc"}}`).json(t, &list)
	if len(list) != 3 || list[0].Name != "a.txt" || list[1].Name != "b.txt" || list[2].Name != "sub" || list[2].ID != nil || list[0].ID == nil || list[0].Metadata == nil {
		t.Fatalf("list: %+v", list)
	}
	e.json(t, "POST", "/object/list/pub", e.service, `{"prefix":"","sortBy":{"column":"name","order":"desc"}}`).json(t, &list)
	if len(list) != 2 || list[0].Name != "top.txt" || list[1].Name != "f" {
		t.Fatalf("root list: %+v", list)
	}
	e.json(t, "POST", "/object/list/pub", e.service, `{"prefix":"f/","limit":1,"offset":1}`).json(t, &list)
	if len(list) != 1 || list[0].Name != "b.txt" {
		t.Fatalf("page: %+v", list)
	}
	e.json(t, "POST", "/object/list/pub", e.service, `{"prefix":"f","search":"b"}`).json(t, &list)
	if len(list) != 1 || list[0].Name != "b.txt" {
		t.Fatalf("search: %+v", list)
	}
	e.json(t, "POST", "/object/list/pub", e.service, `{"prefix":"f","sortBy":{"column":"size"}}`).wantErr(t, "400", "InvalidRequest")
	e.json(t, "POST", "/object/list/nope", e.service, `{"prefix":""}`).wantErr(t, "404", "NoSuchBucket")

	r := e.json(t, "POST", "/object/move", e.service, `{"bucketId":"pub","sourceKey":"f/a.txt","destinationKey":"g/a.txt"}`)
	if r.status != 200 || !strings.Contains(string(r.body), "Successfully moved") {
		t.Fatalf("move: %d %s", r.status, r.body)
	}
	e.json(t, "POST", "/object/move", e.service, `{"bucketId":"pub","sourceKey":"f/b.txt","destinationKey":"top.txt"}`).wantErr(t, "409", "KeyAlreadyExists")
	r = e.json(t, "POST", "/object/copy", e.service, `{"bucketId":"pub","sourceKey":"g/a.txt","destinationKey":"`+alice+`/copied.txt","destinationBucket":"priv"}`)
	if r.status != 200 || !strings.Contains(string(r.body), `"Key":"priv/`+alice+`/copied.txt"`) {
		t.Fatalf("copy across buckets: %d %s", r.status, r.body)
	}
	if r := e.do(t, "GET", "/object/priv/"+alice+"/copied.txt", e.aliceTok, nil); string(r.body) != "f/a.txt" {
		t.Fatalf("the copy: %d %s", r.status, r.body)
	}
	e.do(t, "GET", "/object/pub/f/a.txt", e.service, nil).wantErr(t, "404", "NoSuchKey")
	var removed []storage.Object
	e.json(t, "DELETE", "/object/pub", e.service, `{"prefixes":["g/a.txt","top.txt","nope.txt"]}`).json(t, &removed)
	if len(removed) != 2 {
		t.Fatalf("removed %+v", removed)
	}
	e.json(t, "DELETE", "/object/pub", e.service, `{"prefixes":[]}`).wantErr(t, "400", "InvalidRequest")
	// f/b.txt, f/sub/c.txt, f/sub/deep/d.txt and the copy.
	if n := e.files(t); n != 4 {
		t.Fatalf("%d files, want 4", n)
	}
}

func TestSignedURLs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.upload(t, "priv/"+alice+"/s.txt", e.aliceTok, "signed bytes")
	e.upload(t, "priv/"+alice+"/t.txt", e.aliceTok, "other")
	var s struct{ SignedURL string }
	e.json(t, "POST", "/object/sign/priv/"+alice+"/s.txt", e.aliceTok, `{"expiresIn":60}`).json(t, &s)
	if !strings.HasPrefix(s.SignedURL, "/object/sign/priv/"+alice+"/s.txt?token=") {
		t.Fatalf("signedURL %q", s.SignedURL)
	}
	if r := e.do(t, "GET", s.SignedURL, "", nil); r.status != 200 || string(r.body) != "signed bytes" {
		t.Fatalf("signed download: %d %s", r.status, r.body)
	}
	tok := s.SignedURL[strings.Index(s.SignedURL, "token=")+6:]
	e.do(t, "GET", "/object/sign/priv/"+alice+"/t.txt?token="+tok, "", nil).wantErr(t, "400", "InvalidSignature")
	e.do(t, "GET", "/object/sign/priv/"+alice+"/s.txt?token="+tok[:len(tok)-2]+"xx", "", nil).wantErr(t, "400", "InvalidSignature")
	e.do(t, "GET", "/object/sign/priv/"+alice+"/s.txt", "", nil).wantErr(t, "400", "InvalidSignature")
	expired, _ := e.signer.Sign(storage.URLClaims{URL: "priv/" + alice + "/s.txt"}, -time.Minute)
	e.do(t, "GET", "/object/sign/priv/"+alice+"/s.txt?token="+expired, "", nil).wantErr(t, "400", "InvalidSignature")
	// A token signed with the node secret itself (an API key's) is not a
	// URL's, nor is a URL's token a key.
	forged := apitest.Sign(t, apitest.Secret, map[string]any{"url": "priv/" + alice + "/s.txt", "exp": 4102444800})
	e.do(t, "GET", "/object/sign/priv/"+alice+"/s.txt?token="+forged, "", nil).wantErr(t, "400", "InvalidSignature")
	e.do(t, "GET", "/object/priv/"+alice+"/s.txt", tok, nil).wantErr(t, "401", "FB002")
	e.json(t, "POST", "/object/sign/priv/"+alice+"/s.txt", e.aliceTok, `{"expiresIn":0}`).wantErr(t, "400", "InvalidRequest")

	var many []signedItem
	e.json(t, "POST", "/object/sign/priv", e.aliceTok, `{"expiresIn":60,"paths":["`+alice+`/s.txt","`+bob+`/x.txt"]}`).json(t, &many)
	if len(many) != 2 || many[0].SignedURL == nil || many[0].Error != nil || many[1].SignedURL != nil || many[1].Error == nil {
		t.Fatalf("sign many: %+v", many)
	}
	if r := e.do(t, "GET", *many[0].SignedURL, "", nil); string(r.body) != "signed bytes" {
		t.Fatalf("one of many: %d %s", r.status, r.body)
	}

	// A signed upload URL: made for who may write, used by anyone with
	// it, for that path only; the object is its maker's.
	var up struct{ URL, Token string }
	e.json(t, "POST", "/object/upload/sign/priv/"+alice+"/u.txt", e.aliceTok, `{}`).json(t, &up)
	if up.Token == "" || !strings.HasSuffix(up.URL, "?token="+up.Token) {
		t.Fatalf("upload url %+v", up)
	}
	e.do(t, "PUT", "/object/upload/sign/priv/"+alice+"/v.txt?token="+up.Token, "", strings.NewReader("x"), "Content-Type", "text/plain").wantErr(t, "400", "InvalidSignature")
	e.do(t, "PUT", "/object/upload/sign/priv/"+alice+"/s.txt?token="+tok, "", strings.NewReader("x"), "Content-Type", "text/plain").wantErr(t, "400", "InvalidSignature")
	if r := e.do(t, "PUT", up.URL, "", strings.NewReader("via signed upload"), "Content-Type", "text/plain"); r.status != 200 {
		t.Fatalf("signed upload: %d %s", r.status, r.body)
	}
	e.do(t, "PUT", up.URL, "", strings.NewReader("again"), "Content-Type", "text/plain").wantErr(t, "409", "KeyAlreadyExists")
	var info objectInfo
	e.do(t, "GET", "/object/info/priv/"+alice+"/u.txt", e.aliceTok, nil).json(t, &info)
	if info.Size != int64(len("via signed upload")) {
		t.Fatalf("uploaded by URL: %+v", info)
	}
}
