package storage

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/fluxbase/fluxbase/storage"
)

func (h *handler) listBuckets(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var o storage.BucketList
	var err error
	if v := q.Get("limit"); v != "" {
		if o.Limit, err = strconv.Atoi(v); err != nil || o.Limit < 0 {
			errInvalidRequest.write(w)
			return
		}
	}
	if v := q.Get("offset"); v != "" {
		if o.Offset, err = strconv.Atoi(v); err != nil || o.Offset < 0 {
			errInvalidRequest.write(w)
			return
		}
	}
	o.Search = q.Get("search")
	o.SortColumn = q.Get("sortColumn")
	var ok bool
	if o.Desc, ok = descending(q.Get("sortOrder")); !ok {
		errInvalidRequest.write(w)
		return
	}
	list, err := h.store.ListBuckets(r.Context(), caller(r), o)
	h.reply(w, r, list, err)
}

func (h *handler) getBucket(w http.ResponseWriter, r *http.Request) {
	id, err := param(r, "bucket")
	if err != nil {
		errInvalidKey.write(w)
		return
	}
	b, err := h.store.GetBucket(r.Context(), caller(r), id)
	h.reply(w, r, b, err)
}

// bucketBody is create's and update's body; absent fields are nil.
type bucketBody struct {
	ID               string          `json:"id"`
	Name             string          `json:"name"`
	Public           *bool           `json:"public"`
	FileSizeLimit    json.RawMessage `json:"file_size_limit"`
	AllowedMimeTypes json.RawMessage `json:"allowed_mime_types"`
}

func (b bucketBody) settings(update bool) (storage.BucketSettings, error) {
	set := storage.BucketSettings{Public: b.Public}
	if len(b.AllowedMimeTypes) > 0 {
		var mimes []string // null clears the list
		if err := json.Unmarshal(b.AllowedMimeTypes, &mimes); err != nil {
			return set, storage.ErrInvalidRequest
		}
		set.AllowedMimeTypes = &mimes
	}
	limit, err := sizeLimit(b.FileSizeLimit)
	if err != nil {
		return set, err
	}
	set.FileSizeLimit = limit
	if update && limit == nil && string(b.FileSizeLimit) == "null" {
		zero := int64(0)
		set.FileSizeLimit = &zero // null clears the limit
	}
	return set, nil
}

func (h *handler) createBucket(w http.ResponseWriter, r *http.Request) {
	var b bucketBody
	if err := decode(r, &b); err != nil {
		h.fail(w, r, err)
		return
	}
	if b.ID == "" {
		b.ID = b.Name
	}
	set, err := b.settings(false)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if err := h.store.CreateBucket(r.Context(), caller(r), b.ID, b.Name, set); err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"name": b.ID})
}

func (h *handler) updateBucket(w http.ResponseWriter, r *http.Request) {
	var b bucketBody
	id, ok := h.bucketAndBody(w, r, &b)
	if !ok {
		return
	}
	set, err := b.settings(true)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if err := h.store.UpdateBucket(r.Context(), caller(r), id, set); err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"message": "Successfully updated"})
}

func (h *handler) emptyBucket(w http.ResponseWriter, r *http.Request) {
	id, err := param(r, "bucket")
	if err != nil {
		errInvalidKey.write(w)
		return
	}
	if err := h.store.EmptyBucket(r.Context(), caller(r), id); err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"message": "Successfully emptied"})
}

func (h *handler) deleteBucket(w http.ResponseWriter, r *http.Request) {
	id, err := param(r, "bucket")
	if err != nil {
		errInvalidKey.write(w)
		return
	}
	if err := h.store.DeleteBucket(r.Context(), caller(r), id); err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"message": "Successfully deleted"})
}

// descending reads a sort order as storage-js sends it: "asc" (or none)
// or "desc", in any case; ok is false for anything else.
func descending(order string) (desc, ok bool) {
	switch strings.ToLower(order) {
	case "", "asc":
		return false, true
	case "desc":
		return true, true
	}
	return false, false
}
