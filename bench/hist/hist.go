// Package hist records latencies in a log-linear histogram that many
// goroutines can write at once without locks, that merges across processes
// (it marshals to a sparse JSON form), and that answers percentiles within
// 0.8% of the recorded values.
//
// It does not time anything itself: callers record durations they measured.
package hist

import (
	"encoding/json"
	"fmt"
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// subBits sets the resolution: values below 2^subBits are kept exactly, and
// every power of two above is split into 2^(subBits-1) buckets, so a bucket
// is at most 1/128 of its value wide.
const (
	subBits    = 8
	subCount   = 1 << subBits
	halfCount  = subCount / 2
	numBuckets = subCount + (64-subBits)*halfCount
)

// Histogram counts non-negative values (nanoseconds, by convention).
// Record is safe for concurrent use; Merge, Quantile and the summaries read
// a consistent view only once writers have stopped. The zero value is an
// empty histogram.
type Histogram struct {
	counts [numBuckets]atomic.Uint64
	total  atomic.Uint64
	sum    atomic.Uint64
	// inv holds MaxInt64 minus the smallest value, so that the zero value
	// of a Histogram is an empty one.
	inv atomic.Int64
	max atomic.Int64
}

// New returns an empty histogram; the zero value is one too.
func New() *Histogram { return &Histogram{} }

func raise(a *atomic.Int64, v int64) {
	for {
		m := a.Load()
		if v <= m || a.CompareAndSwap(m, v) {
			return
		}
	}
}

func index(v int64) int {
	if v < subCount {
		return int(v)
	}
	shift := bits.Len64(uint64(v)) - subBits
	return subCount + (shift-1)*halfCount + int(uint64(v)>>shift) - halfCount
}

// bounds returns the smallest and largest value of bucket i.
func bounds(i int) (lo, hi int64) {
	if i < subCount {
		return int64(i), int64(i)
	}
	j := i - subCount
	shift := j/halfCount + 1
	sub := int64(j%halfCount + halfCount)
	lo = sub << shift
	return lo, lo + (1 << shift) - 1
}

// Record adds one value; negative values count as zero.
func (h *Histogram) Record(v int64) {
	if v < 0 {
		v = 0
	}
	h.counts[index(v)].Add(1)
	h.total.Add(1)
	h.sum.Add(uint64(v))
	raise(&h.inv, math.MaxInt64-v)
	raise(&h.max, v)
}

// RecordDuration adds d in nanoseconds.
func (h *Histogram) RecordDuration(d time.Duration) { h.Record(int64(d)) }

// Count is the number of recorded values.
func (h *Histogram) Count() uint64 { return h.total.Load() }

// Min is the smallest recorded value, or 0 when empty.
func (h *Histogram) Min() int64 {
	if h.Count() == 0 {
		return 0
	}
	return math.MaxInt64 - h.inv.Load()
}

// Max is the largest recorded value, exactly.
func (h *Histogram) Max() int64 { return h.max.Load() }

// Mean is the average of the recorded values, or 0 when empty.
func (h *Histogram) Mean() float64 {
	n := h.Count()
	if n == 0 {
		return 0
	}
	return float64(h.sum.Load()) / float64(n)
}

// Quantile returns the value below which a fraction q (0..1) of the
// recorded values lie: the midpoint of the bucket holding that rank,
// clamped to the exact minimum and maximum. It is 0 when empty.
func (h *Histogram) Quantile(q float64) int64 {
	n := h.Count()
	if n == 0 {
		return 0
	}
	switch {
	case q <= 0:
		return h.Min()
	case q >= 1:
		return h.Max()
	}
	rank := uint64(math.Ceil(q * float64(n)))
	if rank == 0 {
		rank = 1
	}
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			lo, hi := bounds(i)
			v := lo + (hi-lo)/2
			return min(max(v, h.Min()), h.Max())
		}
	}
	return h.Max()
}

// Merge adds every value of o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.Count() == 0 {
		return
	}
	for i := range o.counts {
		if c := o.counts[i].Load(); c > 0 {
			h.counts[i].Add(c)
		}
	}
	h.total.Add(o.total.Load())
	h.sum.Add(o.sum.Load())
	raise(&h.inv, o.inv.Load())
	raise(&h.max, o.max.Load())
}

// Summary is the usual set of percentiles, in the histogram's unit.
type Summary struct {
	Count uint64  `json:"count"`
	Mean  float64 `json:"mean"`
	Min   int64   `json:"min"`
	P50   int64   `json:"p50"`
	P90   int64   `json:"p90"`
	P99   int64   `json:"p99"`
	P999  int64   `json:"p999"`
	Max   int64   `json:"max"`
}

// Summary returns count, mean, min, p50, p90, p99, p99.9 and max.
func (h *Histogram) Summary() Summary {
	return Summary{
		Count: h.Count(), Mean: h.Mean(), Min: h.Min(),
		P50: h.Quantile(0.50), P90: h.Quantile(0.90), P99: h.Quantile(0.99),
		P999: h.Quantile(0.999), Max: h.Max(),
	}
}

// wire is the sparse JSON form: bucket indexes with their counts.
type wire struct {
	Count   uint64     `json:"count"`
	Sum     uint64     `json:"sum"`
	Min     int64      `json:"min"`
	Max     int64      `json:"max"`
	Buckets [][2]int64 `json:"buckets"` // [index, count]
}

// MarshalJSON writes the non-empty buckets only.
func (h *Histogram) MarshalJSON() ([]byte, error) {
	w := wire{Count: h.Count(), Sum: h.sum.Load(), Min: h.Min(), Max: h.Max(), Buckets: [][2]int64{}}
	for i := range h.counts {
		if c := h.counts[i].Load(); c > 0 {
			w.Buckets = append(w.Buckets, [2]int64{int64(i), int64(c)})
		}
	}
	return json.Marshal(w)
}

// UnmarshalJSON reads what MarshalJSON wrote into an empty histogram.
func (h *Histogram) UnmarshalJSON(b []byte) error {
	var w wire
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	var total uint64
	for _, bc := range w.Buckets {
		if bc[0] < 0 || bc[0] >= numBuckets || bc[1] < 0 {
			return fmt.Errorf("hist: bucket %v out of range", bc)
		}
		h.counts[bc[0]].Store(uint64(bc[1]))
		total += uint64(bc[1])
	}
	if total != w.Count {
		return fmt.Errorf("hist: buckets hold %d values, header says %d", total, w.Count)
	}
	h.total.Store(w.Count)
	h.sum.Store(w.Sum)
	h.max.Store(w.Max)
	if w.Count > 0 {
		h.inv.Store(math.MaxInt64 - w.Min)
	}
	return nil
}
