package auth

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

const secret = "test-secret-that-is-long-enough-for-hs256"

func TestVerify(t *testing.T) {
	t.Parallel()
	v, err := NewVerifier(secret)
	if err != nil {
		t.Fatal(err)
	}
	sign := func(s string, claims map[string]any) string {
		tok, err := Sign(s, claims)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	anon, _ := APIKey(secret, RoleAnon)
	service, _ := APIKey(secret, RoleServiceRole)
	user := sign(secret, map[string]any{"sub": "u1", "role": "authenticated", "exp": time.Now().Add(time.Hour).Unix()})
	expired := sign(secret, map[string]any{"role": "anon", "exp": time.Now().Add(-time.Hour).Unix()})
	wrongKey := sign("another-secret-that-is-long-enough-xx", map[string]any{"role": "service_role"})
	badRole := sign(secret, map[string]any{"role": "postgres"})

	// A token with alg "none" and the service role: the classic forgery.
	enc := base64.RawURLEncoding.EncodeToString
	none := enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc([]byte(`{"role":"service_role"}`)) + "."
	// HS512 with the right secret is still refused: only HS256 is accepted.
	hs512 := strings.Join([]string{enc([]byte(`{"alg":"HS512","typ":"JWT"}`)), enc([]byte(`{"role":"anon"}`)), "c2ln"}, ".")

	tests := []struct {
		name     string
		token    string
		wantRole string
		wantSub  string
		wantErr  error
	}{
		{"anon key", anon, RoleAnon, "", nil},
		{"service key", service, RoleServiceRole, "", nil},
		{"user token", user, RoleAuthenticated, "u1", nil},
		{"empty", "", "", "", ErrMissingToken},
		{"garbage", "not.a.jwt", "", "", ErrInvalidToken},
		{"expired", expired, "", "", ErrExpiredToken},
		{"wrong signature", wrongKey, "", "", ErrInvalidToken},
		{"alg none", none, "", "", ErrInvalidToken},
		{"alg HS512", hs512, "", "", ErrInvalidToken},
		{"unknown role", badRole, "", "", ErrUnknownRole},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := v.Verify(tt.token)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if c.Role != tt.wantRole || c.Subject != tt.wantSub {
				t.Fatalf("role, sub = %q, %q; want %q, %q", c.Role, c.Subject, tt.wantRole, tt.wantSub)
			}
			if !strings.Contains(string(c.Raw), `"role":"`+tt.wantRole+`"`) {
				t.Fatalf("raw claims %s lack the role", c.Raw)
			}
		})
	}
}

func TestNewVerifierRefusesShortSecret(t *testing.T) {
	t.Parallel()
	if _, err := NewVerifier("short"); err == nil {
		t.Fatal("a 5-character secret was accepted")
	}
}
