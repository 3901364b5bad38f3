package api

import (
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/fluxbase/fluxbase/auth"
	"github.com/fluxbase/fluxbase/internal/apitest"
)

const secret = apitest.Secret

var sign, get = apitest.Sign, apitest.Get

// standIn reports the role and subject the request runs as, or "none"
// without claims.
func standIn(w http.ResponseWriter, r *http.Request) {
	c := Claims(r)
	if c == nil {
		WriteJSON(w, http.StatusOK, map[string]string{"role": "none"})
		return
	}
	WriteJSON(w, http.StatusOK, map[string]string{"role": c.Role, "sub": c.Subject})
}

func newTestServer(t *testing.T, cfg Config) *httptest.Server {
	t.Helper()
	// A stand-in REST surface that reports the role the request runs as.
	cfg.Surfaces = append(cfg.Surfaces, Surface{Prefix: "/rest/v1", Routes: []Route{{Pattern: "/*",
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch strings.TrimPrefix(r.URL.Path, "/rest/v1") {
			case "/panic":
				panic("boom")
			case "/big":
				WriteJSON(w, http.StatusOK, map[string]string{"data": strings.Repeat("x", 8000)})
			default:
				standIn(w, r)
			}
		})}}})
	srv := httptest.NewServer(New(cfg, apitest.Verifier(t), zap.NewNop(), prometheus.NewRegistry()))
	t.Cleanup(srv.Close)
	return srv
}

func TestGuard(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Config{})
	anon, _ := auth.APIKey(secret, auth.RoleAnon)
	service, _ := auth.APIKey(secret, auth.RoleServiceRole)
	user := sign(t, secret, map[string]any{"role": "authenticated", "sub": "u-1", "exp": time.Now().Add(time.Hour).Unix()})
	expired := sign(t, secret, map[string]any{"role": "anon", "exp": time.Now().Add(-time.Hour).Unix()})
	wrongSig := sign(t, "a-completely-different-secret-of-length", map[string]any{"role": "service_role"})
	enc := base64.RawURLEncoding.EncodeToString
	algNone := enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc([]byte(`{"role":"service_role"}`)) + "."

	tests := []accessCase{
		{"anon key", "/rest/v1/t", map[string]string{"apikey": anon}, 200, "anon", ""},
		{"service key", "/rest/v1/t", map[string]string{"apikey": service}, 200, "service_role", ""},
		{"anon key plus user token", "/rest/v1/t", map[string]string{"apikey": anon, "Authorization": "Bearer " + user}, 200, "authenticated", ""},
		{"key in query", "/rest/v1/t?apikey=" + anon, nil, 200, "anon", ""},
		{"no key", "/rest/v1/t", nil, 401, "", "FB001"},
		{"garbage key", "/rest/v1/t", map[string]string{"apikey": "garbage"}, 401, "", "FB002"},
		{"expired token", "/rest/v1/t", map[string]string{"apikey": anon, "Authorization": "Bearer " + expired}, 401, "", "FB003"},
		{"wrong signature", "/rest/v1/t", map[string]string{"apikey": wrongSig}, 401, "", "FB002"},
		{"alg none", "/rest/v1/t", map[string]string{"Authorization": "Bearer " + algNone}, 401, "", "FB002"},
		{"basic auth", "/rest/v1/t", map[string]string{"apikey": anon, "Authorization": "Basic eDp5"}, 401, "", "FB002"},
		{"bad key, good token", "/rest/v1/t", map[string]string{"apikey": "bad", "Authorization": "Bearer " + user}, 401, "", "FB002"},
		{"storage guarded before it exists", "/storage/v1/object/x", map[string]string{"apikey": "bad"}, 401, "", "FB002"},
		{"auth guarded before it exists", "/auth/v1/user", nil, 401, "", "FB001"},
		{"realtime guarded", "/realtime/v1/websocket", nil, 401, "", "FB001"},
		{"cdc guarded", "/cdc/v1/changes", map[string]string{"apikey": expired}, 401, "", "FB003"},
		{"unmounted prefix with a good key", "/cdc/v1/changes", map[string]string{"apikey": anon}, 404, "", "FB010"},
		{"health needs no key", "/health", nil, 200, "", ""},
	}
	checkAccess(t, srv.URL, tests)
}

// accessCase is a GET and what it must answer: a status, then the role
// the stand-in reports ("" for not checked) or an error code.
type accessCase struct {
	name     string
	path     string
	headers  map[string]string
	status   int
	wantRole string
	wantCode string
}

