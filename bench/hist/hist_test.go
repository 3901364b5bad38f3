package hist

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
)

func TestBucketsCoverEveryValue(t *testing.T) {
	t.Parallel()
	for _, v := range []int64{0, 1, 255, 256, 257, 511, 512, 1000, 123456789, math.MaxInt64 / 3, math.MaxInt64} {
		lo, hi := bounds(index(v))
		if v < lo || v > hi {
			t.Errorf("value %d in bucket %d [%d,%d]", v, index(v), lo, hi)
		}
		if v >= subCount && float64(hi-lo) > float64(v)/float64(halfCount) {
			t.Errorf("bucket of %d is %d wide", v, hi-lo)
		}
	}
}

// A uniform distribution of 1..100000 has known percentiles.
func TestPercentilesOfUniform(t *testing.T) {
	t.Parallel()
	h := New()
	const n = 100000
	for v := int64(1); v <= n; v++ {
		h.Record(v)
	}
	for _, c := range []struct {
		q    float64
		want float64
	}{{0.5, 50000}, {0.9, 90000}, {0.99, 99000}, {0.999, 99900}} {
		got := float64(h.Quantile(c.q))
		if math.Abs(got-c.want)/c.want > 0.008 {
			t.Errorf("q%.3f = %.0f, want %.0f within 0.8%%", c.q, got, c.want)
		}
	}
	s := h.Summary()
	if s.Count != n || s.Min != 1 || s.Max != n || s.Mean != (n+1)/2.0 {
		t.Errorf("summary %+v", s)
	}
}

// Small values are exact, so a handful of samples gives exact ranks.
func TestPercentilesExactForSmallValues(t *testing.T) {
	t.Parallel()
	var h Histogram
	for _, v := range []int64{5, 1, 3, 2, 4, 6, 7, 8, 9, 10} {
		h.Record(v)
	}
	if got := h.Quantile(0.5); got != 5 {
		t.Errorf("p50 = %d, want 5", got)
	}
	if got := h.Quantile(0.9); got != 9 {
		t.Errorf("p90 = %d, want 9", got)
	}
	if got := h.Quantile(0.99); got != 10 {
		t.Errorf("p99 = %d, want 10", got)
	}
	if h.Min() != 1 || h.Max() != 10 {
		t.Errorf("min %d max %d", h.Min(), h.Max())
	}
}

func TestConcurrentRecordMergeAndJSON(t *testing.T) {
	t.Parallel()
	a, b := New(), New()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for range 10000 {
				a.Record(r.Int64N(1_000_000_000))
			}
		})
	}
	wg.Wait()
	b.Record(7)
	b.Merge(a)
	raw, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	var c Histogram
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	if c.Count() != 40001 || c.Min() != 7 || c.Max() != a.Max() || c.Quantile(0.99) != b.Quantile(0.99) {
		t.Errorf("round trip: count %d min %d max %d p99 %d vs %d", c.Count(), c.Min(), c.Max(), c.Quantile(0.99), b.Quantile(0.99))
	}
	var empty Histogram
	if empty.Quantile(0.5) != 0 || empty.Min() != 0 {
		t.Error("empty histogram reports values")
	}
}
