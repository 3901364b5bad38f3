package api

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/fluxbase/fluxbase/auth"
	"github.com/fluxbase/fluxbase/internal/apitest"
)

// A request in flight when Serve's context ends finishes, its context not
// cancelled, while the listener already refuses new connections.
func TestServeFinishesRequestsInFlight(t *testing.T) {
	t.Parallel()
	started, release := make(chan struct{}), make(chan struct{})
	cancelled := make(chan bool, 1)
	s := New(Config{DrainTimeout: time.Minute, Surfaces: []Surface{{Prefix: "/rest/v1", Routes: []Route{{
		Pattern: "/slow",
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			close(started)
			<-release
			cancelled <- r.Context().Err() != nil
			WriteJSON(w, http.StatusOK, map[string]string{"done": "yes"})
		}),
	}}}}}, apitest.Verifier(t), zap.NewNop(), prometheus.NewRegistry())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, ln) }()

	key := apitest.Key(t, auth.RoleAnon)
	type result struct {
		status int
		body   string
		err    error
	}
	res := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, "http://"+ln.Addr().String()+"/rest/v1/slow", nil)
		req.Header.Set("apikey", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			res <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		res <- result{status: resp.StatusCode, body: string(b)}
	}()
	<-started
	stop()
	// New connections are refused once shutdown has closed the listener.
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("the listener still accepts after shutdown began")
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(release)
	r := <-res
	if r.err != nil || r.status != http.StatusOK || strings.TrimSpace(r.body) != `{"done":"yes"}` {
		t.Fatalf("request in flight: status %d body %q err %v", r.status, r.body, r.err)
	}
	if <-cancelled {
		t.Fatal("the request's context was cancelled before the shutdown timeout")
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}