func checkAccess(t *testing.T, base string, tests []accessCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp, body := get(t, base+tt.path, tt.headers)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d (body %v)", resp.StatusCode, tt.status, body)
			}
			if got := resp.Header.Get("Content-Type"); !strings.HasPrefix(got, "application/json") {
				t.Errorf("content type %q", got)
			}
			if tt.wantRole != "" && body["role"] != tt.wantRole {
				t.Errorf("role %v, want %s", body["role"], tt.wantRole)
			}
			if tt.wantCode != "" && (body["code"] != tt.wantCode || body["message"] == "") {
				t.Errorf("error body %v, want code %s with a message", body, tt.wantCode)
			}
		})
	}
}

// metricsText is what the server's /metrics answers.
func metricsText(t *testing.T, base string) string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return string(raw)
}

func TestReady(t *testing.T) {
	t.Parallel()
	dbDown := errors.New("connection refused")
	var failing atomic.Bool
	srv := newTestServer(t, Config{ReadyTimeout: 100 * time.Millisecond, Checks: []NamedCheck{
		{"database", func(context.Context) error {
			if failing.Load() {
				return dbDown
			}
			return nil
		}},
		{"broker", func(ctx context.Context) error { return nil }},
		{"slow", func(ctx context.Context) error {
			if failing.Load() {
				<-ctx.Done() // a check that hangs is cut off by the timeout
				return ctx.Err()
			}
			return nil
		}},
	}})
	resp, body := get(t, srv.URL+"/ready", nil)
	if resp.StatusCode != 200 || body["status"] != "ok" {
		t.Fatalf("healthy: %d %v", resp.StatusCode, body)
	}
	failing.Store(true)
	start := time.Now()
	resp, body = get(t, srv.URL+"/ready", nil)
	if resp.StatusCode != 503 {
		t.Fatalf("failing: status %d %v", resp.StatusCode, body)
	}
	if time.Since(start) > 2*time.Second {
		t.Errorf("readiness waited %v for a hanging check", time.Since(start))
	}
	checks := body["checks"].(map[string]any)
	if checks["database"] != dbDown.Error() || checks["broker"] != "ok" || checks["slow"] == "ok" {
		t.Fatalf("checks %v", checks)
	}
}

func TestMiddleware(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Config{Debug: true})
	anon, _ := auth.APIKey(secret, auth.RoleAnon)
	service, _ := auth.APIKey(secret, auth.RoleServiceRole)

	t.Run("panic becomes 500 and the server lives on", func(t *testing.T) {
		resp, body := get(t, srv.URL+"/rest/v1/panic", map[string]string{"apikey": anon})
		if resp.StatusCode != 500 || body["code"] != "FB090" {
			t.Fatalf("%d %v", resp.StatusCode, body)
		}
		if resp, _ := get(t, srv.URL+"/health", nil); resp.StatusCode != 200 {
			t.Fatal("server stopped answering after a panic")
		}
	})
	t.Run("request id echoed or made", func(t *testing.T) {
		resp, _ := get(t, srv.URL+"/health", map[string]string{"X-Request-Id": "abc-123"})
		if got := resp.Header.Get("X-Request-Id"); got != "abc-123" {
			t.Fatalf("echoed id %q", got)
		}
		resp, _ = get(t, srv.URL+"/health", map[string]string{"X-Request-Id": "bad id with spaces"})
		if got := resp.Header.Get("X-Request-Id"); len(got) != 24 {
			t.Fatalf("made id %q", got)
		}
	})
	t.Run("gzip for large JSON only", func(t *testing.T) {
		req, _ := http.NewRequest("GET", srv.URL+"/rest/v1/big", nil)
		req.Header.Set("apikey", anon)
		req.Header.Set("Accept-Encoding", "gzip")
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.Header.Get("Content-Encoding") != "gzip" {
			t.Fatalf("large response not gzipped: %v", resp.Header)
		}
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]string
		if err := json.NewDecoder(zr).Decode(&body); err != nil || len(body["data"]) != 8000 {
			t.Fatalf("gunzipped body: %v", err)
		}
		req, _ = http.NewRequest("GET", srv.URL+"/rest/v1/small", nil)
		req.Header.Set("apikey", anon)
		req.Header.Set("Accept-Encoding", "gzip")
		resp2, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp2.Body.Close()
		if resp2.Header.Get("Content-Encoding") != "" {
			t.Fatal("a small response was gzipped")
		}
	})
	t.Run("CORS preflight without a key", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodOptions, srv.URL+"/rest/v1/t", nil)
		req.Header.Set("Origin", "http://app.example")
		req.Header.Set("Access-Control-Request-Method", "POST")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != "*" ||
			!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "apikey") {
			t.Fatalf("preflight: %d %v", resp.StatusCode, resp.Header)
		}
	})
	t.Run("pprof needs the service key", func(t *testing.T) {
		if resp, _ := get(t, srv.URL+"/debug/pprof/cmdline", map[string]string{"apikey": anon}); resp.StatusCode != 403 {
			t.Fatalf("anon got %d", resp.StatusCode)
		}
		req, _ := http.NewRequest("GET", srv.URL+"/debug/pprof/cmdline", nil)
		req.Header.Set("apikey", service)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("service key got %d", resp.StatusCode)
		}
	})
	t.Run("metrics by route pattern", func(t *testing.T) {
		get(t, srv.URL+"/health", nil)
		text := metricsText(t, srv.URL)
		for _, want := range []string{
			`http_requests_total{method="GET",route="/health",status="200"}`,
			`http_request_duration_seconds_bucket{method="GET",route="/health"`,
			`fluxbase_active_connections`,
		} {
			if !strings.Contains(text, want) {
				t.Errorf("metrics lack %s", want)
			}
		}
	})
}

