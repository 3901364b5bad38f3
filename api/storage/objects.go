package storage

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/fluxbase/fluxbase/storage"
)

// maxFieldBytes bounds a multipart form field other than the file.
const maxFieldBytes = 64 << 10

// bodyReader marks failures to read the request body (a client that
// cut it off, or stalled), so they answer 400, not 500. While bytes
// come it moves the connection's read deadline on by idle, at most once
// a second: an upload may take as long as it needs while it moves.
type bodyReader struct {
	r        io.Reader
	rc       *http.ResponseController
	idle     time.Duration
	extended time.Time
}

// body is r's body read as an upload's.
func (h *handler) body(w http.ResponseWriter, r io.Reader) *bodyReader {
	b := &bodyReader{r: r}
	if h.bodyIdle > 0 {
		b.rc, b.idle = http.NewResponseController(w), h.bodyIdle
	}
	return b
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if n > 0 && b.rc != nil {
		if now := time.Now(); now.Sub(b.extended) >= time.Second {
			b.extended = now
			_ = b.rc.SetReadDeadline(now.Add(b.idle)) // a writer without deadlines keeps none
		}
	}
	if err != nil && err != io.EOF {
		err = fmt.Errorf("%w: %w", errBody, err)
	}
	return n, err
}

// readUpload fills u from the request: a multipart form (fields
// cacheControl, contentType, metadata, then the file part, whose bytes
// stream through) or a raw body with its headers.
func (h *handler) readUpload(w http.ResponseWriter, r *http.Request, u *storage.Upload) error {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "multipart/form-data" {
		u.Body = h.body(w, r.Body)
		u.Size = r.ContentLength
		u.ContentType = r.Header.Get("Content-Type")
		if u.ContentType == "" {
			u.ContentType = "text/plain;charset=UTF-8"
		}
		u.CacheControl = r.Header.Get("Cache-Control")
		if m := r.Header.Get("x-metadata"); m != "" {
			raw, err := base64.StdEncoding.DecodeString(m)
			if err != nil {
				return storage.ErrInvalidRequest
			}
			u.UserMetadata = raw
		}
		return checkUserMetadata(u)
	}
	mr, err := r.MultipartReader()
	if err != nil {
		return storage.ErrInvalidRequest
	}
	var contentType string
	for {
		p, err := mr.NextPart()
		if err != nil {
			if err == io.EOF {
				return storage.ErrInvalidRequest // no file part
			}
			return fmt.Errorf("%w: %w", errBody, err)
		}
		if p.FileName() != "" || p.FormName() == "" || p.FormName() == "file" {
			u.Body = h.body(w, p)
			u.Size = -1
			u.ContentType = contentType
			if u.ContentType == "" {
				u.ContentType = p.Header.Get("Content-Type")
			}
			if u.ContentType == "" {
				u.ContentType = "text/plain;charset=UTF-8"
			}
			return checkUserMetadata(u)
		}
		raw, err := io.ReadAll(io.LimitReader(p, maxFieldBytes+1))
		if err != nil {
			return fmt.Errorf("%w: %w", errBody, err)
		}
		if len(raw) > maxFieldBytes {
			return storage.ErrInvalidRequest
		}
		switch p.FormName() {
		case "cacheControl":
			u.CacheControl = cacheControl(string(raw))
		case "contentType":
			contentType = string(raw)
		case "metadata":
			u.UserMetadata = raw
		}
	}
}

// cacheControl turns storage-js's cacheControl field ("3600") into the
// header's value.
func cacheControl(v string) string {
	v = strings.TrimSpace(v)
	if _, err := strconv.ParseUint(v, 10, 32); err == nil {
		return "max-age=" + v
	}
	return v
}

func checkUserMetadata(u *storage.Upload) error {
	if len(u.UserMetadata) == 0 {
		return nil
	}
	var m map[string]any
	if json.Unmarshal(u.UserMetadata, &m) != nil {
		return storage.ErrInvalidRequest
	}
	return nil
}

type uploaded struct {
	ID  string `json:"Id"`
	Key string `json:"Key"`
}

func (h *handler) upload(w http.ResponseWriter, r *http.Request) {
	bucket, name, err := target(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	u := storage.Upload{Bucket: bucket, Name: name, Upsert: r.Method == http.MethodPut || r.Header.Get("x-upsert") == "true"}
	if err := h.readUpload(w, r, &u); err != nil {
		h.fail(w, r, err)
		return
	}
	o, err := h.store.Put(r.Context(), caller(r), u)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, uploaded{ID: o.ID, Key: bucket + "/" + name})
}

