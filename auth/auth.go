// Package auth verifies and issues the JWTs Fluxbase runs on, and turns a
// verified token into the database role and claims a request runs with.
//
// Tokens are HS256-signed with the node's JWT secret, as Supabase's are: the
// anon and service-role API keys are long-lived tokens whose `role` claim
// names a database role, and user tokens carry `role: authenticated` and the
// user's id in `sub`. Users, passwords, sessions and refresh-token
// rotation are the Service's, over Supabase's auth schema (rows dumped from
// Supabase sign in with their bcrypt hashes); Revocations is the set of
// ended sessions every node holds in memory, shared through the broker, so
// an ended session's access tokens are refused everywhere at once (see
// docs/ARCHITECTURE.md, "Auth"). HTTP handling lives in api and its surfaces
// (api/auth serves /auth/v1).
package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// The database roles a request can run as.
const (
	RoleAnon          = "anon"
	RoleAuthenticated = "authenticated"
	RoleServiceRole   = "service_role"
)

// MinSecretLength is the shortest JWT secret accepted: HS256 wants at least
// 256 bits of key.
const MinSecretLength = 32

// Errors of verification. Each is safe to show to the caller.
var (
	ErrMissingToken = errors.New("no API key or token in the request")
	ErrInvalidToken = errors.New("invalid token")
	ErrExpiredToken = errors.New("token has expired")
	ErrUnknownRole  = errors.New("token names a role that is not allowed")
)

// Claims are a verified token's claims: the role it runs as, the subject,
// and the whole claim set as JSON for request.jwt.claims.
type Claims struct {
	Role    string
	Subject string
	// SessionID is the session_id claim of a user's token: the session
	// it belongs to, whose end revokes it.
	SessionID string
	Expires   time.Time
	// Raw is the claim set exactly as signed, for auth.jwt() in SQL.
	Raw json.RawMessage
}

// IsServiceRole reports whether the claims carry full access.
func (c *Claims) IsServiceRole() bool { return c.Role == RoleServiceRole }

// Verifier checks tokens signed with one secret.
type Verifier struct {
	secret []byte
	keys   *KeySet
	roles  map[string]bool
	parser *jwt.Parser
}

// NewVerifier returns a Verifier for secret. Tokens may name the three
// standard roles plus any in extraRoles.
func NewVerifier(secret string, extraRoles ...string) (*Verifier, error) {
	if len(secret) < MinSecretLength {
		return nil, fmt.Errorf("JWT secret must be at least %d characters", MinSecretLength)
	}
	roles := map[string]bool{RoleAnon: true, RoleAuthenticated: true, RoleServiceRole: true}
	for _, r := range extraRoles {
		roles[r] = true
	}
	return &Verifier{
		secret: []byte(secret),
		roles:  roles,
		// Only HS256 (and ES256 with a key set): "none" and every other
		// algorithm are refused before the signature is looked at, and
		// each algorithm gets only its own kind of key, which closes the
		// algorithm-confusion holes.
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
			jwt.WithLeeway(30*time.Second),
		),
	}, nil
}

// NewVerifierWithKeys is NewVerifier that also accepts ES256 tokens
// signed by a key of ks, chosen by the token's kid. A nil ks is HS256
// alone.
func NewVerifierWithKeys(secret string, ks *KeySet, extraRoles ...string) (*Verifier, error) {
	v, err := NewVerifier(secret, extraRoles...)
	if err != nil || ks == nil {
		return v, err
	}
	v.keys = ks
	v.parser = jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg(), jwt.SigningMethodES256.Alg()}),
		jwt.WithLeeway(30*time.Second),
	)
	return v, nil
}

func (v *Verifier) key(t *jwt.Token) (any, error) {
	switch t.Method.Alg() {
	case jwt.SigningMethodHS256.Alg():
		return v.secret, nil
	case jwt.SigningMethodES256.Alg():
		kid, _ := t.Header["kid"].(string)
		if v.keys != nil {
			if pub := v.keys.verify[kid]; pub != nil {
				return pub, nil
			}
		}
	}
	return nil, ErrInvalidToken
}

// Verify checks the token's signature, algorithm, expiry and role.
func (v *Verifier) Verify(token string) (*Claims, error) {
	if token == "" {
		return nil, ErrMissingToken
	}
	var mc jwt.MapClaims
	_, err := v.parser.ParseWithClaims(token, &mc, v.key)
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return nil, ErrExpiredToken
	case err != nil:
		return nil, ErrInvalidToken
	}
	role, _ := mc["role"].(string)
	if role == "" {
		role = RoleAnon
	}
	if !v.roles[role] {
		return nil, ErrUnknownRole
	}
	c := &Claims{Role: role}
	c.Subject, _ = mc["sub"].(string)
	c.SessionID, _ = mc["session_id"].(string)
	if exp, err := mc.GetExpirationTime(); err == nil && exp != nil {
		c.Expires = exp.Time
	}
	raw, err := json.Marshal(mc)
	if err != nil {
		return nil, ErrInvalidToken
	}
	c.Raw = raw
	return c, nil
}

// Sign issues an HS256 token with the given claims.
func Sign(secret string, claims map[string]any) (string, error) {
	t := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims(claims))
	return t.SignedString([]byte(secret))
}

// signToken signs claims with the key set's signing key (ES256, with its
// kid) when there is one, else HS256 with secret.
func signToken(secret string, ks *KeySet, claims map[string]any) (string, error) {
	if !ks.CanSign() {
		return Sign(secret, claims)
	}
	t := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims(claims))
	t.Header["kid"] = ks.signKID
	return t.SignedString(ks.sign)
}

// APIKey issues a Supabase-style API key: a token for role that expires in
// ten years, issued by "fluxbase".
func APIKey(secret, role string) (string, error) {
	now := time.Now()
	return Sign(secret, map[string]any{
		"iss":  "fluxbase",
		"role": role,
		"iat":  now.Unix(),
		"exp":  now.AddDate(10, 0, 0).Unix(),
	})
}
