// Package storage is the /storage/v1 surface: Supabase Storage's HTTP
// API as @supabase/storage-js speaks it — buckets, objects (upload by
// multipart form or raw body, download with ranges and conditional
// requests, info, list, move, copy, remove), signed download and upload
// URLs and public URLs, resumable (TUS) uploads, image transformations
// (/render/image) — with
// storage-api's error shape,
// {statusCode, code, error, message}, for every error, the edge's too.
//
// It owns only the HTTP: names are decoded and checked here, and every
// call goes to the storage package's Store as the request's role and
// claims, so row-level security on storage.buckets and storage.objects
// decides as in Supabase. Public objects and signed URLs are api.Open
// routes; everything else needs a key. Bodies stream through in both
// directions; none is held whole.
package storage

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"go.uber.org/zap"

	"github.com/fluxbase/fluxbase/api"
	"github.com/fluxbase/fluxbase/auth"
	"github.com/fluxbase/fluxbase/pgrole"
	"github.com/fluxbase/fluxbase/storage"
)

// Prefix is where the surface is served.
const Prefix = "/storage/v1"

// Config configures the surface.
type Config struct {
	Store  *storage.Store
	Signer *storage.Signer
	// BodyIdle is the edge's body timeout (api.Config.BodyTimeout: 0 for
	// its default, negative for none). An upload's body may take longer
	// than it as a whole: each read that brings bytes moves the deadline
	// on by this much, so only a body that stalls for it is cut.
	BodyIdle time.Duration
	Log      *zap.Logger
}

type handler struct {
	store    *storage.Store
	signer   *storage.Signer
	bodyIdle time.Duration
	log      *zap.Logger
}

// New returns the surface.
func New(cfg Config) api.Surface {
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.BodyIdle == 0 {
		cfg.BodyIdle = 30 * time.Second // the edge's default
	}
	h := &handler{store: cfg.Store, signer: cfg.Signer, bodyIdle: cfg.BodyIdle, log: cfg.Log}
	route := func(method, pattern string, access api.Access, fn http.HandlerFunc) api.Route {
		return api.Route{Method: method, Pattern: pattern, Access: access, Handler: fn}
	}
	key, open := api.NeedKey, api.Open
	return api.Surface{
		Prefix:     Prefix,
		WriteError: writeEdgeError,
		Routes: []api.Route{
			route(http.MethodGet, "/bucket", key, h.listBuckets),
			route(http.MethodPost, "/bucket", key, h.createBucket),
			route(http.MethodGet, "/bucket/{bucket}", key, h.getBucket),
			route(http.MethodPut, "/bucket/{bucket}", key, h.updateBucket),
			route(http.MethodDelete, "/bucket/{bucket}", key, h.deleteBucket),
			route(http.MethodPost, "/bucket/{bucket}/empty", key, h.emptyBucket),

			route(http.MethodPost, "/object/list/{bucket}", key, h.list),
			route(http.MethodPost, "/object/move", key, h.move),
			route(http.MethodPost, "/object/copy", key, h.copy),
			route(http.MethodPost, "/object/sign/{bucket}", key, h.signMany),
			route(http.MethodPost, "/object/sign/{bucket}/*", key, h.sign),
			route(http.MethodGet, "/object/sign/{bucket}/*", open, h.signedDownload),
			route(http.MethodHead, "/object/sign/{bucket}/*", open, h.signedDownload),
			route(http.MethodPost, "/object/upload/sign/{bucket}/*", key, h.signUpload),
			route(http.MethodPut, "/object/upload/sign/{bucket}/*", open, h.signedUpload),
			route(http.MethodGet, "/object/public/{bucket}/*", open, h.publicDownload),
			route(http.MethodHead, "/object/public/{bucket}/*", open, h.publicDownload),
			route(http.MethodGet, "/object/authenticated/{bucket}/*", key, h.download),
			route(http.MethodHead, "/object/authenticated/{bucket}/*", key, h.download),
			route(http.MethodGet, "/object/info/public/{bucket}/*", open, h.publicInfo),
			route(http.MethodGet, "/object/info/authenticated/{bucket}/*", key, h.info),
			route(http.MethodGet, "/object/info/{bucket}/*", key, h.info),
			route(http.MethodPost, "/object/{bucket}/*", key, h.upload),
			route(http.MethodPut, "/object/{bucket}/*", key, h.upload),
			route(http.MethodGet, "/object/{bucket}/*", key, h.download),
			route(http.MethodHead, "/object/{bucket}/*", key, h.download),
			route(http.MethodDelete, "/object/{bucket}/*", key, h.deleteOne),
			route(http.MethodDelete, "/object/{bucket}", key, h.remove),

			route(http.MethodPost, "/upload/resumable", key, h.tusCreate),
			route(http.MethodHead, "/upload/resumable/{id}", key, h.tusHead),
			route(http.MethodPatch, "/upload/resumable/{id}", key, h.tusPatch),
			route(http.MethodDelete, "/upload/resumable/{id}", key, h.tusDelete),

			route(http.MethodGet, "/render/image/authenticated/{bucket}/*", key, h.renderAuthenticated),
			route(http.MethodGet, "/render/image/public/{bucket}/*", open, h.renderPublic),
			route(http.MethodGet, "/render/image/sign/{bucket}/*", open, h.renderSigned),
		},
	}
}