func TestPprofOffByDefault(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Config{})
	service, _ := auth.APIKey(secret, auth.RoleServiceRole)
	if resp, _ := get(t, srv.URL+"/debug/pprof/cmdline", map[string]string{"apikey": service}); resp.StatusCode != 404 {
		t.Fatalf("pprof answered %d without FLUXBASE_DEBUG", resp.StatusCode)
	}
}

// Each route is guarded as it declares: an Open route serves anyone, a
// NeedUser route only a signed-in user, a NeedService route only the
// service key, and a route that says nothing needs a key. What no route
// matches still needs a key to learn it is not there.
func TestRouteAccess(t *testing.T) {
	t.Parallel()
	h := http.HandlerFunc(standIn)
	srv := newTestServer(t, Config{Surfaces: []Surface{{Prefix: "/t/v1", Routes: []Route{
		{Method: http.MethodGet, Pattern: "/open", Access: Open, Handler: h},
		{Method: http.MethodGet, Pattern: "/user", Access: NeedUser, Handler: h},
		{Method: http.MethodGet, Pattern: "/service", Access: NeedService, Handler: h},
		{Method: http.MethodGet, Pattern: "/default", Handler: h},
	}}}})
	anon := apitest.Key(t, auth.RoleAnon)
	service := apitest.Key(t, auth.RoleServiceRole)
	user := apitest.UserToken(t, "u-1")
	expired := sign(t, secret, map[string]any{"role": "authenticated", "sub": "u-1", "exp": time.Now().Add(-time.Hour).Unix()})
	withUser := map[string]string{"apikey": anon, "Authorization": "Bearer " + user}

	checkAccess(t, srv.URL, []accessCase{
		{"open without a key", "/t/v1/open", nil, 200, "none", ""},
		{"open with the anon key sets claims", "/t/v1/open", map[string]string{"apikey": anon}, 200, "anon", ""},
		{"open with a user token sets claims", "/t/v1/open", withUser, 200, "authenticated", ""},
		{"open ignores a garbage key", "/t/v1/open", map[string]string{"apikey": "garbage"}, 200, "none", ""},
		{"open ignores an expired token", "/t/v1/open", map[string]string{"apikey": anon, "Authorization": "Bearer " + expired}, 200, "none", ""},
		{"user route without a key", "/t/v1/user", nil, 401, "", "FB001"},
		{"user route refuses the anon key", "/t/v1/user", map[string]string{"apikey": anon}, 403, "", "FB005"},
		{"user route refuses the service key", "/t/v1/user", map[string]string{"apikey": service}, 403, "", "FB005"},
		{"user route refuses an expired token", "/t/v1/user", map[string]string{"apikey": anon, "Authorization": "Bearer " + expired}, 401, "", "FB003"},
		{"user route serves a user", "/t/v1/user", withUser, 200, "authenticated", ""},
		{"service route refuses a user token", "/t/v1/service", withUser, 403, "", "FB004"},
		{"service route refuses the anon key", "/t/v1/service", map[string]string{"apikey": anon}, 403, "", "FB004"},
		{"service route serves the service key", "/t/v1/service", map[string]string{"apikey": service}, 200, "service_role", ""},
		{"default route needs a key", "/t/v1/default", nil, 401, "", "FB001"},
		{"default route takes the anon key", "/t/v1/default", map[string]string{"apikey": anon}, 200, "anon", ""},
		{"unknown path without a key", "/t/v1/nothing", nil, 401, "", "FB001"},
		{"unknown path with a key", "/t/v1/nothing", map[string]string{"apikey": anon}, 404, "", "FB010"},
	})

	t.Run("a method the path lacks", func(t *testing.T) {
		t.Parallel()
		for key, want := range map[string]int{"": 401, anon: 405} {
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/t/v1/open", nil)
			if key != "" {
				req.Header.Set("apikey", key)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("POST with key %q: status %d, want %d", key, resp.StatusCode, want)
			}
		}
	})
}

