package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
)

// Resumable uploads (TUS): the state is a row of storage.fluxbase_tus,
// the bytes arrive as parts, each a key of its own, so any node takes
// any chunk and a chunk cut off leaves the offset where it was. The
// last chunk assembles the parts into a new version with Put, and the
// parts are deleted.

// ErrOffsetMismatch is a chunk sent for another offset than the
// upload's.
var ErrOffsetMismatch = errors.New("storage: the chunk's offset is not the upload's")

// Resumable is a resumable upload in progress.
type Resumable struct {
	ID       string
	Bucket   string
	Name     string
	Owner    string
	Length   int64
	Received int64
}

// CreateResumable checks that the caller may write u (as Put does, with
// u.Size its whole length) and records the upload.
func (s *Store) CreateResumable(ctx context.Context, c Caller, u Upload) (Resumable, error) {
	if u.Size < 0 {
		return Resumable{}, ErrInvalidRequest
	}
	if err := s.CheckUpload(ctx, c, u); err != nil {
		return Resumable{}, err
	}
	b, err := s.bucket(ctx, u.Bucket)
	if err != nil {
		return Resumable{}, err
	}
	if u.ContentType == "" {
		u.ContentType = "application/octet-stream"
	}
	if !MimeAllowed(b.AllowedMimeTypes, u.ContentType) {
		return Resumable{}, ErrMimeType
	}
	if (b.FileSizeLimit != nil && u.Size > *b.FileSizeLimit) || (s.maxSize > 0 && u.Size > s.maxSize) {
		return Resumable{}, ErrTooLarge
	}
	if len(u.UserMetadata) == 0 {
		u.UserMetadata = nil
	}
	r := Resumable{ID: newVersion(), Bucket: u.Bucket, Name: u.Name, Owner: c.Owner, Length: u.Size}
	_, err = s.pool.Exec(ctx, `insert into storage.fluxbase_tus (id, bucket_id, name, owner, upsert, length, content_type, cache_control, user_metadata)
	  values ($1, $2, $3, $4, $5, $6, $7, $8, $9)`, r.ID, u.Bucket, u.Name, c.Owner, u.Upsert, u.Size, u.ContentType, u.CacheControl, u.UserMetadata)
	return r, mapErr(err)
}

// tusRow is an upload's row.
type tusRow struct {
	Resumable
	upsert       bool
	parts        []int64
	contentType  string
	cacheControl string
	userMetadata json.RawMessage
}

// resumable reads upload id for its owner; another caller's, or a
// missing one, is ErrNoSuchKey.
func (s *Store) resumable(ctx context.Context, c Caller, id string) (tusRow, error) {
	var t tusRow
	err := s.pool.QueryRow(ctx, `select id::text, bucket_id, name, owner, length, received, upsert, parts, content_type, cache_control, user_metadata
	  from storage.fluxbase_tus where id = $1`, id).Scan(&t.ID, &t.Bucket, &t.Name, &t.Owner, &t.Length, &t.Received,
		&t.upsert, &t.parts, &t.contentType, &t.cacheControl, &t.userMetadata)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && t.Owner != c.Owner) {
		return tusRow{}, ErrNoSuchKey
	}
	var pg interface{ SQLState() string }
	if errors.As(err, &pg) && pg.SQLState() == "22P02" { // not a UUID
		return tusRow{}, ErrNoSuchKey
	}
	return t, mapErr(err)
}

// Resumable returns the caller's upload id.
func (s *Store) Resumable(ctx context.Context, c Caller, id string) (Resumable, error) {
	t, err := s.resumable(ctx, c, id)
	return t.Resumable, err
}

func (t tusRow) part(offset int64) ref {
	return ref{t.Bucket, t.Name, t.ID + ".tus/" + strconv.FormatInt(offset, 10)}
}

// AppendResumable stores body as the chunk at offset of upload id and
// returns the offset after it. A body cut off stores nothing. The chunk
// that completes the upload writes the object; then the upload is gone.
func (s *Store) AppendResumable(ctx context.Context, c Caller, id string, offset int64, body io.Reader) (int64, error) {
	t, err := s.resumable(ctx, c, id)
	if err != nil {
		return 0, err
	}
	if offset != t.Received {
		return t.Received, ErrOffsetMismatch
	}
	part := t.part(offset)
	if err := s.begin(ctx, part); err != nil {
		return 0, err
	}
	limited := &limitReader{r: body, left: t.Length - offset}
	info, err := s.backend.Put(ctx, part.key(), limited, -1)
	if err != nil {
		s.release(part)
		return t.Received, err
	}
	tag, err := s.pool.Exec(ctx, `update storage.fluxbase_tus set received = received + $3, parts = parts || $2::bigint
	  where id = $1 and received = $2`, id, offset, info.Size)
	if err == nil && tag.RowsAffected() == 0 {
		err = ErrOffsetMismatch // another chunk for this offset won
	}
	if err != nil {
		s.release(part)
		return t.Received, mapErr(err)
	}
	t.Received += info.Size
	t.parts = append(t.parts, offset)
	if t.Received < t.Length {
		return t.Received, nil
	}
	return t.Received, s.finishResumable(ctx, t)
}

// finishResumable writes the parts as the object's new version and
// forgets the upload and its parts.
func (s *Store) finishResumable(ctx context.Context, t tusRow) error {
	parts := make([]ref, len(t.parts))
	for i, off := range t.parts {
		parts[i] = t.part(off)
	}
	body := &partsReader{ctx: ctx, s: s, parts: parts}
	_, err := s.Put(ctx, Caller{Owner: t.Owner}, Upload{Bucket: t.Bucket, Name: t.Name, Upsert: t.upsert,
		Body: body, Size: t.Length, ContentType: t.contentType,
		CacheControl: t.cacheControl, UserMetadata: t.userMetadata, Signed: true})
	body.close()
	if err != nil {
		return fmt.Errorf("assemble the resumable upload: %w", err)
	}
	if _, err := s.pool.Exec(ctx, `delete from storage.fluxbase_tus where id = $1`, t.ID); err != nil {
		s.log.Warn("forget a finished resumable upload", zap.String("id", t.ID), zap.Error(err))
	}
	s.release(parts...)
	return nil
}

// CancelResumable ends upload id and deletes its parts.
func (s *Store) CancelResumable(ctx context.Context, c Caller, id string) error {
	t, err := s.resumable(ctx, c, id)
	if err != nil {
		return err
	}
	if _, err := s.pool.Exec(ctx, `delete from storage.fluxbase_tus where id = $1`, id); err != nil {
		return mapErr(err)
	}
	parts := make([]ref, len(t.parts))
	for i, off := range t.parts {
		parts[i] = t.part(off)
	}
	s.release(parts...)
	return nil
}

// partsReader reads the parts one after the other, opening each when
// the one before ends.
type partsReader struct {
	ctx   context.Context
	s     *Store
	parts []ref
	cur   io.ReadCloser
}

// close closes the part being read, when Put stopped before its end.
func (p *partsReader) close() {
	if p.cur != nil {
		_ = p.cur.Close()
		p.cur = nil
	}
}

func (p *partsReader) Read(b []byte) (int, error) {
	for {
		if p.cur == nil {
			if len(p.parts) == 0 {
				return 0, io.EOF
			}
			r, _, err := p.s.backend.Get(p.ctx, p.parts[0].key(), 0, -1)
			if err != nil {
				return 0, err
			}
			p.cur, p.parts = r, p.parts[1:]
		}
		n, err := p.cur.Read(b)
		if err == io.EOF {
			_ = p.cur.Close()
			p.cur = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}
