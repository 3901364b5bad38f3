package api

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/fluxbase/fluxbase/auth"
)

// Access is what a route asks of a request's credentials before its
// handler runs. The zero value, NeedKey, is the safe default: a route
// that says nothing admits only a valid API key or token.
type Access int

const (
	// NeedKey admits a valid API key or token, whatever its role.
	NeedKey Access = iota
	// Open admits any request, for what a browser reaches by a link or a
	// redirect: mail links, OAuth callbacks, public objects, signed URLs.
	// Valid credentials, when sent, still set the claims; invalid ones
	// are ignored, not refused, so a stale session token does not break
	// a public link. The handler sees nil claims then, as without any.
	Open
	// NeedUser admits a signed-in user's token: one with a subject, which
	// the anon and service keys lack.
	NeedUser
	// NeedService admits the service key (a token of service_role).
	NeedService
)

// guard admits a request when its credentials satisfy access, and puts
// the verified claims in its context. The user's token (Authorization:
// Bearer) decides the role when present; the API key must be valid too
// when sent. Browsers cannot set headers on a websocket, so the key may
// also come in the query as apikey. An access the guard does not know
// is refused like NeedService, the strictest. A token whose session has
// ended (Config.Revocations) is refused like an invalid one, at once on
// every node, though its exp is still ahead. Refusals are rendered by
// writeErr.
func (s *Server) guard(access Access, writeErr func(http.ResponseWriter, *Error)) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			claims, apiErr := s.authenticate(r)
			if access == Open {
				if apiErr == nil {
					r = r.WithContext(context.WithValue(r.Context(), claimsKey, claims))
				}
				next.ServeHTTP(w, r)
				return
			}
			if apiErr != nil {
				w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
				writeErr(w, apiErr)
				return
			}
			switch access {
			case NeedKey:
			case NeedUser:
				if claims.Subject == "" {
					writeErr(w, ErrNeedUser)
					return
				}
			default:
				if !claims.IsServiceRole() {
					writeErr(w, ErrForbidden)
					return
				}
			}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), claimsKey, claims)))
		})
	}
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
		if s.revoked(c) {
			return nil, ErrRevokedToken
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
	if s.revoked(c) {
		return nil, ErrRevokedToken
	}
	return c, nil
}

// revoked reports whether the claims' session has ended.
func (s *Server) revoked(c *auth.Claims) bool {
	return c.SessionID != "" && s.cfg.Revocations != nil && s.cfg.Revocations.Revoked(c.SessionID)
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

// Claims returns the verified claims of a request. They are there on
// every route whose Access requires credentials; on an Open route they
// are nil unless the client sent valid ones, so a handler never assumes
// claims its route's Access did not require.
func Claims(r *http.Request) *auth.Claims {
	c, _ := r.Context().Value(claimsKey).(*auth.Claims)
	return c
}