func (h *handler) download(w http.ResponseWriter, r *http.Request)       { h.find(w, r, false, h.serve) }
func (h *handler) publicDownload(w http.ResponseWriter, r *http.Request) { h.find(w, r, true, h.serve) }
func (h *handler) info(w http.ResponseWriter, r *http.Request)           { h.find(w, r, false, writeInfo) }
func (h *handler) publicInfo(w http.ResponseWriter, r *http.Request)     { h.find(w, r, true, writeInfo) }

// find answers with the object of the request's path, read as the
// caller (or, public, from a public bucket past row-level security).
func (h *handler) find(w http.ResponseWriter, r *http.Request, public bool, answer func(http.ResponseWriter, *http.Request, storage.Object)) {
	bucket, name, err := target(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	o, err := h.store.Find(r.Context(), caller(r), bucket, name, public)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	answer(w, r, o)
}

// serve answers an object's bytes: whole, or the one range asked for
// (206), or 304 when the client's copy is current.
func (h *handler) serve(w http.ResponseWriter, r *http.Request, o storage.Object) {
	m := o.Metadata
	hd := w.Header()
	hd.Set("ETag", m.ETag)
	hd.Set("Last-Modified", m.LastModified.UTC().Format(http.TimeFormat))
	hd.Set("Cache-Control", m.CacheControl)
	hd.Set("Accept-Ranges", "bytes")
	if inm := r.Header.Get("If-None-Match"); inm != "" && etagMatch(inm, m.ETag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	if _, ok := r.URL.Query()["download"]; ok {
		fn := r.URL.Query().Get("download")
		if fn == "" {
			fn = path.Base(o.Name)
		}
		hd.Set("Content-Disposition", contentDisposition(fn))
	}
	hd.Set("Content-Type", m.Mimetype)
	offset, length, status := int64(0), m.Size, http.StatusOK
	if rg := r.Header.Get("Range"); rg != "" {
		var ok bool
		offset, length, ok = parseRange(rg, m.Size)
		if !ok {
			hd.Set("Content-Range", "bytes */"+strconv.FormatInt(m.Size, 10))
			errRangeNotSatisfy.write(w)
			return
		}
		if offset != 0 || length != m.Size {
			status = http.StatusPartialContent
			hd.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", offset, offset+length-1, m.Size))
		}
	}
	hd.Set("Content-Length", strconv.FormatInt(length, 10))
	if r.Method == http.MethodHead {
		w.WriteHeader(status)
		return
	}
	body, err := h.store.Open(r.Context(), o, offset, length)
	if err != nil {
		hd.Del("Content-Length")
		hd.Del("Content-Range")
		h.fail(w, r, err)
		return
	}
	defer body.Close()
	w.WriteHeader(status)
	_, _ = io.Copy(w, body) // a client that leaves ends the copy
}

func etagMatch(header, etag string) bool {
	for t := range strings.SplitSeq(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == "*" || t == etag || `"`+t+`"` == etag {
			return true
		}
	}
	return false
}

// parseRange reads one byte range of an object of size bytes: "a-b",
// "a-" or "-n". Several ranges, or none satisfiable, are not ok.
func parseRange(h string, size int64) (offset, length int64, ok bool) {
	spec, found := strings.CutPrefix(h, "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, 0, false
	}
	first, last, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return 0, 0, false
	}
	if first == "" {
		n, err := strconv.ParseInt(last, 10, 64)
		if err != nil || n <= 0 || size == 0 {
			return 0, 0, false
		}
		n = min(n, size)
		return size - n, n, true
	}
	a, err := strconv.ParseInt(first, 10, 64)
	if err != nil || a < 0 || a >= size {
		return 0, 0, false
	}
	b := size - 1
	if last != "" {
		if b, err = strconv.ParseInt(last, 10, 64); err != nil || b < a {
			return 0, 0, false
		}
		b = min(b, size-1)
	}
	return a, b - a + 1, true
}

// objectInfo is info's answer.
type objectInfo struct {
	ID           string          `json:"id"`
	Name         string          `json:"name"`
	Version      string          `json:"version"`
	BucketID     string          `json:"bucket_id"`
	Size         int64           `json:"size"`
	ContentType  string          `json:"content_type"`
	CacheControl string          `json:"cache_control"`
	ETag         string          `json:"etag"`
	Metadata     json.RawMessage `json:"metadata"`
	LastModified time.Time       `json:"last_modified"`
	CreatedAt    time.Time       `json:"created_at"`
}

func writeInfo(w http.ResponseWriter, _ *http.Request, o storage.Object) {
	meta := o.UserMetadata
	if len(meta) == 0 {
		meta = json.RawMessage("{}")
	}
	writeJSON(w, http.StatusOK, objectInfo{ID: o.ID, Name: o.Name, Version: o.Version, BucketID: o.BucketID,
		Size: o.Metadata.Size, ContentType: o.Metadata.Mimetype, CacheControl: o.Metadata.CacheControl,
		ETag: o.Metadata.ETag, Metadata: meta, LastModified: o.Metadata.LastModified, CreatedAt: o.CreatedAt})
}

type listBody struct {
	Prefix string `json:"prefix"`
	Limit  int    `json:"limit"`
	Offset int    `json:"offset"`
	Search string `json:"search"`
	SortBy *struct {
		Column string `json:"column"`
		Order  string `json:"order"`
	} `json:"sortBy"`
}

func (h *handler) list(w http.ResponseWriter, r *http.Request) {
	var b listBody
	bucket, ok := h.bucketAndBody(w, r, &b)
	if !ok {
		return
	}
	o := storage.ListOptions{Prefix: b.Prefix, Search: b.Search, Limit: b.Limit, Offset: b.Offset}
	if b.Limit < 0 || b.Offset < 0 {
		errInvalidRequest.write(w)
		return
	}
	if b.SortBy != nil {
		o.SortColumn = b.SortBy.Column
		var ok bool
		if o.Desc, ok = descending(b.SortBy.Order); !ok {
			errInvalidRequest.write(w)
			return
		}
	}
	list, err := h.store.List(r.Context(), caller(r), bucket, o)
	h.reply(w, r, list, err)
}

type moveBody struct {
	BucketID          string `json:"bucketId"`
	SourceKey         string `json:"sourceKey"`
	DestinationKey    string `json:"destinationKey"`
	DestinationBucket string `json:"destinationBucket"`
	CopyMetadata      *bool  `json:"copyMetadata"`
}

func (b *moveBody) check() error {
	if b.DestinationBucket == "" {
		b.DestinationBucket = b.BucketID
	}
	if err := storage.ValidBucketID(b.BucketID); err != nil {
		return err
	}
	if err := storage.ValidBucketID(b.DestinationBucket); err != nil {
		return err
	}
	if err := storage.ValidName(b.SourceKey); err != nil {
		return err
	}
	return storage.ValidName(b.DestinationKey)
}

// readMove reads and checks a move's or copy's body; on false it has
// answered.
func (h *handler) readMove(w http.ResponseWriter, r *http.Request) (moveBody, bool) {
	var b moveBody
	err := decode(r, &b)
	if err == nil {
		err = b.check()
	}
	if err != nil {
		h.fail(w, r, err)
		return b, false
	}
	return b, true
}

func (h *handler) move(w http.ResponseWriter, r *http.Request) {
	b, ok := h.readMove(w, r)
	if !ok {
		return
	}
	if err := h.store.Move(r.Context(), caller(r), b.BucketID, b.SourceKey, b.DestinationBucket, b.DestinationKey); err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"message": "Successfully moved"})
}

