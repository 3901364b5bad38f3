package storage

import (
	"io"
	"net/http"
	"strconv"

	"github.com/fluxbase/fluxbase/storage"
)

// renderOptions reads width, height, resize and quality; format may be
// only "origin" (the source's own), as storage-js sends it.
func renderOptions(r *http.Request) (storage.RenderOptions, error) {
	q := r.URL.Query()
	var o storage.RenderOptions
	num := func(name string) (int, error) {
		v := q.Get(name)
		if v == "" {
			return 0, nil
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return 0, storage.ErrInvalidRequest
		}
		return n, nil
	}
	var err error
	if o.Width, err = num("width"); err != nil {
		return o, err
	}
	if o.Height, err = num("height"); err != nil {
		return o, err
	}
	if o.Quality, err = num("quality"); err != nil {
		return o, err
	}
	o.Resize = q.Get("resize")
	if f := q.Get("format"); f != "" && f != "origin" {
		return o, storage.ErrInvalidRequest
	}
	return o, nil
}

func (h *handler) renderAuthenticated(w http.ResponseWriter, r *http.Request) {
	h.find(w, r, false, h.render)
}

func (h *handler) renderPublic(w http.ResponseWriter, r *http.Request) {
	h.find(w, r, true, h.render)
}

func (h *handler) renderSigned(w http.ResponseWriter, r *http.Request) {
	h.findSigned(w, r, h.render)
}

// render answers the object's transformed image, cached by the store.
func (h *handler) render(w http.ResponseWriter, r *http.Request, o storage.Object) {
	opts, err := renderOptions(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	body, size, mime, err := h.store.Render(r.Context(), o, opts)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	defer body.Close()
	hd := w.Header()
	hd.Set("Content-Type", mime)
	hd.Set("Content-Length", strconv.FormatInt(size, 10))
	hd.Set("Cache-Control", o.Metadata.CacheControl)
	hd.Set("Last-Modified", o.Metadata.LastModified.UTC().Format(http.TimeFormat))
	w.WriteHeader(http.StatusOK)
	_, _ = io.Copy(w, body)
}
