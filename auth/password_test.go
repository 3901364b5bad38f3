package auth

import (
	"context"
	"errors"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Hashing waits for one of the pool's slots: with every slot taken, a
// hash does not run but waits until its context ends; a freed slot lets
// it through.
func TestHasherIsBounded(t *testing.T) {
	t.Parallel()
	h, err := newHasher(4, 2)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for range 2 {
		if err := h.acquire(ctx); err != nil {
			t.Fatal(err)
		}
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := h.hash(short, "secret-pass"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a hash ran with every slot taken: %v", err)
	}
	if _, err := h.compare(short, "", "secret-pass"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a compare ran with every slot taken: %v", err)
	}
	h.release()
	hash, err := h.hash(ctx, "secret-pass")
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := h.compare(ctx, hash, "secret-pass"); !ok || err != nil {
		t.Fatalf("compare: %v %v", ok, err)
	}
	if len(h.slots) != 1 {
		t.Fatalf("%d slots held after the calls, want the 1 still taken", len(h.slots))
	}
}

// A user with no password (or one we cannot read) is compared against a
// dummy hash of the same cost: the same work as a wrong password, and
// never a match.
func TestHasherDummyDoesTheSameWork(t *testing.T) {
	t.Parallel()
	h, err := newHasher(6, 1)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := bcrypt.Cost(h.dummy); err != nil || c != 6 {
		t.Fatalf("dummy cost %d, %v", c, err)
	}
	for _, stored := range []string{"", "not a hash", "$2a$99$x"} {
		if ok, err := h.compare(context.Background(), stored, ""); ok || err != nil {
			t.Fatalf("%q matched: %v %v", stored, ok, err)
		}
	}
	if _, err := newHasher(3, 1); err == nil {
		t.Fatal("cost 3 accepted")
	}
}

// RFC 6238's SHA-1 vectors, truncated to six digits, and the one-step
// tolerance either side.
func TestTOTPVectors(t *testing.T) {
	t.Parallel()
	secret := []byte("12345678901234567890")
	for unix, want := range map[int64]string{59: "287082", 1111111109: "081804", 1111111111: "050471", 1234567890: "005924", 2000000000: "279037"} {
		if got := totpCode(secret, time.Unix(unix, 0)); got != want {
			t.Errorf("t=%d: %s, want %s", unix, got, want)
		}
	}
	now := time.Unix(1234567890, 0)
	if !totpValid(secret, "005924", now.Add(25*time.Second)) || totpValid(secret, "005924", now.Add(95*time.Second)) || totpValid(secret, "", now) {
		t.Fatal("tolerance is not one step")
	}
	svg, err := qrSVG("otpauth://totp/fluxbase:ann@example.com?secret=ABC")
	if err != nil || len(svg) < 1000 || svg[:4] != "<svg" {
		t.Fatalf("qr svg %.60q, %v", svg, err)
	}
}
