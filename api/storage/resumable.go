package storage

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/fluxbase/fluxbase/storage"
)

// The TUS 1.0.0 resumable uploads, as Supabase serves them to
// tus-js-client: creation (POST, with Upload-Length and Upload-Metadata
// naming bucketName, objectName, contentType, cacheControl and
// metadata), chunks (PATCH at Upload-Offset), the offset (HEAD) and
// termination (DELETE). An upload is its creator's: another caller
// finds no such upload.

const tusVersion = "1.0.0"

// tusMetadata decodes Upload-Metadata: comma-separated "key base64".
func tusMetadata(h string) (map[string]string, error) {
	m := map[string]string{}
	for pair := range strings.SplitSeq(h, ",") {
		pair = strings.TrimSpace(pair)
		if pair == "" {
			continue
		}
		k, v, _ := strings.Cut(pair, " ")
		b, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			return nil, storage.ErrInvalidRequest
		}
		m[k] = string(b)
	}
	return m, nil
}

func tusHeaders(w http.ResponseWriter) {
	w.Header().Set("Tus-Resumable", tusVersion)
	w.Header().Set("Cache-Control", "no-store")
}

func (h *handler) tusCreate(w http.ResponseWriter, r *http.Request) {
	tusHeaders(w)
	length, err := strconv.ParseInt(r.Header.Get("Upload-Length"), 10, 64)
	if err != nil || length < 0 {
		errInvalidRequest.write(w)
		return
	}
	meta, err := tusMetadata(r.Header.Get("Upload-Metadata"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	u := storage.Upload{Bucket: meta["bucketName"], Name: meta["objectName"], Size: length,
		Upsert: r.Header.Get("x-upsert") == "true", ContentType: meta["contentType"], CacheControl: cacheControl(meta["cacheControl"])}
	if m := meta["metadata"]; m != "" {
		u.UserMetadata = []byte(m)
		if err := checkUserMetadata(&u); err != nil {
			h.fail(w, r, err)
			return
		}
	}
	if err := storage.ValidBucketID(u.Bucket); err != nil {
		h.fail(w, r, err)
		return
	}
	up, err := h.store.CreateResumable(r.Context(), caller(r), u)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Location", requestBase(r)+Prefix+"/upload/resumable/"+up.ID)
	w.Header().Set("Upload-Offset", "0")
	w.WriteHeader(http.StatusCreated)
}

// requestBase is the scheme and host the client reached.
func requestBase(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https") {
		scheme = "https"
	}
	host := r.Host
	if fh := r.Header.Get("X-Forwarded-Host"); fh != "" {
		host = fh
	}
	return scheme + "://" + host
}

func (h *handler) tusHead(w http.ResponseWriter, r *http.Request) {
	tusHeaders(w)
	up, err := h.store.Resumable(r.Context(), caller(r), chiParam(r, "id"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Upload-Offset", strconv.FormatInt(up.Received, 10))
	w.Header().Set("Upload-Length", strconv.FormatInt(up.Length, 10))
	w.WriteHeader(http.StatusOK)
}

func (h *handler) tusPatch(w http.ResponseWriter, r *http.Request) {
	tusHeaders(w)
	if ct := r.Header.Get("Content-Type"); ct != "application/offset+octet-stream" {
		newErr(415, "InvalidContentType", "invalid_content_type", "A chunk's Content-Type must be application/offset+octet-stream").write(w)
		return
	}
	offset, err := strconv.ParseInt(r.Header.Get("Upload-Offset"), 10, 64)
	if err != nil || offset < 0 {
		errInvalidRequest.write(w)
		return
	}
	next, err := h.store.AppendResumable(r.Context(), caller(r), chiParam(r, "id"), offset, h.body(w, r.Body))
	if errors.Is(err, storage.ErrOffsetMismatch) {
		w.Header().Set("Upload-Offset", strconv.FormatInt(next, 10))
		newErr(409, "InvalidUploadOffset", "Conflict", "Upload-Offset is not the upload's offset").write(w)
		return
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Upload-Offset", strconv.FormatInt(next, 10))
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) tusDelete(w http.ResponseWriter, r *http.Request) {
	tusHeaders(w)
	if err := h.store.CancelResumable(r.Context(), caller(r), chiParam(r, "id")); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
