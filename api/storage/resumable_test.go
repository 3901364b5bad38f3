package storage

import (
	"bufio"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/fluxbase/fluxbase/api"
	"github.com/fluxbase/fluxbase/internal/apitest"
)

func tusMeta(pairs ...string) string {
	var out []string
	for i := 0; i+1 < len(pairs); i += 2 {
		out = append(out, pairs[i]+" "+base64.StdEncoding.EncodeToString([]byte(pairs[i+1])))
	}
	return strings.Join(out, ",")
}

// A resumable upload made on one node takes its chunks on another; a
// chunk at the wrong offset is refused, one cut off leaves the offset
// where it was, and the last writes the object. Another user finds no
// such upload.
func TestResumableUpload(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// A second node: another server on the same database and files.
	other := httptest.NewServer(api.New(api.Config{Surfaces: []api.Surface{New(Config{Store: e.store, Signer: e.signer})}},
		apitest.Verifier(t), zap.NewNop(), prometheus.NewRegistry()))
	t.Cleanup(other.Close)
	name := alice + "/big.txt"
	content := strings.Repeat("0123456789", 90) // 900 bytes, under priv's limit
	r := e.do(t, "POST", "/upload/resumable", e.aliceTok, nil, "Tus-Resumable", "1.0.0", "Upload-Length", "900",
		"Upload-Metadata", tusMeta("bucketName", "priv", "objectName", name, "contentType", "text/plain", "cacheControl", "3600", "metadata", `{"k":"v"}`))
	loc := r.header.Get("Location")
	if r.status != 201 || !strings.Contains(loc, "/storage/v1/upload/resumable/") || r.header.Get("Tus-Resumable") != "1.0.0" {
		t.Fatalf("create: %d %v %s", r.status, r.header, r.body)
	}
	id := loc[strings.LastIndex(loc, "/")+1:]
	path := "/upload/resumable/" + id
	onOther := func(method string, body io.Reader, headers ...string) resp {
		t.Helper()
		o := *e
		o.srv = other
		return o.do(t, method, path, e.aliceTok, body, headers...)
	}
	chunk := func(offset, body string, on func(string, io.Reader, ...string) resp) resp {
		return on("PATCH", strings.NewReader(body), "Tus-Resumable", "1.0.0", "Upload-Offset", offset, "Content-Type", "application/offset+octet-stream")
	}
	here := func(method string, body io.Reader, headers ...string) resp {
		t.Helper()
		return e.do(t, method, path, e.aliceTok, body, headers...)
	}
	if r := chunk("0", content[:300], here); r.status != 204 || r.header.Get("Upload-Offset") != "300" {
		t.Fatalf("first chunk: %d %v %s", r.status, r.header, r.body)
	}
	if r := onOther("HEAD", nil, "Tus-Resumable", "1.0.0"); r.status != 200 || r.header.Get("Upload-Offset") != "300" || r.header.Get("Upload-Length") != "900" {
		t.Fatalf("HEAD on the other node: %d %v", r.status, r.header)
	}
	chunk("0", content[:300], onOther).wantErr(t, "409", "InvalidUploadOffset")
	e.do(t, "HEAD", path, e.bobToken, nil).wantStatus(t, 400)
	chunk("300", "x", func(m string, b io.Reader, h ...string) resp { return e.do(t, m, path, e.bobToken, b, h...) }).wantErr(t, "404", "NoSuchKey")
	onOther("PATCH", strings.NewReader("x"), "Upload-Offset", "300", "Content-Type", "text/plain").wantErr(t, "415", "InvalidContentType")

	// A chunk cut off: 50 bytes of a declared 300, then the connection
	// drops. The offset stays.
	c, err := net.Dial("tcp", strings.TrimPrefix(other.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(c, "PATCH /storage/v1"+path+" HTTP/1.1\r\nHost: x\r\napikey: "+e.aliceTok+"\r\nAuthorization: Bearer "+e.aliceTok+
		"\r\nContent-Type: application/offset+octet-stream\r\nUpload-Offset: 300\r\nContent-Length: 300\r\n\r\n"+content[300:350])
	_ = c.(*net.TCPConn).CloseWrite()
	if res, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
		res.Body.Close()
	}
	c.Close()
	if r := here("HEAD", nil); r.header.Get("Upload-Offset") != "300" {
		t.Fatalf("after a cut-off chunk the offset is %q", r.header.Get("Upload-Offset"))
	}
	if r := chunk("300", content[300:], onOther); r.status != 204 || r.header.Get("Upload-Offset") != "900" {
		t.Fatalf("last chunk: %d %v %s", r.status, r.header, r.body)
	}
	got := e.do(t, "GET", "/object/priv/"+name, e.aliceTok, nil)
	if string(got.body) != content || got.header.Get("Content-Type") != "text/plain" || got.header.Get("Cache-Control") != "max-age=3600" {
		t.Fatalf("the object: %d %v %d bytes", got.status, got.header, len(got.body))
	}
	var info objectInfo
	e.do(t, "GET", "/object/info/priv/"+name, e.aliceTok, nil).json(t, &info)
	if string(info.Metadata) != `{"k":"v"}` {
		t.Fatalf("user metadata %s", info.Metadata)
	}
	// The upload is gone, and so are its parts: one file, the object.
	here("HEAD", nil).wantStatus(t, 400)
	if n := e.files(t); n != 1 {
		t.Fatalf("%d files, want 1", n)
	}

	// Refused at creation: past the bucket's limit, another's folder, a
	// bad length; a cancelled upload leaves nothing.
	create := func(token, length, meta string) resp {
		return e.do(t, "POST", "/upload/resumable", token, nil, "Tus-Resumable", "1.0.0", "Upload-Length", length, "Upload-Metadata", meta)
	}
	create(e.aliceTok, "1001", tusMeta("bucketName", "priv", "objectName", alice+"/x.txt", "contentType", "text/plain")).wantErr(t, "413", "EntityTooLarge")
	create(e.bobToken, "10", tusMeta("bucketName", "priv", "objectName", alice+"/x.txt", "contentType", "text/plain")).wantErr(t, "403", "AccessDenied")
	create(e.aliceTok, "-1", tusMeta("bucketName", "priv", "objectName", alice+"/x.txt")).wantErr(t, "400", "InvalidRequest")
	create(e.aliceTok, "10", tusMeta("bucketName", "priv", "objectName", "../x")).wantErr(t, "400", "InvalidKey")
	r = create(e.aliceTok, "10", tusMeta("bucketName", "priv", "objectName", alice+"/c.txt", "contentType", "text/plain"))
	cancel := strings.TrimPrefix(r.header.Get("Location"), e.srv.URL+"/storage/v1")
	e.do(t, "PATCH", cancel, e.aliceTok, strings.NewReader("01234"), "Upload-Offset", "0", "Content-Type", "application/offset+octet-stream")
	if r := e.do(t, "DELETE", cancel, e.aliceTok, nil); r.status != 204 {
		t.Fatalf("cancel: %d %s", r.status, r.body)
	}
	if n := e.files(t); n != 1 {
		t.Fatalf("%d files after a cancel, want 1", n)
	}
}

func (r resp) wantStatus(t *testing.T, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("HTTP %d, want %d", r.status, status)
	}
}
