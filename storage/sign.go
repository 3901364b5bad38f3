package storage

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// ErrInvalidSignature is a signed URL's token that is forged, expired,
// or made for another path.
var ErrInvalidSignature = errors.New("invalid signature")

// Signer makes and checks the tokens of signed URLs: HS256 JWTs bound to
// one bucket/name path and an expiry. Its key is derived from the node
// secret, not the secret itself, so a URL's token is never a valid API
// key or session token, nor the reverse.
type Signer struct {
	key    []byte
	parser *jwt.Parser
}

// NewSigner derives the signing key from the node's JWT secret.
func NewSigner(secret string) *Signer {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("fluxbase storage signed URL"))
	return &Signer{key: m.Sum(nil), parser: jwt.NewParser(jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired())}
}

// URLClaims are what a token says: the path it is for, whether it is
// for an upload (a download token never writes, nor the reverse), and
// for uploads the owner the object gets and whether it may replace one.
type URLClaims struct {
	URL    string `json:"url"`
	Upload bool   `json:"upload,omitempty"`
	Owner  string `json:"owner,omitempty"`
	Upsert bool   `json:"upsert,omitempty"`
	jwt.RegisteredClaims
}

// Sign returns a token for c that expires after ttl.
func (s *Signer) Sign(c URLClaims, ttl time.Duration) (string, error) {
	now := time.Now()
	c.IssuedAt = jwt.NewNumericDate(now)
	c.ExpiresAt = jwt.NewNumericDate(now.Add(ttl))
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(s.key)
}

// Verify checks token's signature and expiry and that it was made for
// path, and for an upload when upload is set (else for a download).
func (s *Signer) Verify(token, path string, upload bool) (URLClaims, error) {
	var c URLClaims
	_, err := s.parser.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return s.key, nil })
	if err != nil || c.URL != path || c.Upload != upload {
		return URLClaims{}, ErrInvalidSignature
	}
	return c, nil
}
