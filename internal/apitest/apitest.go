// Package apitest holds what the tests of the HTTP edge and its surfaces
// share: the JWT secret they sign with, tokens, a migrated throwaway
// database and a JSON GET. It imports no api package, so the edge's own
// tests can use it too.
package apitest

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fluxbase/fluxbase/auth"
	"github.com/fluxbase/fluxbase/internal/pgtest"
	"github.com/fluxbase/fluxbase/migrations"
)

// Secret is the JWT secret the tests' keys and tokens are signed with.
const Secret = "api-test-secret-long-enough-for-hs256!"

// Verifier checks tokens signed with Secret.
func Verifier(t testing.TB) *auth.Verifier {
	t.Helper()
	v, err := auth.NewVerifier(Secret)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Key is the API key of role, signed with Secret.
func Key(t testing.TB, role string) string {
	t.Helper()
	k, err := auth.APIKey(Secret, role)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Sign signs claims with secret.
func Sign(t testing.TB, secret string, claims map[string]any) string {
	t.Helper()
	tok, err := auth.Sign(secret, claims)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// UserToken is the token of an authenticated user sub, signed with Secret.
func UserToken(t testing.TB, sub string) string {
	return Sign(t, Secret, map[string]any{"role": auth.RoleAuthenticated, "sub": sub, "exp": 4102444800})
}

var migrateMu sync.Mutex

// NewDB returns a pool on a fresh, migrated database in which setup has
// run. The package's tests must start their cluster with pgtest.Main.
func NewDB(t testing.TB, setup string) *pgxpool.Pool {
	t.Helper()
	ctx := context.Background()
	url := pgtest.NewDB(t)
	// The roles the migrations make belong to the whole cluster, and
	// PostgreSQL refuses to change one role from two databases at once.
	migrateMu.Lock()
	_, err := migrations.Up(ctx, url)
	migrateMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if setup != "" {
		if _, err := pool.Exec(ctx, setup); err != nil {
			t.Fatal(err)
		}
	}
	return pool
}

// Get sends a GET with headers and decodes the JSON object it answers.
func Get(t testing.TB, url string, headers map[string]string) (*http.Response, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatalf("%s: body is not JSON: %q", url, raw)
	}
	return resp, body
}
