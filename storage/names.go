package storage

import (
	"errors"
	"strings"
)

// The domain's errors; api/storage maps each to storage-api's code.
var (
	ErrNoSuchBucket   = errors.New("bucket not found")
	ErrNoSuchKey      = errors.New("object not found")
	ErrKeyExists      = errors.New("the resource already exists")
	ErrBucketExists   = errors.New("the bucket already exists")
	ErrAccessDenied   = errors.New("new row violates row-level security policy")
	ErrTooLarge       = errors.New("the object exceeded the maximum allowed size")
	ErrMimeType       = errors.New("mime type not supported")
	ErrBucketNotEmpty = errors.New("the bucket you tried to delete is not empty")
	ErrInvalidName    = errors.New("invalid key")
	ErrInvalidRequest = errors.New("invalid request")
)

// MaxNameBytes bounds an object's name; the backend key adds the bucket
// and a version to it.
const MaxNameBytes = 900

// nameByte reports whether c may appear in an object name or bucket id:
// Supabase's set, A-Za-z0-9 _/!.*'()&$=@;:+,?- (the slash in names only).
func nameByte(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte(" _!.*'()&$=@;:+,?-", c) >= 0
}

// ValidName reports whether name is an object name: bytes of Supabase's
// set, slash-separated segments that are neither empty nor "." or "..".
func ValidName(name string) error {
	if name == "" || len(name) > MaxNameBytes {
		return ErrInvalidName
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c != '/' && !nameByte(c) {
			return ErrInvalidName
		}
	}
	for seg := range strings.SplitSeq(name, "/") {
		if seg == "" || seg == "." || seg == ".." || len(seg) > MaxSegmentBytes-8 {
			return ErrInvalidName
		}
	}
	return nil
}

// ValidBucketID reports whether id may name a bucket.
func ValidBucketID(id string) error {
	if id == "" || len(id) > 100 || id == "." || id == ".." {
		return ErrInvalidName
	}
	for i := 0; i < len(id); i++ {
		if !nameByte(id[i]) {
			return ErrInvalidName
		}
	}
	return nil
}

// MimeAllowed reports whether mime (its parameters ignored) matches one of
// allowed, whose entries may end in "/*"; no list allows everything.
func MimeAllowed(allowed []string, mime string) bool {
	if len(allowed) == 0 {
		return true
	}
	mime = strings.ToLower(strings.TrimSpace(strings.SplitN(mime, ";", 2)[0]))
	for _, a := range allowed {
		a = strings.ToLower(strings.TrimSpace(a))
		if a == mime || a == "*/*" || a == "*" {
			return true
		}
		if prefix, ok := strings.CutSuffix(a, "/*"); ok && strings.HasPrefix(mime, prefix+"/") {
			return true
		}
	}
	return false
}

// ParseSize reads a size limit: a count of bytes, or a number with a unit
// (B, KB, MB, GB, TB, powers of 1024 as Supabase reads them; "20MB").
func ParseSize(s string) (int64, error) {
	s = strings.TrimSpace(strings.ToUpper(s))
	units := []struct {
		suffix string
		mult   int64
	}{{"TB", 1 << 40}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if rest, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(rest), u.mult
			break
		}
	}
	if s == "" {
		return 0, ErrInvalidRequest
	}
	var n int64
	for _, c := range s {
		if c < '0' || c > '9' || n > (1<<62)/10 {
			return 0, ErrInvalidRequest
		}
		n = n*10 + int64(c-'0')
	}
	if n > (1<<62)/mult {
		return 0, ErrInvalidRequest
	}
	return n * mult, nil
}
