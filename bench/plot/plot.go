// Package plot draws the simple charts the benchmark reports carry — lines
// over a shared x axis and labelled bars — straight to PNG with the
// standard library and a fixed bitmap font.
//
// It knows nothing about benchmarks: callers pass numbers and labels.
package plot

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"math"
	"os"
	"strconv"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// Series is one named line.
type Series struct {
	Name string
	X, Y []float64
}

// Tick is a labelled position on an axis.
type Tick struct {
	At    float64
	Label string
}

// Lines is a line chart. The x axis shows XTicks when given, else evenly
// spaced round numbers; the y axis starts at zero.
type Lines struct {
	Title, XLabel, YLabel string
	Series                []Series
	XTicks                []Tick
}

// Bar is one labelled bar.
type Bar struct {
	Label string
	Value float64
}

// Bars is a bar chart; Note, when set, is printed under the title.
type Bars struct {
	Title, YLabel, Note string
	Bars                []Bar
}

// Size of every chart, in pixels.
const (
	Width  = 900
	Height = 480
)

var (
	white   = color.RGBA{255, 255, 255, 255}
	black   = color.RGBA{30, 30, 30, 255}
	grey    = color.RGBA{225, 225, 225, 255}
	palette = []color.RGBA{
		{31, 119, 180, 255}, {214, 39, 40, 255}, {44, 160, 44, 255},
		{255, 127, 14, 255}, {148, 103, 189, 255}, {140, 86, 75, 255},
	}
)

const (
	left, right, top, bottom = 80, 30, 50, 60
	charW, lineH             = 7, 13
)

// canvas is an image with drawing helpers in pixel coordinates.
type canvas struct{ *image.RGBA }

func newCanvas() canvas {
	img := image.NewRGBA(image.Rect(0, 0, Width, Height))
	draw.Draw(img, img.Bounds(), &image.Uniform{white}, image.Point{}, draw.Src)
	return canvas{img}
}

func (c canvas) text(x, y int, s string, col color.Color) {
	d := font.Drawer{Dst: c.RGBA, Src: image.NewUniform(col), Face: basicfont.Face7x13,
		Dot: fixed.P(x, y)}
	d.DrawString(s)
}

func (c canvas) textCentered(x, y int, s string) { c.text(x-len(s)*charW/2, y, s, black) }

func (c canvas) textRight(x, y int, s string) { c.text(x-len(s)*charW, y, s, black) }

func (c canvas) rect(x0, y0, x1, y1 int, col color.Color) {
	draw.Draw(c.RGBA, image.Rect(x0, y0, x1, y1), &image.Uniform{col}, image.Point{}, draw.Src)
}

// line draws a two-pixel-wide segment.
func (c canvas) line(x0, y0, x1, y1 int, col color.RGBA) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := sign(x1-x0), sign(y1-y0)
	e := dx + dy
	for {
		c.SetRGBA(x0, y0, col)
		c.SetRGBA(x0+1, y0, col)
		c.SetRGBA(x0, y0+1, col)
		if x0 == x1 && y0 == y1 {
			return
		}
		e2 := 2 * e
		if e2 >= dy {
			e += dy
			x0 += sx
		}
		if e2 <= dx {
			e += dx
			y0 += sy
		}
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

func sign(v int) int {
	switch {
	case v < 0:
		return -1
	case v > 0:
		return 1
	}
	return 0
}

// niceTicks returns round tick positions from 0 (or lo) to at least hi.
func niceTicks(lo, hi float64, n int) []float64 {
	if hi <= lo {
		hi = lo + 1
	}
	raw := (hi - lo) / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	var ticks []float64
	for v := math.Floor(lo/step) * step; ; v += step {
		ticks = append(ticks, v)
		if v >= hi-step*1e-9 {
			return ticks
		}
	}
}

// Label formats a number briefly: 1234 → "1234", 0.25 → "0.25", 2e6 → "2M".
func Label(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 1e9:
		return strconv.FormatFloat(v/1e9, 'g', 4, 64) + "G"
	case a >= 1e6:
		return strconv.FormatFloat(v/1e6, 'g', 4, 64) + "M"
	case a >= 1e4:
		return strconv.FormatFloat(v/1e3, 'g', 4, 64) + "k"
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

// frame draws the title, axis labels, grid and y ticks for a y range of
// 0..ymax, and returns the y scale's maximum after rounding.
func (c canvas) frame(title, xlabel, ylabel string, ymax float64) float64 {
	c.textCentered(Width/2, 22, title)
	c.text(8, top-10, ylabel, black)
	c.textCentered(left+(Width-left-right)/2, Height-14, xlabel)
	ticks := niceTicks(0, ymax, 6)
	ytop := ticks[len(ticks)-1]
	for _, v := range ticks {
		y := c.yPix(v, ytop)
		c.rect(left, y, Width-right, y+1, grey)
		c.textRight(left-6, y+4, Label(v))
	}
	c.rect(left, top, left+1, Height-bottom, black)
	c.rect(left, Height-bottom, Width-right, Height-bottom+1, black)
	return ytop
}

func (c canvas) yPix(v, ytop float64) int {
	h := float64(Height - top - bottom)
	return Height - bottom - int(math.Round(v/ytop*h))
}

// PNG renders the line chart.
func (l Lines) PNG(w io.Writer) error {
	c := newCanvas()
	xmin, xmax, ymax := math.Inf(1), math.Inf(-1), 0.0
	for _, s := range l.Series {
		for i := range s.X {
			xmin, xmax = math.Min(xmin, s.X[i]), math.Max(xmax, s.X[i])
			ymax = math.Max(ymax, s.Y[i])
		}
	}
	for _, t := range l.XTicks {
		xmin, xmax = math.Min(xmin, t.At), math.Max(xmax, t.At)
	}
	if math.IsInf(xmin, 0) {
		xmin, xmax = 0, 1
	}
	if xmax == xmin {
		xmax = xmin + 1
	}
	ytop := c.frame(l.Title, l.XLabel, l.YLabel, ymax)
	pw := float64(Width - left - right)
	xPix := func(v float64) int { return left + int(math.Round((v-xmin)/(xmax-xmin)*pw)) }

	ticks := l.XTicks
	if len(ticks) == 0 {
		for _, v := range niceTicks(xmin, xmax, 8) {
			if v >= xmin && v <= xmax {
				ticks = append(ticks, Tick{v, Label(v)})
			}
		}
	}
	for _, t := range ticks {
		x := xPix(t.At)
		c.rect(x, top, x+1, Height-bottom, grey)
		c.textCentered(x, Height-bottom+16, t.Label)
	}
	for i, s := range l.Series {
		col := palette[i%len(palette)]
		for j := 1; j < len(s.X); j++ {
			c.line(xPix(s.X[j-1]), c.yPix(s.Y[j-1], ytop), xPix(s.X[j]), c.yPix(s.Y[j], ytop), col)
		}
		if len(s.X) == 1 {
			x, y := xPix(s.X[0]), c.yPix(s.Y[0], ytop)
			c.rect(x-2, y-2, x+3, y+3, col)
		}
		// Legend, top right.
		ly := top + 8 + i*(lineH+4)
		lx := Width - right - 10 - len(s.Name)*charW - 24
		c.rect(lx, ly-8, lx+16, ly-4, col)
		c.text(lx+22, ly, s.Name, black)
	}
	return png.Encode(w, c.RGBA)
}

// PNG renders the bar chart.
func (b Bars) PNG(w io.Writer) error {
	c := newCanvas()
	ymax := 0.0
	for _, bar := range b.Bars {
		ymax = math.Max(ymax, bar.Value)
	}
	ytop := c.frame(b.Title, "", b.YLabel, ymax)
	if b.Note != "" {
		c.textCentered(Width/2, 38, b.Note)
	}
	n := max(len(b.Bars), 1)
	slot := (Width - left - right) / n
	bw := slot * 3 / 5
	for i, bar := range b.Bars {
		x := left + i*slot + (slot-bw)/2
		y := c.yPix(bar.Value, ytop)
		c.rect(x, y, x+bw, Height-bottom, palette[i%len(palette)])
		c.textCentered(x+bw/2, y-6, Label(bar.Value))
		c.textCentered(x+bw/2, Height-bottom+16, bar.Label)
	}
	return png.Encode(w, c.RGBA)
}

// Chart is anything that renders itself as a PNG.
type Chart interface {
	PNG(w io.Writer) error
}

// WriteFile renders chart into path.
func WriteFile(path string, chart Chart) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create plot: %w", err)
	}
	if err := chart.PNG(f); err != nil {
		f.Close()
		return fmt.Errorf("render %s: %w", path, err)
	}
	return f.Close()
}
