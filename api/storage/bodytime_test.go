package storage

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/fluxbase/fluxbase/api"
	"github.com/fluxbase/fluxbase/internal/apitest"
)

// slowBody sends a chunk, pauses, and sends the next, n times; with
// stall it stops after the first until the test ends.
type slowBody struct {
	n     int
	pause time.Duration
	stall chan struct{}
}

func (s *slowBody) Read(p []byte) (int, error) {
	if s.n == 0 {
		return 0, io.EOF
	}
	if s.stall != nil && s.n == 1 {
		<-s.stall
		return 0, io.ErrUnexpectedEOF
	}
	time.Sleep(s.pause)
	s.n--
	return copy(p, "0123456789"), nil
}

// An upload's body may take longer than the edge's body timeout while
// it keeps coming; one that stops for that long is cut, 408 in
// storage-api's shape, and stores nothing.
func TestUploadBodyIdle(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const idle = 2 * time.Second
	srv := httptest.NewServer(api.New(api.Config{BodyTimeout: idle, Surfaces: []api.Surface{New(Config{Store: e.store, Signer: e.signer, BodyIdle: idle})}},
		apitest.Verifier(t), zap.NewNop(), prometheus.NewRegistry()))
	t.Cleanup(srv.Close)
	send := func(path string, body io.Reader) resp {
		req, _ := http.NewRequest("POST", srv.URL+"/storage/v1/object/"+path, body)
		req.Header.Set("apikey", e.service)
		req.Header.Set("Content-Type", "text/plain")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return resp{status: -1, body: []byte(err.Error())}
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return resp{status: res.StatusCode, header: res.Header, body: b}
	}
	// Thirty chunks 150 ms apart: 4.5 s in all, never idle for long.
	if r := send("pub/slow.txt", &slowBody{n: 30, pause: 150 * time.Millisecond}); r.status != 200 {
		t.Fatalf("a slow, moving upload: %d %s", r.status, r.body)
	}
	if r := e.do(t, "GET", "/object/pub/slow.txt", e.service, nil); len(r.body) != 300 {
		t.Fatalf("stored %d bytes, want 300", len(r.body))
	}
	stall := make(chan struct{})
	defer close(stall)
	r := send("pub/stalled.txt", &slowBody{n: 2, stall: stall})
	if r.status != -1 { // the server may close before the client reads its answer
		r.wantErr(t, "408", "RequestTimeout")
	}
	e.do(t, "GET", "/object/info/pub/stalled.txt", e.service, nil).wantErr(t, "404", "NoSuchKey")
	if n := e.files(t); n != 1 {
		t.Fatalf("%d files, want 1", n)
	}
}