// A surface's requests are counted under their route pattern, prefix
// included, not under their path.
func TestMetricsRoutePattern(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Config{Surfaces: []Surface{{Prefix: "/t/v1", Routes: []Route{
		{Method: http.MethodGet, Pattern: "/items/{id}", Access: Open, Handler: http.HandlerFunc(standIn)},
	}}}})
	for i := range 2 {
		get(t, fmt.Sprintf("%s/t/v1/items/%d", srv.URL, i), nil)
	}
	if want := `http_requests_total{method="GET",route="/t/v1/items/{id}",status="200"} 2`; !strings.Contains(metricsText(t, srv.URL), want) {
		t.Errorf("metrics lack %s", want)
	}
}

// Every response names the node, websocket upgrades included (see
// realtime), so a client can tell where a load balancer sent it.
func TestNodeHeader(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Config{NodeName: "node-7"})
	for _, path := range []string{"/health", "/rest/v1/anything", "/nowhere"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("X-Fluxbase-Node"); got != "node-7" {
			t.Errorf("%s: X-Fluxbase-Node %q", path, got)
		}
	}
	plain := newTestServer(t, Config{})
	resp, err := http.Get(plain.URL + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if _, ok := resp.Header["X-Fluxbase-Node"]; ok {
		t.Error("a server without a node name sent X-Fluxbase-Node")
	}
}

// revokedSet is a RevocationChecker over a fixed set.
type revokedSet map[string]bool

func (r revokedSet) Revoked(id string) bool { return r[id] }

// A token of an ended session is refused though its exp is ahead, as a
// bearer or as the key; other sessions' tokens and keys pass. A surface's
// WriteError renders the refusal in its own shape.
func TestGuardRefusesRevokedSessions(t *testing.T) {
	t.Parallel()
	own := Surface{Prefix: "/auth/v1", Routes: []Route{{Method: http.MethodGet, Pattern: "/user", Access: NeedUser, Handler: http.HandlerFunc(standIn)}},
		WriteError: func(w http.ResponseWriter, e *Error) {
			WriteJSON(w, e.Status, map[string]string{"error_code": "own-" + e.Code, "msg": e.Message})
		}}
	srv := newTestServer(t, Config{Revocations: revokedSet{"s-ended": true}, Surfaces: []Surface{own}})
	anon, _ := auth.APIKey(secret, auth.RoleAnon)
	exp := time.Now().Add(time.Hour).Unix()
	ended := sign(t, secret, map[string]any{"role": "authenticated", "sub": "u-1", "session_id": "s-ended", "exp": exp})
	live := sign(t, secret, map[string]any{"role": "authenticated", "sub": "u-1", "session_id": "s-live", "exp": exp})
	checkAccess(t, srv.URL, []accessCase{
		{"ended session", "/rest/v1/t", map[string]string{"apikey": anon, "Authorization": "Bearer " + ended}, 401, "", "FB006"},
		{"ended session as the key", "/rest/v1/t", map[string]string{"apikey": ended}, 401, "", "FB006"},
		{"live session", "/rest/v1/t", map[string]string{"apikey": anon, "Authorization": "Bearer " + live}, 200, "authenticated", ""},
		{"anon key", "/rest/v1/t", map[string]string{"apikey": anon}, 200, "anon", ""},
	})
	resp, body := get(t, srv.URL+"/auth/v1/user", map[string]string{"apikey": anon, "Authorization": "Bearer " + ended})
	if resp.StatusCode != 401 || body["error_code"] != "own-FB006" {
		t.Fatalf("surface error: %d %v", resp.StatusCode, body)
	}
	resp, body = get(t, srv.URL+"/auth/v1/nothing", map[string]string{"apikey": anon})
	if resp.StatusCode != 404 || body["error_code"] != "own-FB010" {
		t.Fatalf("surface 404: %d %v", resp.StatusCode, body)
	}
	resp, body = get(t, srv.URL+"/auth/v1/user", map[string]string{"apikey": anon})
	if resp.StatusCode != 403 || body["error_code"] != "own-FB005" {
		t.Fatalf("surface refusal: %d %v", resp.StatusCode, body)
	}
}
