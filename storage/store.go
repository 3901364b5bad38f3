package storage

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/fluxbase/fluxbase/pgrole"
)

// Store is storage's domain: buckets and objects, their metadata rows in
// storage.buckets and storage.objects and their bytes in a Backend.
//
// Every call takes the Caller it runs for; its metadata SQL runs as the
// caller's role with its claims (pgrole), so row-level security decides
// as in Supabase, and the service role bypasses it. Public buckets'
// objects are read without it.
//
// An object is never half-written: its bytes go to a new versioned key
// (<bucket>/<name>/<version>), the row is switched to that version in
// one transaction, and the replaced version's bytes are deleted after
// the commit. A reader finds a row only once its bytes are whole. Bytes
// no row names are recorded until deleted, so what a crash leaves is
// found by Collect (collect.go).
type Store struct {
	pool    *pgxpool.Pool
	backend Backend
	log     *zap.Logger
	maxSize int64 // every upload's bound, under the bucket's; 0 for none
}

// NewStore returns the store over pool and backend.
func NewStore(pool *pgxpool.Pool, backend Backend, log *zap.Logger) *Store {
	if log == nil {
		log = zap.NewNop()
	}
	return &Store{pool: pool, backend: backend, log: log}
}

// WithMaxFileSize bounds every upload to n bytes (0: no bound beyond
// the buckets' own limits) and returns s.
func (s *Store) WithMaxFileSize(n int64) *Store {
	s.maxSize = n
	return s
}

// Backend is the store's backend.
func (s *Store) Backend() Backend { return s.backend }

// Caller is who a call runs for: the database role and claims, and the
// owner new rows get (the token's subject; empty for none).
type Caller struct {
	As    pgrole.As
	Owner string
}

// Bucket is a row of storage.buckets.
type Bucket struct {
	ID               string    `json:"id"`
	Name             string    `json:"name"`
	Owner            string    `json:"owner"`
	Public           bool      `json:"public"`
	Type             string    `json:"type"`
	FileSizeLimit    *int64    `json:"file_size_limit"`
	AllowedMimeTypes []string  `json:"allowed_mime_types"`
	CreatedAt        time.Time `json:"created_at"`
	UpdatedAt        time.Time `json:"updated_at"`
}

// Object is a row of storage.objects.
type Object struct {
	ID             string          `json:"id"`
	BucketID       string          `json:"bucket_id"`
	Name           string          `json:"name"`
	Owner          string          `json:"owner"`
	Version        string          `json:"version"`
	Metadata       Metadata        `json:"metadata"`
	UserMetadata   json.RawMessage `json:"user_metadata"`
	CreatedAt      time.Time       `json:"created_at"`
	UpdatedAt      time.Time       `json:"updated_at"`
	LastAccessedAt time.Time       `json:"last_accessed_at"`
}

// Metadata is the system metadata of an object, as Supabase keeps it.
type Metadata struct {
	ETag           string    `json:"eTag"`
	Size           int64     `json:"size"`
	Mimetype       string    `json:"mimetype"`
	CacheControl   string    `json:"cacheControl"`
	LastModified   time.Time `json:"lastModified"`
	ContentLength  int64     `json:"contentLength"`
	HTTPStatusCode int       `json:"httpStatusCode"`
}

// Key is the backend key of an object version.
func Key(bucket, name, version string) string { return bucket + "/" + name + "/" + version }

func newVersion() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// mapErr maps a database error to the domain's, once, here.
func mapErr(err error) error {
	var pg *pgconn.PgError
	if !errors.As(err, &pg) {
		return err
	}
	switch pg.Code {
	case "42501": // insufficient_privilege, and RLS's with-check refusals
		return ErrAccessDenied
	case "23503": // the bucket of an object is missing
		return ErrNoSuchBucket
	case "22P02", "22001", "23502", "23514":
		return ErrInvalidRequest
	}
	return err
}

