package bench

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// Progress shows long phases on a terminal as a bar redrawn in place, and
// elsewhere (a log file, CI) as a plain line every quarter. It is safe for
// concurrent use.
type Progress struct {
	mu   sync.Mutex
	w    io.Writer
	tty  bool
	open bool // a bar is drawn on the current line
}

// NewProgress writes to w; a character device counts as a terminal.
func NewProgress(w io.Writer) *Progress {
	p := &Progress{w: w}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
}

// Logf prints a line, moving any bar out of its way. A nil Progress
// discards everything.
func (p *Progress) Logf(format string, args ...any) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clear()
	fmt.Fprintf(p.w, format+"\n", args...)
}

func (p *Progress) clear() {
	if p.open {
		fmt.Fprint(p.w, "\r\033[K")
		p.open = false
	}
}

// Bar is one phase with a known total.
type Bar struct {
	p       *Progress
	name    string
	total   float64
	unit    string
	start   time.Time
	last    time.Time
	quarter int
}

// Phase starts a bar for a phase of total units (connections, seconds...).
func (p *Progress) Phase(name string, total float64, unit string) *Bar {
	b := &Bar{p: p, name: name, total: total, unit: unit, start: time.Now()}
	if p != nil && !p.tty {
		p.Logf("%s: 0/%s %s", name, fmtNum(total), unit)
	}
	return b
}

// Set moves the bar to v of its total.
func (b *Bar) Set(v float64) {
	p := b.p
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	frac := 0.0
	if b.total > 0 {
		frac = min(max(v/b.total, 0), 1)
	}
	if !p.tty {
		if q := int(frac * 4); q > b.quarter && q < 4 {
			b.quarter = q
			fmt.Fprintf(p.w, "%s: %s/%s %s (%.0fs)\n", b.name, fmtNum(v), fmtNum(b.total), b.unit, time.Since(b.start).Seconds())
		}
		return
	}
	if time.Since(b.last) < 100*time.Millisecond && frac < 1 {
		return
	}
	b.last = time.Now()
	const width = 30
	filled := int(frac * width)
	fmt.Fprintf(p.w, "\r\033[K%-18s [%s%s] %3.0f%% %s/%s %s", b.name,
		strings.Repeat("=", filled), strings.Repeat(" ", width-filled), frac*100, fmtNum(v), fmtNum(b.total), b.unit)
	p.open = true
}

// Done ends the bar with a summary line.
func (b *Bar) Done(summary string) {
	if b.p == nil {
		return
	}
	b.p.Logf("%s: %s (%.1fs)", b.name, summary, time.Since(b.start).Seconds())
}

func fmtNum(v float64) string {
	if v == float64(int64(v)) {
		return fmt.Sprintf("%d", int64(v))
	}
	return fmt.Sprintf("%.1f", v)
}
