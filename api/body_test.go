package api

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/fluxbase/fluxbase/auth"
	"github.com/fluxbase/fluxbase/internal/apitest"
)

// bodyServer serves, under BodyTimeout d, a route that reads its body and
// then works for a while (answering whether its request was cancelled
// meanwhile), and one that takes its connection over as an upgrade does
// and echoes a line.
func bodyServer(t *testing.T, d time.Duration) *httptest.Server {
	t.Helper()
	work := func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				e = ErrInternal
			}
			WriteError(w, e)
			return
		}
		select {
		case <-time.After(3 * d): // past the deadline the body had
			WriteJSON(w, http.StatusOK, map[string]any{"bytes": len(body)})
		case <-r.Context().Done():
			WriteJSON(w, http.StatusOK, map[string]any{"cancelled": true})
		}
	}
	upgrade := func(w http.ResponseWriter, r *http.Request) {
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		_, _ = rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		_ = rw.Flush()
		line, err := rw.ReadString('\n')
		if err != nil {
			return
		}
		_, _ = rw.WriteString(line)
		_ = rw.Flush()
	}
	cfg := Config{BodyTimeout: d, Surfaces: []Surface{{Prefix: "/rest/v1", Routes: []Route{
		{Method: http.MethodPost, Pattern: "/work", Handler: http.HandlerFunc(work)},
		{Method: http.MethodGet, Pattern: "/upgrade", Handler: http.HandlerFunc(upgrade)},
	}}}}
	srv := httptest.NewServer(New(cfg, apitest.Verifier(t), zap.NewNop(), prometheus.NewRegistry()))
	t.Cleanup(srv.Close)
	return srv
}

// The body deadline bounds only the body: a handler that works past it
// once the body is in is not cancelled, a body that does not arrive in
// time answers 408, and a connection taken over without a body (a
// websocket upgrade) has no deadline at all.
func TestBodyDeadline(t *testing.T) {
	t.Parallel()
	const d = 300 * time.Millisecond
	srv := bodyServer(t, d)
	key := apitest.Key(t, auth.RoleAnon)
	addr := strings.TrimPrefix(srv.URL, "http://")

	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/rest/v1/work", strings.NewReader(`{"a":1}`))
	req.Header.Set("apikey", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "{\"bytes\":7}\n" {
		t.Errorf("work after the body: status %d %s", resp.StatusCode, b)
	}

	// A body that stops halfway.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /rest/v1/work HTTP/1.1\r\nHost: x\r\napikey: %s\r\nContent-Length: 10\r\n\r\n{\"a\"", key)
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(conn)
	status, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(status, "HTTP/1.1 408") {
		t.Fatalf("a body that stops: %q, %v", status, err)
	}
	rest, _ := io.ReadAll(r) // and the connection closes
	if !strings.Contains(string(rest), `"code":"FB012"`) {
		t.Errorf("a body that stops: %s", rest)
	}

	// An upgraded connection outlives the body deadline.
	up, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	fmt.Fprintf(up, "GET /rest/v1/upgrade HTTP/1.1\r\nHost: x\r\napikey: %s\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n", key)
	_ = up.SetReadDeadline(time.Now().Add(30 * time.Second))
	ur := bufio.NewReader(up)
	if status, err := ur.ReadString('\n'); err != nil || !strings.HasPrefix(status, "HTTP/1.1 101") {
		t.Fatalf("upgrade: %q, %v", status, err)
	}
	for line, err := ur.ReadString('\n'); line != "\r\n"; line, err = ur.ReadString('\n') {
		if err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(3 * d)
	fmt.Fprintf(up, "still here\n")
	if echo, err := ur.ReadString('\n'); err != nil || echo != "still here\n" {
		t.Errorf("after the body deadline the upgraded connection answers %q, %v", echo, err)
	}
}
