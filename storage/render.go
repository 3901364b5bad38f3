package storage

import (
	"bytes"
	"context"
	"fmt"
	"image"
	_ "image/gif" // decodes GIF sources
	"image/jpeg"
	"image/png"
	"io"
	"strings"

	"golang.org/x/image/draw"
	_ "golang.org/x/image/webp" // decodes WebP sources
)

// Image transformations use golang.org/x/image (draw's Catmull-Rom
// scaler, the WebP decoder) with the standard library's codecs: kept by
// the Go team, pure Go, so a node stays one static binary with no C
// library to patch.

// The bounds of what a transformation takes and makes.
const (
	MaxRenderSource = 25 << 20   // bytes of the source image
	MaxRenderPixels = 50_000_000 // pixels of the source image
	MaxRenderSide   = 2500       // width or height asked for
)

// RenderOptions is one transformation: the size asked for (0 for the
// source's, keeping its aspect when the other is given), how to fit it
// (cover crops, contain fits inside, fill stretches) and the JPEG
// quality.
type RenderOptions struct {
	Width, Height int
	Resize        string
	Quality       int
}

// normalize checks o and fills in the defaults.
func (o *RenderOptions) normalize() error {
	if o.Width < 0 || o.Height < 0 || o.Width > MaxRenderSide || o.Height > MaxRenderSide {
		return ErrInvalidRequest
	}
	switch o.Resize {
	case "":
		o.Resize = "cover"
	case "cover", "contain", "fill":
	default:
		return ErrInvalidRequest
	}
	switch {
	case o.Quality == 0:
		o.Quality = 80
	case o.Quality < 20 || o.Quality > 100:
		return ErrInvalidRequest
	}
	return nil
}

// ref is the cached rendition's version: beside the source version's
// key, so its name says which version it was made from.
func (o RenderOptions) ref(src Object) ref {
	return ref{src.BucketID, src.Name, fmt.Sprintf("%s.render/w%d-h%d-%s-q%d", src.Version, o.Width, o.Height, o.Resize, o.Quality)}
}

// Render returns o's rendition of the object's current version and its
// MIME type: JPEG for a JPEG source, PNG for the others. Renditions are
// cached in the backend, recorded in storage.fluxbase_pending (kind
// 'render') and collected once no row names their source version.
func (s *Store) Render(ctx context.Context, src Object, o RenderOptions) (io.ReadCloser, int64, string, error) {
	if err := o.normalize(); err != nil {
		return nil, 0, "", err
	}
	mime := strings.ToLower(strings.TrimSpace(strings.SplitN(src.Metadata.Mimetype, ";", 2)[0]))
	out := "image/png"
	switch mime {
	case "image/jpeg", "image/jpg":
		out = "image/jpeg"
	case "image/png", "image/gif", "image/webp":
	default:
		return nil, 0, "", ErrMimeType
	}
	r := o.ref(src)
	if cached, info, err := s.backend.Get(ctx, r.key(), 0, -1); err == nil {
		return cached, info.Size, out, nil
	}
	if src.Metadata.Size > MaxRenderSource {
		return nil, 0, "", ErrTooLarge
	}
	body, err := s.Open(ctx, src, 0, -1)
	if err != nil {
		return nil, 0, "", err
	}
	raw, err := io.ReadAll(io.LimitReader(body, MaxRenderSource+1))
	body.Close()
	if err != nil {
		return nil, 0, "", fmt.Errorf("read the source image: %w", err)
	}
	cfg, _, err := image.DecodeConfig(bytes.NewReader(raw))
	if err != nil || len(raw) > MaxRenderSource {
		return nil, 0, "", ErrInvalidRequest
	}
	if int64(cfg.Width)*int64(cfg.Height) > MaxRenderPixels {
		return nil, 0, "", ErrTooLarge
	}
	img, _, err := image.Decode(bytes.NewReader(raw))
	if err != nil {
		return nil, 0, "", ErrInvalidRequest
	}
	var buf bytes.Buffer
	dst := transform(img, o)
	if out == "image/jpeg" {
		err = jpeg.Encode(&buf, dst, &jpeg.Options{Quality: o.Quality})
	} else {
		err = png.Encode(&buf, dst)
	}
	if err != nil {
		return nil, 0, "", fmt.Errorf("encode the rendition: %w", err)
	}
	// Cached on a best-effort basis: a failure costs the next request
	// the work again.
	if _, err := s.pool.Exec(ctx, `insert into storage.fluxbase_pending (bucket_id, name, version, kind) values ($1, $2, $3, 'render')
	  on conflict do nothing`, r.bucket, r.name, r.version); err == nil {
		if _, err := s.backend.Put(ctx, r.key(), bytes.NewReader(buf.Bytes()), int64(buf.Len())); err != nil {
			s.release(r)
		}
	}
	return io.NopCloser(&buf), int64(buf.Len()), out, nil
}

// transform scales img as o asks.
func transform(img image.Image, o RenderOptions) image.Image {
	b := img.Bounds()
	sw, sh := b.Dx(), b.Dy()
	w, h := o.Width, o.Height
	switch {
	case w == 0 && h == 0:
		w, h = sw, sh
	case w == 0:
		w = max(1, sw*h/sh)
	case h == 0:
		h = max(1, sh*w/sw)
	}
	src := b
	switch o.Resize {
	case "contain":
		// The largest size of the source's aspect inside w×h.
		if sw*h > sh*w {
			h = max(1, sh*w/sw)
		} else {
			w = max(1, sw*h/sh)
		}
	case "cover":
		// The largest centred part of the source with w×h's aspect.
		if sw*h > sh*w {
			cw := sh * w / h
			src = image.Rect(b.Min.X+(sw-cw)/2, b.Min.Y, b.Min.X+(sw-cw)/2+cw, b.Max.Y)
		} else {
			ch := sw * h / w
			src = image.Rect(b.Min.X, b.Min.Y+(sh-ch)/2, b.Max.X, b.Min.Y+(sh-ch)/2+ch)
		}
	}
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.CatmullRom.Scale(dst, dst.Bounds(), img, src, draw.Src, nil)
	return dst
}
