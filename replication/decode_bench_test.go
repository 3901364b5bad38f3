package replication

import (
	"context"
	"testing"
	"time"

	"github.com/fluxbase/fluxbase/change"
)

// discard is a sink that drops events.
type discard struct{ n int }

func (d *discard) event(ev event) error      { d.n += len(ev.data); return nil }
func (d *discard) commit(commitInfo) error   { return nil }
func (d *discard) position(change.LSN) error { return nil }

// BenchmarkDecodeInsert measures pgoutput → encoded event for a typical
// row (the hot path without I/O).
func BenchmarkDecodeInsert(b *testing.B) {
	ctx := context.Background()
	out := &discard{}
	d := newDecoder(newTypeCache(nil), out, nil)
	cols := []testCol{{"id", 20, true}, {"title", 25, false}, {"done", 16, false}, {"n", 23, false},
		{"created_at", 1184, false}, {"meta", 3802, false}, {"tags", 1009, false}}
	if err := d.decode(ctx, 1, msgRelation(1, "public", "todos", 'd', cols...)); err != nil {
		b.Fatal(err)
	}
	ins := msgInsert(1, val("123456"), val("Buy milk and some bread"), val("f"), val("42"),
		val("2024-01-02 03:04:05.123456+00"), val(`{"prio": 2, "owner": "ana"}`), val(`{home,shopping}`))
	ts := time.Now()
	b.SetBytes(int64(len(ins)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		lsn := change.LSN(i*100 + 1000)
		if i%10 == 0 {
			_ = d.decode(ctx, lsn, msgBegin(lsn+90, ts, uint32(i)))
		}
		if err := d.decode(ctx, lsn+1, ins); err != nil {
			b.Fatal(err)
		}
		if i%10 == 9 {
			_ = d.decode(ctx, lsn+90, msgCommit(d.commitLSN, lsn+95, ts))
		}
	}
}
