package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func jwkOf(t *testing.T, kid string, k *ecdsa.PrivateKey, ops ...string) JWK {
	t.Helper()
	raw, err := k.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	d, err := k.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	return JWK{KTY: "EC", CRV: "P-256", KID: kid, X: enc(raw[1:33]), Y: enc(raw[33:]), D: enc(d), KeyOps: ops}
}

func keySet(t *testing.T, keys ...JWK) *KeySet {
	t.Helper()
	raw, _ := json.Marshal(keys)
	ks, err := ParseKeySet(string(raw))
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

// Rotation: tokens of the new signing key and of the old, now
// verify-only, key both verify, as do HS256 ones; an unknown kid, an
// ES256 token without a key set, and a forged HS256 over the public key
// do not.
func TestES256Rotation(t *testing.T) {
	t.Parallel()
	oldKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	newKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	stranger, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	before := keySet(t, jwkOf(t, "k1", oldKey, "sign", "verify"))
	after := keySet(t, jwkOf(t, "k1", oldKey, "verify"), jwkOf(t, "k2", newKey, "sign", "verify"))
	v, err := NewVerifierWithKeys(secret, after)
	if err != nil {
		t.Fatal(err)
	}
	claims := func() map[string]any {
		return map[string]any{"role": "authenticated", "sub": "u1", "exp": time.Now().Add(time.Hour).Unix()}
	}
	oldTok, err := signToken(secret, before, claims())
	if err != nil {
		t.Fatal(err)
	}
	newTok, _ := signToken(secret, after, claims())
	hsTok, _ := signToken(secret, nil, claims())
	for name, tok := range map[string]string{"old key": oldTok, "new key": newTok, "HS256": hsTok} {
		if _, err := v.Verify(tok); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if h := strings.Split(newTok, ".")[0]; !strings.Contains(mustDecode(t, h), `"kid":"k2"`) || !strings.Contains(mustDecode(t, h), `"ES256"`) {
		t.Fatalf("header %s", mustDecode(t, h))
	}
	strange := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims(claims()))
	strange.Header["kid"] = "k1"
	forgedKID, _ := strange.SignedString(stranger)
	pub, _ := oldKey.PublicKey.Bytes()
	confused, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims(claims())).SignedString(pub)
	hsOnly, _ := NewVerifier(secret)
	for name, c := range map[string]struct {
		v   *Verifier
		tok string
	}{"another key under k1": {v, forgedKID}, "HS256 keyed with the public key": {v, confused}, "ES256 without keys": {hsOnly, newTok}} {
		if _, err := c.v.Verify(c.tok); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%s accepted: %v", name, err)
		}
	}
	if pubs := after.Public(); len(pubs) != 2 || pubs[0].D != "" || pubs[1].D != "" || pubs[1].Alg != "ES256" {
		t.Fatalf("public keys %+v", pubs)
	}
}

func mustDecode(t *testing.T, s string) string {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParseKeySetRefuses(t *testing.T) {
	t.Parallel()
	k1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	mismatched := jwkOf(t, "m", k1, "sign")
	mismatched.D = jwkOf(t, "x", k2).D
	rsa := jwkOf(t, "r", k1)
	rsa.KTY = "RSA"
	for name, keys := range map[string][]JWK{
		"two signing keys": {jwkOf(t, "a", k1, "sign"), jwkOf(t, "b", k2, "sign")},
		"d of another key": {mismatched},
		"not EC":           {rsa},
		"same kid twice":   {jwkOf(t, "a", k1), jwkOf(t, "a", k2)},
		"no kid":           {jwkOf(t, "", k1)},
	} {
		raw, _ := json.Marshal(keys)
		if _, err := ParseKeySet(string(raw)); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
	if _, err := ParseKeySet(`{"keys": 1}`); err == nil {
		t.Error("an object accepted")
	}
}
