package storage

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Local keeps objects as files under a root folder. A Put writes a
// temporary file beside its target, fsyncs it, renames it into place and
// fsyncs the folder, so a crash leaves the old object or the new one,
// never part of one.
//
// The key → path mapping cannot leave the root by construction: every
// segment is escaped (bytes outside [A-Za-z0-9_-.] and a leading dot
// become %XX), so no segment is "." or "..", none holds a separator, and
// none starts with a dot — the temporary files do, so they never collide
// with an object.
type Local struct {
	root string
}

// NewLocal returns a Local backend rooted at root, creating the folder.
func NewLocal(root string) (*Local, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("storage root: %w", err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("storage root: %w", err)
	}
	return &Local{root: abs}, nil
}

// Root is the folder the objects are under.
func (l *Local) Root() string { return l.root }

// path maps a key to its file.
func (l *Local) path(key string) (string, error) {
	if err := ValidateKey(key); err != nil {
		return "", err
	}
	segs := strings.Split(key, "/")
	parts := make([]string, 0, len(segs)+1)
	parts = append(parts, l.root)
	for _, s := range segs {
		e := escapeSegment(s)
		if len(e) > MaxSegmentBytes {
			return "", ErrInvalidKey
		}
		parts = append(parts, e)
	}
	return filepath.Join(parts...), nil
}

func escapeSegment(s string) string {
	const hexdig = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		plain := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || (c == '.' && i > 0)
		if plain {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexdig[c>>4])
		b.WriteByte(hexdig[c&15])
	}
	return b.String()
}

// Put implements Backend.
func (l *Local) Put(ctx context.Context, key string, r io.Reader, size int64) (Info, error) {
	p, err := l.path(key)
	if err != nil {
		return Info{}, err
	}
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Info{}, fmt.Errorf("put %s: %w", key, err)
	}
	f, err := os.CreateTemp(dir, tempPrefix(p)+"*")
	if err != nil {
		return Info{}, fmt.Errorf("put %s: %w", key, err)
	}
	tmp := f.Name()
	done := false
	defer func() {
		if !done {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	h := md5.New()
	n, err := io.Copy(io.MultiWriter(f, h), ctxReader{ctx, r})
	if err != nil {
		return Info{}, fmt.Errorf("put %s: %w", key, err)
	}
	if size >= 0 && n != size {
		return Info{}, fmt.Errorf("put %s: %d bytes, want %d: %w", key, n, size, io.ErrUnexpectedEOF)
	}
	if err := f.Sync(); err != nil {
		return Info{}, fmt.Errorf("put %s: %w", key, err)
	}
	if err := f.Close(); err != nil {
		return Info{}, fmt.Errorf("put %s: %w", key, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return Info{}, fmt.Errorf("put %s: %w", key, err)
	}
	done = true
	syncDir(dir)
	st, err := os.Stat(p)
	if err != nil {
		return Info{}, fmt.Errorf("put %s: %w", key, err)
	}
	return Info{Size: n, ETag: hex.EncodeToString(h.Sum(nil)), ModTime: st.ModTime()}, nil
}

// tempPrefix is the name prefix of the temporary files of writes to p:
// a dot, so no object's escaped name has it, then p's own name (hashed
// when long), so Delete finds the writes a crash left unfinished.
func tempPrefix(p string) string {
	base := filepath.Base(p)
	if len(base) > 180 {
		sum := sha256.Sum256([]byte(base))
		base = hex.EncodeToString(sum[:])
	}
	return "." + base + ".tmp-"
}

// syncDir makes a rename in dir durable; a failure only weakens that.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

// Get implements Backend.
func (l *Local) Get(_ context.Context, key string, offset, length int64) (io.ReadCloser, Info, error) {
	p, err := l.path(key)
	if err != nil {
		return nil, Info{}, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, Info{}, localErr(key, err)
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		_ = f.Close()
		return nil, Info{}, ErrNotFound
	}
	info := Info{Size: st.Size(), ModTime: st.ModTime()}
	if offset > 0 {
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			_ = f.Close()
			return nil, Info{}, fmt.Errorf("get %s: %w", key, err)
		}
	}
	if length < 0 {
		return f, info, nil
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(f, length), f}, info, nil
}

// Stat implements Backend.
func (l *Local) Stat(_ context.Context, key string) (Info, error) {
	p, err := l.path(key)
	if err != nil {
		return Info{}, err
	}
	st, err := os.Stat(p)
	if err != nil {
		return Info{}, localErr(key, err)
	}
	if !st.Mode().IsRegular() {
		return Info{}, ErrNotFound
	}
	return Info{Size: st.Size(), ModTime: st.ModTime()}, nil
}

// Delete implements Backend. It removes the temporary files of
// unfinished writes to key too (a crashed node's, or one still running,
// which then fails), and the folders it leaves empty, up to the root.
func (l *Local) Delete(_ context.Context, key string) error {
	p, err := l.path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	// The prefix is escaped (no glob metacharacters) or hex.
	temps, _ := filepath.Glob(filepath.Join(filepath.Dir(p), tempPrefix(p)+"*"))
	for _, t := range temps {
		if err := os.Remove(t); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("delete %s: %w", key, err)
		}
	}
	for dir := filepath.Dir(p); dir != l.root && strings.HasPrefix(dir, l.root); dir = filepath.Dir(dir) {
		if os.Remove(dir) != nil { // not empty, or gone
			break
		}
	}
	return nil
}

// Copy implements Backend.
func (l *Local) Copy(ctx context.Context, src, dst string) (Info, error) {
	r, info, err := l.Get(ctx, src, 0, -1)
	if err != nil {
		return Info{}, err
	}
	defer r.Close()
	return l.Put(ctx, dst, r, info.Size)
}

func localErr(key string, err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrInvalid) {
		return ErrNotFound
	}
	var pe *fs.PathError
	if errors.As(err, &pe) && strings.Contains(pe.Err.Error(), "not a directory") {
		return ErrNotFound
	}
	return fmt.Errorf("storage %s: %w", key, err)
}

// ctxReader ends a copy when its context does.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
