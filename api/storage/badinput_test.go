package storage

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
)

// Names that would climb out of a bucket, or hold what keys may not, are
// InvalidKey, and store nothing.
func TestBadNames(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, p := range []string{
		"pub/%2e%2e/x.txt", "pub/a/%2E%2E/%2e%2e/x.txt", "pub/..%2Fx.txt", "pub/a/../../x.txt", "pub//abs.txt",
		"pub/a%5Cb.txt", "pub/a%00b.txt", "pub/a%0Ab.txt", "pub/%C3%A9.txt", "pub/a%7Fb", "pub/" + strings.Repeat("x", 1000),
		"pub/a/./b.txt",
	} {
		e.upload(t, p, e.service, "x").wantErr(t, "400", "InvalidKey")
		e.do(t, "GET", "/object/"+p, e.service, nil).wantErr(t, "400", "InvalidKey")
	}
	e.json(t, "POST", "/object/move", e.service, `{"bucketId":"pub","sourceKey":"a.txt","destinationKey":"../x"}`).wantErr(t, "400", "InvalidKey")
	e.json(t, "POST", "/object/copy", e.service, `{"bucketId":"..","sourceKey":"a.txt","destinationKey":"x"}`).wantErr(t, "400", "InvalidKey")
	if n := e.files(t); n != 0 {
		t.Fatalf("%d files", n)
	}
}

// Limits and bodies: a declared length over the bucket's limit is
// refused before reading; an undeclared one as soon as it passes the
// limit; a MIME type outside the list, a body shorter than it declared,
// bad JSON and unknown paths get storage-api's error shape. Nothing
// stays behind.
func TestBadBodies(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	name := "priv/" + alice + "/f.txt"
	e.upload(t, name, e.aliceTok, strings.Repeat("x", 1001)).wantErr(t, "413", "EntityTooLarge")
	// No Content-Length: the body streams until it passes the limit.
	e.do(t, "POST", "/object/"+name, e.aliceTok, io.MultiReader(strings.NewReader(strings.Repeat("y", 4000))), "Content-Type", "text/plain").wantErr(t, "413", "EntityTooLarge")
	e.upload(t, name, e.aliceTok, "x", "Content-Type", "application/pdf").wantErr(t, "415", "InvalidMimeType")
	if r := e.upload(t, "priv/"+alice+"/p.png", e.aliceTok, "png", "Content-Type", "image/png"); r.status != 200 {
		t.Fatalf("an allowed type: %d %s", r.status, r.body)
	}
	e.upload(t, "nope/x.txt", e.service, "x").wantErr(t, "404", "NoSuchBucket")
	e.upload(t, "pub/m.txt", e.service, "x", "x-metadata", "not base64!").wantErr(t, "400", "InvalidRequest")
	e.do(t, "POST", "/object/pub/form.txt", e.service, strings.NewReader("--b\r\nbroken"), "Content-Type", "multipart/form-data; boundary=b").wantErr(t, "400", "InvalidRequest")
	e.json(t, "POST", "/object/list/pub", e.service, `[1,2`).wantErr(t, "400", "InvalidRequest")
	e.do(t, "GET", "/nope", e.service, nil).wantErr(t, "404", "FB010")

	// A Content-Length that lies: ten bytes of a declared hundred, then
	// the client stops sending.
	u := strings.TrimPrefix(e.srv.URL, "http://")
	c, err := net.Dial("tcp", u)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "POST /storage/v1/object/pub/lie.txt HTTP/1.1\r\nHost: x\r\napikey: "+e.service+
		"\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n0123456789")
	_ = c.(*net.TCPConn).CloseWrite()
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	resp{status: res.StatusCode, header: res.Header, body: body}.wantErr(t, "400", "InvalidRequest")
	e.do(t, "GET", "/object/info/pub/lie.txt", e.service, nil).wantErr(t, "404", "NoSuchKey")
	if n := e.files(t); n != 1 {
		t.Fatalf("%d files, want only the png", n)
	}
}

// pattern is an endless reader of a repeating byte pattern; it
// allocates nothing.
type pattern struct{ n byte }

func (p *pattern) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = p.n
		p.n++
	}
	return len(b), nil
}

// A large upload and its download stream through: the bytes the
// process allocates while moving them are a small fraction of their
// size. Not parallel, so no other test's allocations count.
func TestLargeObjectStreams(t *testing.T) {
	e := newEnv(t)
	const size = 96 << 20
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	// Unknown length (chunked), so nothing can size a buffer to it.
	r := e.do(t, "POST", "/object/pub/large.bin", e.service, io.LimitReader(&pattern{}, size), "Content-Type", "application/octet-stream")
	if r.status != 200 {
		t.Fatalf("upload: %d %s", r.status, r.body)
	}
	req, _ := http.NewRequest("GET", e.srv.URL+"/storage/v1/object/pub/large.bin", nil)
	req.Header.Set("apikey", e.service)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	check := &pattern{}
	want := make([]byte, 32<<10)
	got := make([]byte, 32<<10)
	var n int64
	for {
		k, err := io.ReadFull(res.Body, got)
		if k > 0 {
			_, _ = check.Read(want[:k])
			if string(want[:k]) != string(got[:k]) {
				t.Fatalf("the bytes differ near offset %d", n)
			}
			n += int64(k)
		}
		if err != nil {
			break
		}
	}
	res.Body.Close()
	runtime.ReadMemStats(&after)
	if n != size {
		t.Fatalf("downloaded %d bytes, want %d", n, size)
	}
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("moved %d MiB each way, allocated %.1f MiB", size>>20, float64(allocated)/(1<<20))
	if allocated > 16<<20 {
		t.Fatalf("allocated %d bytes to move %d each way: the body is being held", allocated, size)
	}
}