func (h *handler) copy(w http.ResponseWriter, r *http.Request) {
	b, ok := h.readMove(w, r)
	if !ok {
		return
	}
	o, err := h.store.Copy(r.Context(), caller(r), b.BucketID, b.SourceKey, b.DestinationBucket, b.DestinationKey, b.CopyMetadata == nil || *b.CopyMetadata)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, uploaded{ID: o.ID, Key: b.DestinationBucket + "/" + b.DestinationKey})
}

// maxRemove bounds the names of one remove.
const maxRemove = 1000

func (h *handler) remove(w http.ResponseWriter, r *http.Request) {
	var b struct {
		Prefixes []string `json:"prefixes"`
	}
	bucket, ok := h.bucketAndBody(w, r, &b)
	if !ok {
		return
	}
	if len(b.Prefixes) == 0 || len(b.Prefixes) > maxRemove {
		errInvalidRequest.write(w)
		return
	}
	removed, err := h.store.Remove(r.Context(), caller(r), bucket, b.Prefixes)
	h.reply(w, r, removed, err)
}

func (h *handler) deleteOne(w http.ResponseWriter, r *http.Request) {
	bucket, name, err := target(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	removed, err := h.store.Remove(r.Context(), caller(r), bucket, []string{name})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if len(removed) == 0 {
		errNoSuchKey.write(w)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"message": "Successfully deleted"})
}