// orderBy is an order-by clause on column, which must be "name" (the
// default, for "") or one of others: the columns are never the client's
// text.
func orderBy(column string, desc bool, others ...string) (string, error) {
	dir := " asc"
	if desc {
		dir = " desc"
	}
	if column == "" || column == "name" {
		return "name" + dir, nil
	}
	for _, c := range others {
		if c == column {
			return c + dir, nil
		}
	}
	return "", ErrInvalidRequest
}

// queryRows runs sql in tx and scans every row; no rows is an empty
// slice, which answers [] in JSON.
func queryRows[T any](ctx context.Context, tx pgx.Tx, scan func(pgx.Row) (T, error), sql string, args ...any) ([]T, error) {
	rows, err := tx.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (T, error) { return scan(r) })
	if out == nil {
		out = []T{}
	}
	return out, err
}

func scanString(row pgx.Row) (string, error) {
	var s string
	err := row.Scan(&s)
	return s, err
}

func (s *Store) asCaller(ctx context.Context, c Caller, fn func(pgx.Tx) error) error {
	return mapErr(pgrole.Tx(ctx, s.pool, c.As, fn))
}

func (s *Store) asSuperuser(ctx context.Context, fn func(pgx.Tx) error) error {
	return mapErr(pgx.BeginFunc(ctx, s.pool, fn))
}

