package storage

import (
	"net/http"
	"time"

	"github.com/fluxbase/fluxbase/storage"
)

// uploadURLTTL is how long a signed upload URL holds, as in Supabase.
const uploadURLTTL = 2 * time.Hour

// maxSignedTTL bounds expiresIn (a year).
const maxSignedTTL = 365 * 24 * time.Hour

func signTTL(seconds int64) (time.Duration, error) {
	if seconds <= 0 || seconds > int64(maxSignedTTL/time.Second) {
		return 0, storage.ErrInvalidRequest
	}
	return time.Duration(seconds) * time.Second, nil
}

// sign makes a download URL for an object the caller may read.
func (h *handler) sign(w http.ResponseWriter, r *http.Request) {
	bucket, name, err := target(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	var b struct {
		ExpiresIn int64 `json:"expiresIn"`
	}
	if err := decode(r, &b); err != nil {
		h.fail(w, r, err)
		return
	}
	ttl, err := signTTL(b.ExpiresIn)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if _, err := h.store.Find(r.Context(), caller(r), bucket, name, false); err != nil {
		h.fail(w, r, err)
		return
	}
	tok, err := h.signer.Sign(storage.URLClaims{URL: bucket + "/" + name}, ttl)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"signedURL": "/object/sign/" + bucket + "/" + name + "?token=" + tok})
}

type signedItem struct {
	Path      string  `json:"path"`
	SignedURL *string `json:"signedURL"`
	Error     *string `json:"error"`
}

// signMany makes download URLs for several objects; those the caller
// cannot read get an error instead.
func (h *handler) signMany(w http.ResponseWriter, r *http.Request) {
	var b struct {
		ExpiresIn int64    `json:"expiresIn"`
		Paths     []string `json:"paths"`
	}
	bucket, ok := h.bucketAndBody(w, r, &b)
	if !ok {
		return
	}
	ttl, err := signTTL(b.ExpiresIn)
	if err != nil || len(b.Paths) == 0 || len(b.Paths) > maxRemove {
		errInvalidRequest.write(w)
		return
	}
	readable, err := h.store.Readable(r.Context(), caller(r), bucket, b.Paths)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := make([]signedItem, len(b.Paths))
	for i, p := range b.Paths {
		out[i].Path = p
		if !readable[p] {
			msg := "Either the object does not exist or you do not have access to it"
			out[i].Error = &msg
			continue
		}
		tok, err := h.signer.Sign(storage.URLClaims{URL: bucket + "/" + p}, ttl)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		u := "/object/sign/" + bucket + "/" + p + "?token=" + tok
		out[i].SignedURL = &u
	}
	writeJSON(w, http.StatusOK, out)
}

// signedDownload serves an object to whoever holds a valid token for
// its path.
func (h *handler) signedDownload(w http.ResponseWriter, r *http.Request) {
	h.findSigned(w, r, h.serve)
}

// findSigned answers with the object of the request's path when the
// request's token is a valid download token for that path.
func (h *handler) findSigned(w http.ResponseWriter, r *http.Request, answer func(http.ResponseWriter, *http.Request, storage.Object)) {
	bucket, name, err := target(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if _, err := h.signer.Verify(r.URL.Query().Get("token"), bucket+"/"+name, false); err != nil {
		h.fail(w, r, err)
		return
	}
	o, err := h.store.FindSigned(r.Context(), bucket, name)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	answer(w, r, o)
}

// signUpload makes an upload URL for an object the caller may write.
func (h *handler) signUpload(w http.ResponseWriter, r *http.Request) {
	bucket, name, err := target(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	c := caller(r)
	upsert := r.Header.Get("x-upsert") == "true"
	if err := h.store.CheckUpload(r.Context(), c, storage.Upload{Bucket: bucket, Name: name, Upsert: upsert}); err != nil {
		h.fail(w, r, err)
		return
	}
	tok, err := h.signer.Sign(storage.URLClaims{URL: bucket + "/" + name, Upload: true, Owner: c.Owner, Upsert: upsert}, uploadURLTTL)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"url": "/object/upload/sign/" + bucket + "/" + name + "?token=" + tok, "token": tok})
}

// signedUpload writes an object for whoever holds a valid upload token
// for its path; the object's owner is the token's.
func (h *handler) signedUpload(w http.ResponseWriter, r *http.Request) {
	bucket, name, err := target(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	claims, err := h.signer.Verify(r.URL.Query().Get("token"), bucket+"/"+name, true)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	u := storage.Upload{Bucket: bucket, Name: name, Upsert: claims.Upsert, Signed: true}
	if err := h.readUpload(w, r, &u); err != nil {
		h.fail(w, r, err)
		return
	}
	o, err := h.store.Put(r.Context(), storage.Caller{Owner: claims.Owner}, u)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, uploaded{ID: o.ID, Key: bucket + "/" + name})
}
