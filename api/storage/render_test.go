package storage

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"testing"
)

// testImage is a PNG of w×h, its left half red and its right half blue.
func testImage(t *testing.T, w, h int) string {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			c := color.RGBA{R: 255, A: 255}
			if x >= w/2 {
				c = color.RGBA{B: 255, A: 255}
			}
			img.Set(x, y, c)
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func TestRenderImage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if r := e.upload(t, "pub/img/wide.png", e.service, testImage(t, 40, 20), "Content-Type", "image/png"); r.status != 200 {
		t.Fatalf("upload: %d %s", r.status, r.body)
	}
	size := func(r resp, format string) (int, int) {
		t.Helper()
		if r.status != 200 || r.header.Get("Content-Type") != "image/"+format {
			t.Fatalf("render: %d %v %.200s", r.status, r.header, r.body)
		}
		cfg, f, err := image.DecodeConfig(bytes.NewReader(r.body))
		if err != nil || f != format {
			t.Fatalf("not a %s: %v", format, err)
		}
		return cfg.Width, cfg.Height
	}
	for _, c := range []struct {
		query string
		w, h  int
	}{
		{"width=10", 10, 5},
		{"height=5", 10, 5},
		{"width=10&height=10", 10, 10}, // cover crops
		{"width=10&height=10&resize=contain", 10, 5},
		{"width=10&height=10&resize=fill", 10, 10},
		{"width=30&height=10&resize=fill&format=origin", 30, 10},
	} {
		r := e.do(t, "GET", "/render/image/authenticated/pub/img/wide.png?"+c.query, e.service, nil)
		if w, h := size(r, "png"); w != c.w || h != c.h {
			t.Errorf("%s: %dx%d, want %dx%d", c.query, w, h, c.w, c.h)
		}
	}
	// Cover keeps the middle: a square from a 2:1 image has both colours.
	r := e.do(t, "GET", "/render/image/public/pub/img/wide.png?width=4&height=4", "", nil)
	img, err := png.Decode(bytes.NewReader(r.body))
	if err != nil {
		t.Fatal(err)
	}
	if left, right := img.At(0, 2), img.At(3, 2); colorOf(left) != "red" || colorOf(right) != "blue" {
		t.Fatalf("cover cropped off a side: %v %v", left, right)
	}

	// A JPEG stays a JPEG, at the quality asked.
	var jbuf bytes.Buffer
	src, _ := png.Decode(bytes.NewReader([]byte(testImage(t, 64, 64))))
	_ = jpeg.Encode(&jbuf, src, &jpeg.Options{Quality: 95})
	e.upload(t, "pub/img/photo.jpg", e.service, jbuf.String(), "Content-Type", "image/jpeg")
	low := e.do(t, "GET", "/render/image/authenticated/pub/img/photo.jpg?width=64&quality=20", e.service, nil)
	high := e.do(t, "GET", "/render/image/authenticated/pub/img/photo.jpg?width=64&quality=100", e.service, nil)
	size(low, "jpeg")
	size(high, "jpeg")
	if len(low.body) >= len(high.body) {
		t.Fatalf("quality 20 is %d bytes, quality 100 %d", len(low.body), len(high.body))
	}

	// Bad input: a size past the bound, an unknown resize or format, a
	// file that is no image, a private object without access.
	for _, q := range []string{"width=3000", "width=-1", "width=x", "resize=crop", "quality=5", "format=avif"} {
		e.do(t, "GET", "/render/image/authenticated/pub/img/wide.png?"+q, e.service, nil).wantErr(t, "400", "InvalidRequest")
	}
	e.upload(t, "pub/img/notes.txt", e.service, "text")
	e.do(t, "GET", "/render/image/authenticated/pub/img/notes.txt?width=10", e.service, nil).wantErr(t, "415", "InvalidMimeType")
	e.upload(t, "pub/img/fake.png", e.service, "not a png", "Content-Type", "image/png")
	e.do(t, "GET", "/render/image/authenticated/pub/img/fake.png?width=10", e.service, nil).wantErr(t, "400", "InvalidRequest")
	e.upload(t, "priv/"+alice+"/p.png", e.aliceTok, testImage(t, 8, 8), "Content-Type", "image/png")
	e.do(t, "GET", "/render/image/authenticated/priv/"+alice+"/p.png?width=4", e.bobToken, nil).wantErr(t, "404", "NoSuchKey")
	e.do(t, "GET", "/render/image/public/priv/"+alice+"/p.png?width=4", "", nil).wantErr(t, "404", "NoSuchBucket")
	var s struct{ SignedURL string }
	e.json(t, "POST", "/object/sign/priv/"+alice+"/p.png", e.aliceTok, `{"expiresIn":60}`).json(t, &s)
	tok := s.SignedURL[len("/object/sign/priv/"+alice+"/p.png?token="):]
	if w, _ := size(e.do(t, "GET", "/render/image/sign/priv/"+alice+"/p.png?width=4&token="+tok, "", nil), "png"); w != 4 {
		t.Fatalf("signed render width %d", w)
	}

	// Renditions are cached, and collected with their source.
	before := e.files(t)
	e.do(t, "GET", "/render/image/authenticated/pub/img/wide.png?width=10", e.service, nil)
	if e.files(t) != before {
		t.Fatal("a cached rendition was made again")
	}
	e.json(t, "DELETE", "/object/pub", e.service, `{"prefixes":["img/wide.png"]}`)
	if _, err := e.store.Collect(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	// Left: photo.jpg and its two renditions, notes.txt, fake.png, p.png
	// and its rendition.
	if n := e.files(t); n != 7 {
		t.Fatalf("%d files after collection, want 7", n)
	}
}

func colorOf(c color.Color) string {
	r, _, b, _ := c.RGBA()
	switch {
	case r > 0xc000 && b < 0x4000:
		return "red"
	case b > 0xc000 && r < 0x4000:
		return "blue"
	}
	return "mixed"
}