// ownerUUID is the owner column's value: the subject when it is a UUID.
func ownerUUID(owner string) any {
	if len(owner) == 36 && strings.Count(owner, "-") == 4 {
		return owner
	}
	return nil
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// ---- buckets

const bucketCols = `id, name, coalesce(owner_id, owner::text, ''), public, type, file_size_limit, allowed_mime_types, created_at, updated_at`

func scanBucket(row pgx.Row) (Bucket, error) {
	var b Bucket
	err := row.Scan(&b.ID, &b.Name, &b.Owner, &b.Public, &b.Type, &b.FileSizeLimit, &b.AllowedMimeTypes, &b.CreatedAt, &b.UpdatedAt)
	return b, err
}

// BucketList is how ListBuckets pages and sorts.
type BucketList struct {
	Limit, Offset int
	Search        string
	SortColumn    string // id, name, created_at or updated_at
	Desc          bool
}

// ListBuckets lists the buckets the caller may see.
func (s *Store) ListBuckets(ctx context.Context, c Caller, o BucketList) ([]Bucket, error) {
	order, err := orderBy(o.SortColumn, o.Desc, "id", "created_at", "updated_at")
	if err != nil {
		return nil, err
	}
	limit := any(nil)
	if o.Limit > 0 {
		limit = o.Limit
	}
	sql := `select ` + bucketCols + ` from storage.buckets
	  where $1 = '' or name ilike '%' || replace(replace(replace($1, '\', '\\'), '%', '\%'), '_', '\_') || '%'
	  order by ` + order + `, id limit $2 offset $3`
	var out []Bucket
	err = s.asCaller(ctx, c, func(tx pgx.Tx) error {
		var err error
		out, err = queryRows(ctx, tx, scanBucket, sql, o.Search, limit, max(o.Offset, 0))
		return err
	})
	return out, err
}

// GetBucket returns the bucket id when the caller may see it.
func (s *Store) GetBucket(ctx context.Context, c Caller, id string) (Bucket, error) {
	var b Bucket
	err := s.asCaller(ctx, c, func(tx pgx.Tx) error {
		var err error
		b, err = scanBucket(tx.QueryRow(ctx, `select `+bucketCols+` from storage.buckets where id = $1`, id))
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return Bucket{}, ErrNoSuchBucket
	}
	return b, err
}

// bucket reads a bucket as the superuser: uploads and public reads need
// its settings whatever the caller may see of storage.buckets.
func (s *Store) bucket(ctx context.Context, id string) (Bucket, error) {
	b, err := scanBucket(s.pool.QueryRow(ctx, `select `+bucketCols+` from storage.buckets where id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Bucket{}, ErrNoSuchBucket
	}
	return b, mapErr(err)
}

// BucketSettings are what create and update set. Nil fields are left as
// they are by an update; FileSizeLimit 0 clears the limit.
type BucketSettings struct {
	Public           *bool
	FileSizeLimit    *int64
	AllowedMimeTypes *[]string
}

// CreateBucket creates bucket id named name (id when empty).
func (s *Store) CreateBucket(ctx context.Context, c Caller, id, name string, set BucketSettings) error {
	if name == "" {
		name = id
	}
	if err := ValidBucketID(id); err != nil {
		return err
	}
	public := set.Public != nil && *set.Public
	var limit any
	if set.FileSizeLimit != nil && *set.FileSizeLimit > 0 {
		limit = *set.FileSizeLimit
	}
	var mimes any
	if set.AllowedMimeTypes != nil && len(*set.AllowedMimeTypes) > 0 {
		mimes = *set.AllowedMimeTypes
	}
	err := s.asCaller(ctx, c, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `insert into storage.buckets (id, name, owner, owner_id, public, file_size_limit, allowed_mime_types)
		  values ($1, $2, $3, $4, $5, $6, $7)`, id, name, ownerUUID(c.Owner), nullable(c.Owner), public, limit, mimes)
		return err
	})
	if isUnique(err) {
		return ErrBucketExists
	}
	return err
}

func isUnique(err error) bool {
	var pg *pgconn.PgError
	return errors.As(err, &pg) && pg.Code == "23505"
}

// UpdateBucket changes the settings given.
func (s *Store) UpdateBucket(ctx context.Context, c Caller, id string, set BucketSettings) error {
	var limit, mimes any
	setLimit, setMimes := set.FileSizeLimit != nil, set.AllowedMimeTypes != nil
	if setLimit && *set.FileSizeLimit > 0 {
		limit = *set.FileSizeLimit
	}
	if setMimes && len(*set.AllowedMimeTypes) > 0 {
		mimes = *set.AllowedMimeTypes
	}
	return s.asCaller(ctx, c, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `update storage.buckets set
		    public = coalesce($2, public),
		    file_size_limit = case when $3 then $4::bigint else file_size_limit end,
		    allowed_mime_types = case when $5 then $6::text[] else allowed_mime_types end,
		    updated_at = now()
		  where id = $1`, id, set.Public, setLimit, limit, setMimes, mimes)
		if err == nil && tag.RowsAffected() == 0 {
			return ErrNoSuchBucket
		}
		return err
	})
}

// EmptyBucket deletes every object of the bucket the caller may delete.
func (s *Store) EmptyBucket(ctx context.Context, c Caller, id string) error {
	if _, err := s.GetBucket(ctx, c, id); err != nil {
		return err
	}
	var gone []ref
	err := s.asCaller(ctx, c, func(tx pgx.Tx) error {
		var err error
		gone, err = queryRows(ctx, tx, scanRef, `delete from storage.objects where bucket_id = $1 and version is not null returning bucket_id, name, version`, id)
		return err
	})
	if err != nil {
		return err
	}
	s.release(gone...)
	return nil
}

// DeleteBucket deletes an empty bucket.
func (s *Store) DeleteBucket(ctx context.Context, c Caller, id string) error {
	return s.asCaller(ctx, c, func(tx pgx.Tx) error {
		var objects bool
		// Counted past RLS: a bucket is not empty because the caller
		// cannot see its objects.
		if err := s.pool.QueryRow(ctx, `select exists (select from storage.objects where bucket_id = $1)`, id).Scan(&objects); err != nil {
			return err
		}
		if objects {
			return ErrBucketNotEmpty
		}
		tag, err := tx.Exec(ctx, `delete from storage.buckets where id = $1`, id)
		if err == nil && tag.RowsAffected() == 0 {
			return ErrNoSuchBucket
		}
		var pg *pgconn.PgError
		if errors.As(err, &pg) && pg.Code == "23503" {
			return ErrBucketNotEmpty
		}
		return err
	})
}

func scanRef(row pgx.Row) (ref, error) {
	var r ref
	err := row.Scan(&r.bucket, &r.name, &r.version)
	return r, err
}

// ---- objects

const objectCols = `id::text, bucket_id, name, coalesce(owner_id, owner::text, ''), coalesce(version, ''), coalesce(metadata, '{}'), user_metadata, created_at, updated_at, last_accessed_at`

func scanObject(row pgx.Row) (Object, error) {
	var o Object
	var meta []byte
	err := row.Scan(&o.ID, &o.BucketID, &o.Name, &o.Owner, &o.Version, &meta, &o.UserMetadata, &o.CreatedAt, &o.UpdatedAt, &o.LastAccessedAt)
	if err == nil {
		_ = json.Unmarshal(meta, &o.Metadata)
	}
	return o, err
}

// Upload is one object to write.
type Upload struct {
	Bucket, Name string
	// Upsert replaces an object that exists; else that is ErrKeyExists.
	Upsert bool
	// Body is read to its end; Size is its declared length, or -1.
	Body         io.Reader
	Size         int64
	ContentType  string
	CacheControl string
	UserMetadata json.RawMessage
	// Signed skips the caller's row-level check: the upload was allowed
	// when its signed URL was made.
	Signed bool
}

// Put writes an upload: the caller's right to insert (or upsert) the row
// is checked first, by running the statement as the caller and rolling
// it back; then the bytes stream to a new version's key, checked against
// the bucket's size limit as they pass; then the row is written and the
// version it replaced deleted.
func (s *Store) Put(ctx context.Context, c Caller, u Upload) (Object, error) {
	if err := ValidName(u.Name); err != nil {
		return Object{}, err
	}
	b, err := s.bucket(ctx, u.Bucket)
	if err != nil {
		return Object{}, err
	}
	if u.ContentType == "" {
		u.ContentType = "application/octet-stream"
	}
	if !MimeAllowed(b.AllowedMimeTypes, u.ContentType) {
		return Object{}, ErrMimeType
	}
	limit := int64(-1)
	if s.maxSize > 0 {
		limit = s.maxSize
	}
	if b.FileSizeLimit != nil && (limit < 0 || *b.FileSizeLimit < limit) {
		limit = *b.FileSizeLimit
	}
	if limit >= 0 && u.Size > limit {
		return Object{}, ErrTooLarge
	}
	if len(u.UserMetadata) == 0 {
		u.UserMetadata = nil
	}
	version := newVersion()
	if !u.Signed {
		if err := s.checkWrite(ctx, c, u, version); err != nil {
			return Object{}, err
		}
	}

	fresh := ref{u.Bucket, u.Name, version}
	if err := s.begin(ctx, fresh); err != nil {
		return Object{}, err
	}
	body := u.Body
	if limit >= 0 {
		body = &limitReader{r: body, left: limit}
	}
	info, err := s.backend.Put(ctx, fresh.key(), body, u.Size)
	if err != nil {
		s.release(fresh)
		if errors.Is(err, ErrTooLarge) {
			return Object{}, ErrTooLarge
		}
		return Object{}, fmt.Errorf("store object bytes: %w", err)
	}
	meta := Metadata{ETag: `"` + info.ETag + `"`, Size: info.Size, Mimetype: u.ContentType,
		CacheControl: u.CacheControl, LastModified: info.ModTime.UTC(), ContentLength: info.Size, HTTPStatusCode: http.StatusOK}
	if meta.CacheControl == "" {
		meta.CacheControl = "no-cache"
	}
	var o Object
	var replaced string
	err = s.asSuperuser(ctx, func(tx pgx.Tx) error {
		// The row is locked while it is switched, so of two writers of
		// one name each replaces a whole version and deletes the one it
		// replaced.
		err := tx.QueryRow(ctx, `select coalesce(version, '') from storage.objects where bucket_id = $1 and name = $2 for update`,
			u.Bucket, u.Name).Scan(&replaced)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			replaced = ""
		case err != nil:
			return err
		case !u.Upsert:
			return ErrKeyExists
		}
		if err := claim(ctx, tx, fresh); err != nil {
			return err
		}
		o, err = scanObject(tx.QueryRow(ctx, `insert into storage.objects as o (bucket_id, name, owner, owner_id, version, metadata, user_metadata)
		  values ($1, $2, $3, $4, $5, $6, $7)
		  on conflict (bucket_id, name) do update set owner = excluded.owner, owner_id = excluded.owner_id,
		    version = excluded.version, metadata = excluded.metadata, user_metadata = excluded.user_metadata,
		    updated_at = now(), last_accessed_at = now()
		  returning `+objectCols, u.Bucket, u.Name, ownerUUID(c.Owner), nullable(c.Owner), version, meta, u.UserMetadata))
		return err
	})
	if isUnique(err) {
		err = ErrKeyExists
	}
	if err != nil {
		s.release(fresh)
		return Object{}, err
	}
	if replaced != "" {
		s.release(ref{u.Bucket, u.Name, replaced})
	}
	return o, nil
}

// checkWrite runs the upload's insert (an upsert when allowed) as the
// caller and rolls it back: row-level security and grants answer before
// a byte is stored.
func (s *Store) checkWrite(ctx context.Context, c Caller, u Upload, version string) error {
	errProbe := errors.New("probe")
	conflict := "do nothing"
	if u.Upsert {
		conflict = "do update set version = excluded.version, owner = excluded.owner, owner_id = excluded.owner_id, updated_at = now()"
	}
	var inserted bool
	err := s.asCaller(ctx, c, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `insert into storage.objects (bucket_id, name, owner, owner_id, version, user_metadata) values ($1, $2, $3, $4, $5, $6)
		  on conflict (bucket_id, name) `+conflict, u.Bucket, u.Name, ownerUUID(c.Owner), nullable(c.Owner), version, u.UserMetadata)
		if err != nil {
			return err
		}
		inserted = tag.RowsAffected() > 0
		return errProbe
	})
	if errors.Is(err, errProbe) {
		if !inserted {
			return ErrKeyExists
		}
		return nil
	}
	return err
}

// limitReader fails with ErrTooLarge once more than left bytes pass.
type limitReader struct {
	r    io.Reader
	left int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		return 0, ErrTooLarge
	}
	return n, err
}

// Find returns the object the caller may read; a public bucket's without
// asking row-level security when public is set.
func (s *Store) Find(ctx context.Context, c Caller, bucket, name string, public bool) (Object, error) {
	if err := ValidName(name); err != nil {
		return Object{}, err
	}
	q := `select ` + objectCols + ` from storage.objects where bucket_id = $1 and name = $2`
	var o Object
	var err error
	if public {
		b, berr := s.bucket(ctx, bucket)
		if berr != nil || !b.Public {
			return Object{}, ErrNoSuchBucket
		}
		o, err = scanObject(s.pool.QueryRow(ctx, q, bucket, name))
		err = mapErr(err)
	} else {
		err = s.asCaller(ctx, c, func(tx pgx.Tx) error {
			var err error
			o, err = scanObject(tx.QueryRow(ctx, q, bucket, name))
			return err
		})
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return Object{}, ErrNoSuchKey
	}
	return o, err
}

// Open reads an object's current version from offset, length bytes (-1
// for the rest).
func (s *Store) Open(ctx context.Context, o Object, offset, length int64) (io.ReadCloser, error) {
	r, _, err := s.backend.Get(ctx, Key(o.BucketID, o.Name, o.Version), offset, length)
	if errors.Is(err, ErrNotFound) {
		return nil, ErrNoSuchKey
	}
	return r, err
}

// ListOptions is one page of one folder level.
type ListOptions struct {
	Prefix        string
	Search        string
	Limit, Offset int
	SortColumn    string // name, updated_at, created_at or last_accessed_at
	Desc          bool
}

// Entry is a list item: an object, or a folder with only a name.
type Entry struct {
	Name           string          `json:"name"`
	ID             *string         `json:"id"`
	UpdatedAt      *time.Time      `json:"updated_at"`
	CreatedAt      *time.Time      `json:"created_at"`
	LastAccessedAt *time.Time      `json:"last_accessed_at"`
	Metadata       json.RawMessage `json:"metadata"`
}

// List lists one level of the folder o.Prefix: the objects in it and its
// subfolders (by name), those whose names start with o.Search.
func (s *Store) List(ctx context.Context, c Caller, bucket string, o ListOptions) ([]Entry, error) {
	order, err := orderBy(o.SortColumn, o.Desc, "updated_at", "created_at", "last_accessed_at")
	if err != nil {
		return nil, err
	}
	dir := "asc"
	if o.Desc {
		dir = "desc"
	}
	prefix := strings.TrimLeft(o.Prefix, "/")
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	if o.Limit <= 0 || o.Limit > 1000 {
		o.Limit = 100
	}
	sql := `with s as (
	    select substr(name, length($2) + 1) as rest, id, updated_at, created_at, last_accessed_at, metadata
	    from storage.objects where bucket_id = $1 and starts_with(name, $2)),
	  e as (
	    select split_part(rest, '/', 1) as name, null::uuid as id, null::timestamptz as updated_at,
	      null::timestamptz as created_at, null::timestamptz as last_accessed_at, null::jsonb as metadata
	      from s where strpos(rest, '/') > 0 group by 1
	    union all
	    select rest, id, updated_at, created_at, last_accessed_at, metadata from s where strpos(rest, '/') = 0)
	  select name, id::text, updated_at, created_at, last_accessed_at, metadata from e
	  where $3 = '' or name ilike replace(replace(replace($3, '\', '\\'), '%', '\%'), '_', '\_') || '%'
	  order by ` + order + ` nulls first, name collate "C" ` + dir + ` limit $4 offset $5`
	if _, err := s.bucket(ctx, bucket); err != nil {
		return nil, err
	}
	var out []Entry
	err = s.asCaller(ctx, c, func(tx pgx.Tx) error {
		var err error
		out, err = queryRows(ctx, tx, scanEntry, sql, bucket, prefix, o.Search, o.Limit, max(o.Offset, 0))
		return err
	})
	return out, err
}

func scanEntry(row pgx.Row) (Entry, error) {
	var e Entry
	var meta []byte
	err := row.Scan(&e.Name, &e.ID, &e.UpdatedAt, &e.CreatedAt, &e.LastAccessedAt, &meta)
	if meta != nil {
		e.Metadata = meta
	}
	return e, err
}

// Move renames an object, into another bucket too. It needs UPDATE of
// the row; the bytes are copied to the new name's key and the old key
// deleted after the commit. An existing destination is ErrKeyExists.
func (s *Store) Move(ctx context.Context, c Caller, bucket, from, toBucket, to string) error {
	if err := ValidName(to); err != nil {
		return err
	}
	src, err := s.Find(ctx, c, bucket, from, false)
	if err != nil {
		return err
	}
	if _, err := s.bucket(ctx, toBucket); err != nil {
		return err
	}
	dst, err := s.copyBytes(ctx, ref{bucket, from, src.Version}, toBucket, to)
	if err != nil {
		return err
	}
	err = s.asCaller(ctx, c, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `update storage.objects set bucket_id = $3, name = $4, version = $5, updated_at = now()
		  where bucket_id = $1 and name = $2 and version = $6`, bucket, from, toBucket, to, dst.version, src.Version)
		if err == nil && tag.RowsAffected() == 0 {
			return ErrNoSuchKey
		}
		return err
	})
	if isUnique(err) {
		err = ErrKeyExists
	}
	if err != nil {
		s.release(dst)
		return err
	}
	s.release(ref{bucket, from, src.Version})
	return nil
}

// copyBytes copies src's bytes to a new version of toBucket/to, recorded
// as an upload until a row names it.
func (s *Store) copyBytes(ctx context.Context, src ref, toBucket, to string) (ref, error) {
	dst := ref{toBucket, to, newVersion()}
	if err := s.begin(ctx, dst); err != nil {
		return ref{}, err
	}
	if _, err := s.backend.Copy(ctx, src.key(), dst.key()); err != nil {
		s.release(dst)
		return ref{}, fmt.Errorf("copy object bytes: %w", err)
	}
	return dst, nil
}

// Copy copies an object, into another bucket too; it needs SELECT of the
// source and INSERT of the copy. copyMetadata keeps the source's user
// metadata.
func (s *Store) Copy(ctx context.Context, c Caller, bucket, from, toBucket, to string, copyMetadata bool) (Object, error) {
	if err := ValidName(to); err != nil {
		return Object{}, err
	}
	src, err := s.Find(ctx, c, bucket, from, false)
	if err != nil {
		return Object{}, err
	}
	if _, err := s.bucket(ctx, toBucket); err != nil {
		return Object{}, err
	}
	dst, err := s.copyBytes(ctx, ref{bucket, from, src.Version}, toBucket, to)
	if err != nil {
		return Object{}, err
	}
	meta := src.Metadata
	meta.LastModified = time.Now().UTC()
	var userMeta json.RawMessage
	if copyMetadata {
		userMeta = src.UserMetadata
	}
	var o Object
	err = s.asCaller(ctx, c, func(tx pgx.Tx) error {
		var err error
		o, err = scanObject(tx.QueryRow(ctx, `insert into storage.objects (bucket_id, name, owner, owner_id, version, metadata, user_metadata)
		  values ($1, $2, $3, $4, $5, $6, $7) returning `+objectCols,
			toBucket, to, ownerUUID(c.Owner), nullable(c.Owner), dst.version, meta, userMeta))
		return err
	})
	if isUnique(err) {
		err = ErrKeyExists
	}
	if err != nil {
		s.release(dst)
		return Object{}, err
	}
	return o, nil
}

// Remove deletes the named objects the caller may delete and returns
// their rows; names missing or hidden are left out.
func (s *Store) Remove(ctx context.Context, c Caller, bucket string, names []string) ([]Object, error) {
	var out []Object
	err := s.asCaller(ctx, c, func(tx pgx.Tx) error {
		var err error
		out, err = queryRows(ctx, tx, scanObject, `delete from storage.objects where bucket_id = $1 and name = any($2) returning `+objectCols, bucket, names)
		return err
	})
	if err != nil {
		return nil, err
	}
	gone := make([]ref, 0, len(out))
	for _, o := range out {
		if o.Version != "" {
			gone = append(gone, ref{o.BucketID, o.Name, o.Version})
		}
	}
	s.release(gone...)
	return out, nil
}

// FindSigned returns an object for a signed URL, whose token stood for
// the caller's right to read it when it was made.
func (s *Store) FindSigned(ctx context.Context, bucket, name string) (Object, error) {
	if err := ValidName(name); err != nil {
		return Object{}, err
	}
	o, err := scanObject(s.pool.QueryRow(ctx, `select `+objectCols+` from storage.objects where bucket_id = $1 and name = $2`, bucket, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return Object{}, ErrNoSuchKey
	}
	return o, mapErr(err)
}

// Readable returns those of names the caller may read.
func (s *Store) Readable(ctx context.Context, c Caller, bucket string, names []string) (map[string]bool, error) {
	var readable []string
	err := s.asCaller(ctx, c, func(tx pgx.Tx) error {
		var err error
		readable, err = queryRows(ctx, tx, scanString, `select name from storage.objects where bucket_id = $1 and name = any($2)`, bucket, names)
		return err
	})
	ok := make(map[string]bool, len(readable))
	for _, n := range readable {
		ok[n] = true
	}
	return ok, err
}

// CheckUpload answers whether the caller may write u, without writing
// it: for a signed upload URL, made only for who may upload.
func (s *Store) CheckUpload(ctx context.Context, c Caller, u Upload) error {
	if err := ValidName(u.Name); err != nil {
		return err
	}
	if _, err := s.bucket(ctx, u.Bucket); err != nil {
		return err
	}
	return s.checkWrite(ctx, c, u, newVersion())
}

// Pool is the store's database pool.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }
