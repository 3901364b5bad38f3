package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// KeySet holds the asymmetric (ES256, P-256) keys tokens are signed and
// verified with, beside the HS256 secret: at most one signing key, and
// any number that only verify. Rotating is three steps, none of them a
// downtime: add the new key as verify-only on every node, make it the
// signing key (the old one verify-only), and drop the old one once the
// tokens it signed have expired.
type KeySet struct {
	signKID string
	sign    *ecdsa.PrivateKey
	verify  map[string]*ecdsa.PublicKey
	public  []JWK
}

// JWK is one key in JSON Web Key form: a P-256 key with its id, and for
// a private key d. KeyOps says what it is for: "sign" (and "verify") for
// the signing key, "verify" alone for the others.
type JWK struct {
	KTY    string   `json:"kty"`
	CRV    string   `json:"crv"`
	KID    string   `json:"kid"`
	X      string   `json:"x"`
	Y      string   `json:"y"`
	D      string   `json:"d,omitempty"`
	Alg    string   `json:"alg,omitempty"`
	Use    string   `json:"use,omitempty"`
	KeyOps []string `json:"key_ops,omitempty"`
}

// ParseKeySet reads a JSON array of JWKs (FLUXBASE_AUTH_JWT_KEYS).
func ParseKeySet(raw string) (*KeySet, error) {
	var keys []JWK
	if err := json.Unmarshal([]byte(raw), &keys); err != nil {
		return nil, fmt.Errorf("JWT keys: not a JSON array of JWKs: %w", err)
	}
	ks := &KeySet{verify: map[string]*ecdsa.PublicKey{}}
	for _, k := range keys {
		if k.KTY != "EC" || k.CRV != "P-256" || (k.Alg != "" && k.Alg != "ES256") {
			return nil, errors.New("JWT keys: only EC P-256 (ES256) keys are supported")
		}
		if k.KID == "" || ks.verify[k.KID] != nil {
			return nil, errors.New("JWT keys: every key needs a kid of its own")
		}
		x, err1 := base64.RawURLEncoding.DecodeString(k.X)
		y, err2 := base64.RawURLEncoding.DecodeString(k.Y)
		if err1 != nil || err2 != nil || len(x) != 32 || len(y) != 32 {
			return nil, fmt.Errorf("JWT keys: key %s: bad x or y", k.KID)
		}
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
		if err != nil {
			return nil, fmt.Errorf("JWT keys: key %s: %w", k.KID, err)
		}
		ks.verify[k.KID] = pub
		if slices.Contains(k.KeyOps, "sign") {
			if ks.sign != nil {
				return nil, errors.New("JWT keys: more than one signing key")
			}
			d, err := base64.RawURLEncoding.DecodeString(k.D)
			if err != nil || len(d) != 32 {
				return nil, fmt.Errorf("JWT keys: signing key %s: bad d", k.KID)
			}
			priv, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d)
			if err != nil || !priv.PublicKey.Equal(pub) {
				return nil, fmt.Errorf("JWT keys: signing key %s: d does not match x and y", k.KID)
			}
			ks.sign, ks.signKID = priv, k.KID
		}
		ks.public = append(ks.public, JWK{KTY: "EC", CRV: "P-256", KID: k.KID, X: k.X, Y: k.Y, Alg: "ES256",
			Use: "sig", KeyOps: []string{"verify"}})
	}
	return ks, nil
}

// Public is the set's public keys, for /.well-known/jwks.json.
func (ks *KeySet) Public() []JWK {
	if ks == nil {
		return []JWK{}
	}
	return slices.Clone(ks.public)
}

// CanSign reports whether the set has a signing key.
func (ks *KeySet) CanSign() bool { return ks != nil && ks.sign != nil }