// caller is who the request runs as: its token's role and claims, the
// owner its writes get.
func caller(r *http.Request) storage.Caller {
	c := api.Claims(r)
	if c == nil {
		return storage.Caller{As: pgrole.As{Role: auth.RoleAnon}}
	}
	return storage.Caller{As: pgrole.As{Role: c.Role, Claims: c.Raw}, Owner: c.Subject}
}

// param is a path parameter decoded: chi matches the escaped path when
// the request's differs from its decoded form.
func param(r *http.Request, name string) (string, error) {
	v := chi.URLParam(r, name)
	if r.URL.RawPath == "" {
		return v, nil
	}
	return url.PathUnescape(v)
}

// target is the bucket and object name of a request's path.
func target(r *http.Request) (bucket, name string, err error) {
	if bucket, err = param(r, "bucket"); err != nil {
		return "", "", storage.ErrInvalidName
	}
	if name, err = param(r, "*"); err != nil {
		return "", "", storage.ErrInvalidName
	}
	if err := storage.ValidBucketID(bucket); err != nil {
		return "", "", err
	}
	return bucket, name, storage.ValidName(name)
}

// bucketAndBody reads the path's bucket and decodes the body into v; on
// false it has answered.
func (h *handler) bucketAndBody(w http.ResponseWriter, r *http.Request, v any) (string, bool) {
	bucket, err := param(r, "bucket")
	if err == nil {
		err = storage.ValidBucketID(bucket)
	}
	if err != nil {
		errInvalidKey.write(w)
		return "", false
	}
	if err := decode(r, v); err != nil {
		h.fail(w, r, err)
		return "", false
	}
	return bucket, true
}

// chiParam is a path parameter as it came.
func chiParam(r *http.Request, name string) string { return chi.URLParam(r, name) }

// decode reads a JSON body of at most 1 MiB into v; an empty body is {}.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20))
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return errBadJSON
	}
	return nil
}

var errBadJSON = errors.New("the body is not valid JSON")

// sizeLimit reads file_size_limit: a number of bytes, a string such as
// "20MB", or null.
func sizeLimit(raw json.RawMessage) (*int64, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err == nil {
		v, err := strconv.ParseInt(n.String(), 10, 64)
		if err != nil || v < 0 {
			return nil, storage.ErrInvalidRequest
		}
		return &v, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, storage.ErrInvalidRequest
	}
	v, err := storage.ParseSize(s)
	if err != nil {
		return nil, err
	}
	return &v, nil
}

func contentDisposition(name string) string {
	return "attachment; filename=\"" + strings.NewReplacer(`"`, "", "\\", "", "\r", "", "\n", "").Replace(name) +
		"\"; filename*=UTF-8''" + url.PathEscape(name)
}
