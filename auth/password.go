package auth

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/crypto/bcrypt"
)

// hasher runs bcrypt on a bounded number of goroutines at once: a hash
// takes tens of milliseconds of one core, and unbounded sign-ins would
// take every core from the rest of the node. Callers wait for a slot
// (as long as their context lets them), then hash on their own
// goroutine.
type hasher struct {
	cost  int
	slots chan struct{}
	// dummy is a hash of a random password at cost, compared against when
	// a sign-in names no user, so it does the same work as a wrong
	// password.
	dummy []byte
}

func newHasher(cost, workers int) (*hasher, error) {
	if cost < bcrypt.MinCost || cost > bcrypt.MaxCost {
		return nil, fmt.Errorf("bcrypt cost %d is outside %d–%d", cost, bcrypt.MinCost, bcrypt.MaxCost)
	}
	h := &hasher{cost: cost, slots: make(chan struct{}, workers)}
	dummy, err := bcrypt.GenerateFromPassword([]byte(randomToken(18)), cost)
	if err != nil {
		return nil, fmt.Errorf("bcrypt: %w", err)
	}
	h.dummy = dummy
	return h, nil
}

func (h *hasher) acquire(ctx context.Context) error {
	select {
	case h.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h *hasher) release() { <-h.slots }

// hash returns the bcrypt hash of password.
func (h *hasher) hash(ctx context.Context, password string) (string, error) {
	if err := h.acquire(ctx); err != nil {
		return "", err
	}
	defer h.release()
	b, err := bcrypt.GenerateFromPassword([]byte(password), h.cost)
	if err != nil {
		return "", fmt.Errorf("bcrypt: %w", err)
	}
	return string(b), nil
}

// compare reports whether password matches hash. An empty or malformed
// hash (a user without a password) is compared against the dummy, so
// the answer takes as long as for a real one and is false.
func (h *hasher) compare(ctx context.Context, hash, password string) (bool, error) {
	if err := h.acquire(ctx); err != nil {
		return false, err
	}
	defer h.release()
	target, valid := []byte(hash), true
	if _, err := bcrypt.Cost(target); err != nil {
		target, valid = h.dummy, false
	}
	err := bcrypt.CompareHashAndPassword(target, []byte(password))
	switch {
	case err == nil:
		return valid, nil
	case errors.Is(err, bcrypt.ErrMismatchedHashAndPassword):
		return false, nil
	default:
		return false, nil // a hash we cannot read matches nothing
	}
}

// validHash reports whether s is a bcrypt hash we can check (for the
// admin API's password_hash import).
func validHash(s string) bool {
	_, err := bcrypt.Cost([]byte(s))
	return err == nil
}
