package api

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/fluxbase/fluxbase/auth"
)

// guard admits a request only with a valid API key or token, and puts the
// verified claims in its context. The user's token (Authorization: Bearer)
// decides the role when present; the API key must be valid too when sent.
// Browsers cannot set headers on a websocket, so the key may also come in
// the query as apikey.
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		claims, apiErr := s.authenticate(r)
		if apiErr != nil {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			writeError(w, apiErr)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), claimsKey, claims)))
	})
}

func (s *Server) authenticate(r *http.Request) (*auth.Claims, *Error) {
	key := r.Header.Get("apikey")
	if key == "" {
		key = r.Header.Get("x-api-key")
	}
	if key == "" {
		key = r.URL.Query().Get("apikey")
	}
	bearer, hasBearer := bearerToken(r)
	if key == "" && !hasBearer {
		return nil, ErrNoAPIKey
	}
	var keyClaims *auth.Claims
	if key != "" {
		c, err := s.verifier.Verify(key)
		if err != nil {
			return nil, tokenError(err)
		}
		keyClaims = c
	}
	if !hasBearer {
		return keyClaims, nil
	}
	if bearer == "" {
		return nil, ErrInvalidToken
	}
	c, err := s.verifier.Verify(bearer)
	if err != nil {
		return nil, tokenError(err)
	}
	return c, nil
}

func bearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", false
	}
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", true // present but unusable: refused as invalid
	}
	return strings.TrimSpace(token), true
}

func tokenError(err error) *Error {
	switch {
	case errors.Is(err, auth.ErrExpiredToken):
		return ErrExpiredToken
	case errors.Is(err, auth.ErrMissingToken):
		return ErrNoAPIKey
	default:
		return ErrInvalidToken
	}
}

// Claims returns the verified claims of a request that passed the guard.
func Claims(r *http.Request) *auth.Claims {
	c, _ := r.Context().Value(claimsKey).(*auth.Claims)
	return c
}

// requireServiceRole admits only requests made with the service key.
func requireServiceRole(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c := Claims(r); c == nil || !c.IsServiceRole() {
			writeError(w, ErrForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}
