package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Errors of the KV operations. Callers compare with errors.Is.
var (
	// ErrKeyNotFound: the key has no value (never set, deleted or expired).
	ErrKeyNotFound = errors.New("broker: key not found")
	// ErrKeyExists: Create found a value under the key.
	ErrKeyExists = errors.New("broker: key exists")
	// ErrWrongRevision: Update found the key at another revision.
	ErrWrongRevision = errors.New("broker: wrong revision")
	// ErrClosed: the broker's connection is closed.
	ErrClosed = errors.New("broker: closed")
	// ErrStopWatch ends Watch without error when its callback returns it.
	ErrStopWatch = errors.New("broker: stop watching")
)

// KV is one of the broker's key-value buckets, shared by every node, with
// no NATS type in its API so that api and auth need not import NATS.
// Keys are NATS subject tokens joined by '.', made of letters, digits and
// - / _ = ; callers escape anything else themselves.
type KV struct {
	name string
	kv   jetstream.KeyValue
}

// Entry is a key's value at a revision.
type Entry struct {
	Key      string
	Value    []byte
	Revision uint64
	Created  time.Time
	// Deleted marks a deletion (or purge) seen by Watch.
	Deleted bool
}

// Bucket opens one of the buckets the broker provisions: PresenceBucket,
// RateLimitBucket or RevocationsBucket.
func (b *Broker) Bucket(ctx context.Context, name string) (*KV, error) {
	switch name {
	case PresenceBucket, RateLimitBucket, RevocationsBucket:
	default:
		return nil, fmt.Errorf("broker: no bucket %q", name)
	}
	kv, err := b.JetStream().KeyValue(ctx, name)
	if err != nil {
		return nil, kvErr(fmt.Sprintf("open bucket %s", name), err)
	}
	return &KV{name: name, kv: kv}, nil
}

// Name is the bucket's name.
func (k *KV) Name() string { return k.name }

// Get returns the key's current value, or ErrKeyNotFound.
func (k *KV) Get(ctx context.Context, key string) (Entry, error) {
	e, err := k.kv.Get(ctx, key)
	if err != nil {
		return Entry{}, kvErr(k.name+" get "+key, err)
	}
	return entry(e), nil
}

// Put sets the key's value and returns the new revision.
func (k *KV) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	rev, err := k.kv.Put(ctx, key, value)
	if err != nil {
		return 0, kvErr(k.name+" put "+key, err)
	}
	return rev, nil
}

// Create sets the key's value only if it has none (a deleted or expired
// key has none); otherwise it fails with ErrKeyExists.
func (k *KV) Create(ctx context.Context, key string, value []byte) (uint64, error) {
	rev, err := k.kv.Create(ctx, key, value)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, fmt.Errorf("%s create %s: %w", k.name, key, ErrKeyExists)
	}
	if err != nil {
		return 0, kvErr(k.name+" create "+key, err)
	}
	return rev, nil
}

// Update sets the key's value only if it is still at revision; otherwise
// it fails with ErrWrongRevision. Get, compute, Update, and on
// ErrWrongRevision start again: that is how a counter stays exact when
// several nodes change it.
func (k *KV) Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error) {
	rev, err := k.kv.Update(ctx, key, value, revision)
	// A replicated bucket reports the conflict with another code than a
	// single server's; the client maps both to ErrKeyRevisionMismatch.
	var apiErr *jetstream.APIError
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) ||
		errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
		return 0, fmt.Errorf("%s update %s: %w", k.name, key, ErrWrongRevision)
	}
	if err != nil {
		return 0, kvErr(k.name+" update "+key, err)
	}
	return rev, nil
}

// Delete removes the key's value; deleting a missing key is no error.
func (k *KV) Delete(ctx context.Context, key string) error {
	if err := k.kv.Delete(ctx, key); err != nil {
		return kvErr(k.name+" delete "+key, err)
	}
	return nil
}

// Keys lists the keys that have a value.
func (k *KV) Keys(ctx context.Context) ([]string, error) {
	keys, err := k.kv.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, kvErr(k.name+" keys", err)
	}
	return keys, nil
}

// Watch calls fn with the current value of every key matching pattern
// ('*' matches one token, '>' the rest, as in NATS subjects), then with
// each later change, deletions included. It returns nil when ctx ends or
// fn returns ErrStopWatch, ErrClosed when the broker closes, and fn's
// other errors as they are. fn runs on the caller's goroutine.
func (k *KV) Watch(ctx context.Context, pattern string, fn func(Entry) error) error {
	w, err := k.kv.Watch(ctx, pattern)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return kvErr(k.name+" watch "+pattern, err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				// Only the connection closing ends the subscription
				// while the watch runs.
				return fmt.Errorf("%s watch %s: %w", k.name, pattern, ErrClosed)
			}
			if e == nil {
				continue // the marker between current values and changes
			}
			err := fn(entry(e))
			if errors.Is(err, ErrStopWatch) {
				return nil
			}
			if err != nil {
				return err
			}
		}
	}
}

// kvErr maps the client's errors to this package's, once, here.
func kvErr(what string, err error) error {
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		return fmt.Errorf("%s: %w", what, ErrKeyNotFound)
	case errors.Is(err, nats.ErrConnectionClosed):
		return fmt.Errorf("%s: %w", what, ErrClosed)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func entry(e jetstream.KeyValueEntry) Entry {
	return Entry{
		Key:      e.Key(),
		Value:    e.Value(),
		Revision: e.Revision(),
		Created:  e.Created(),
		Deleted:  e.Operation() != jetstream.KeyValuePut,
	}
}
