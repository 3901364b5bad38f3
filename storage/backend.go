package storage

import (
	"context"
	"errors"
	"io"
	"strings"
	"time"
	"unicode/utf8"
)

// Backend keeps objects' bytes under keys. Keys are slash-separated paths
// of non-empty segments (ValidateKey); the backends never see a key that
// was not validated, and each maps a key inside its own root by
// construction. Errors are normalised here: a missing key is ErrNotFound
// whatever the backend said.
type Backend interface {
	// Put stores r under key, replacing what was there, and returns the
	// stored object's Info. size is r's length when known, else -1. The
	// object appears whole or not at all.
	Put(ctx context.Context, key string, r io.Reader, size int64) (Info, error)
	// Get reads length bytes from offset (length -1: to the end). Info
	// is the whole object's. The caller closes the reader.
	Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, Info, error)
	// Stat describes the object under key.
	Stat(ctx context.Context, key string) (Info, error)
	// Delete removes key; a missing key is no error.
	Delete(ctx context.Context, key string) error
	// Copy stores a copy of src under dst.
	Copy(ctx context.Context, src, dst string) (Info, error)
}

// Info describes stored bytes. ETag is the hex MD5 of the bytes when Put
// or Copy computed it; Stat may leave it empty.
type Info struct {
	Size    int64
	ETag    string
	ModTime time.Time
}

// The errors the backends are normalised to.
var (
	ErrNotFound   = errors.New("storage: object not found")
	ErrInvalidKey = errors.New("storage: invalid key")
)

// MaxKeyBytes bounds a whole key; MaxSegmentBytes one segment of it (a
// file name on most file systems).
const (
	MaxKeyBytes     = 1024
	MaxSegmentBytes = 255
)

// ValidateKey reports whether key is one a backend accepts: valid UTF-8
// of at most MaxKeyBytes, slash-separated non-empty segments of at most
// MaxSegmentBytes, none of them "." or "..", with no backslash, NUL or
// other control byte. Absolute paths (a leading slash) have an empty
// first segment and are refused too.
func ValidateKey(key string) error {
	if key == "" || len(key) > MaxKeyBytes || !utf8.ValidString(key) {
		return ErrInvalidKey
	}
	for seg := range strings.SplitSeq(key, "/") {
		if seg == "" || seg == "." || seg == ".." || len(seg) > MaxSegmentBytes {
			return ErrInvalidKey
		}
		for i := 0; i < len(seg); i++ {
			if c := seg[i]; c < 0x20 || c == 0x7f || c == '\\' {
				return ErrInvalidKey
			}
		}
	}
	return nil
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// Open returns the backend cfg selects.
func Open(ctx context.Context, cfg Config) (Backend, error) {
	switch cfg.Provider {
	case ProviderLocal, "":
		return NewLocal(cfg.LocalPath)
	case ProviderS3:
		return NewS3(ctx, cfg.S3)
	}
	return nil, errors.New("storage: unknown provider " + cfg.Provider)
}
