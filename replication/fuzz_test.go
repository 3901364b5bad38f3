package replication

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/fluxbase/fluxbase/change"
)

// fuzzColumns cover every conversion the tuple decoder makes.
var fuzzColumns = []testCol{
	{"id", 20, true}, {"i", 23, false}, {"f", 701, false}, {"n", 1700, false},
	{"b", 16, false}, {"j", 3802, false}, {"by", 17, false}, {"tz", 1184, false},
	{"ts", 1114, false}, {"ia", 1007, false}, {"ta", 1009, false}, {"t", 25, false},
}

func fuzzSeeds() [][]byte {
	all := []tupleVal{val("1"), val("2"), val("1.5"), val("12.50"), val("t"), val(`{"a":[1]}`),
		val(`\x00ff`), val("2024-01-02 03:04:05.5+00"), val("2024-01-02 03:04:05"),
		val("{1,NULL,{2}}"), val(`{"a b",NULL,"c\"d"}`), val("text é")}
	someNull := make([]tupleVal, len(all))
	copy(someNull, all)
	someNull[3], someNull[11] = nil, toastVal
	return [][]byte{
		msgInsert(1, all...),
		msgInsert(1, someNull...),
		msgUpdate(1, 'O', all, someNull...),
		msgUpdate(1, 'K', []tupleVal{val("1"), nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil}, all...),
		msgDelete(1, 'K', all...),
		msgTruncate(1, 1),
		msgRelation(2, "s", "t", 'f', testCol{"x", 1009, true}, testCol{"y", 99999, false}),
		msgRelation(1, "public", "everything", 'd', fuzzColumns...),
		msgMessage(false, 5, "fluxbase.heartbeat", []byte("x")),
		msgBegin(9, time.Unix(0, 0), 3),
		msgCommit(100, 120, time.Unix(0, 0)),
		{'Y', 0, 0, 0, 1, 'a', 0, 'b', 0},
		{'O', 0, 0, 0, 0, 0, 0, 0, 1, 'o', 0},
	}
}

// FuzzDecode feeds arbitrary bytes to the decoder in the middle of a
// transaction on a known relation, then a valid change and the commit: the
// decoder must never panic, must reject what is not pgoutput with an error,
// and everything it emits must be a valid change event.
//
//	go test -run='^$' -fuzz=FuzzDecode -fuzztime=10s ./replication
func FuzzDecode(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		ctx := context.Background()
		out := &collector{}
		d := newDecoder(newTypeCache(nil), out, nil)
		ts := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
		for _, m := range [][]byte{msgRelation(1, "public", "everything", 'd', fuzzColumns...), msgBegin(100, ts, 7)} {
			if err := d.decode(ctx, 10, m); err != nil {
				t.Fatal(err)
			}
		}
		if err := d.decode(ctx, 50, msg); err != nil && !errors.Is(err, errProtocol) {
			t.Fatalf("error that does not say the input is malformed: %v", err)
		}
		// Whatever happened, a valid change and commit must still work or
		// fail cleanly, and the output must be valid events.
		_ = d.decode(ctx, 60, msgInsert(1, fuzzSeedValues()...))
		_ = d.decode(ctx, 70, msgCommit(100, 120, ts))
		for i, ev := range out.events {
			var c change.Event
			if err := json.Unmarshal(ev.data, &c); err != nil {
				t.Fatalf("event %d is not a valid change: %v\n%s", i, err, ev.data)
			}
		}
	})
}

func fuzzSeedValues() []tupleVal {
	v := make([]tupleVal, len(fuzzColumns))
	for i := range v {
		v[i] = val("1")
	}
	return v
}

func TestDecodeRejectsMalformed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, seed := range fuzzSeeds() {
		for n := 0; n < len(seed); n++ {
			d := newDecoder(newTypeCache(nil), &collector{}, nil)
			_ = d.decode(ctx, 1, msgRelation(1, "public", "everything", 'd', fuzzColumns...))
			_ = d.decode(ctx, 1, msgBegin(100, time.Now(), 7))
			err := d.decode(ctx, 2, seed[:n])
			if n < len(seed) && seed[0] != 'M' && err == nil && !(seed[0] == 'O' || seed[0] == 'Y') {
				t.Errorf("%q cut to %d bytes was accepted", seed[0], n)
			}
		}
	}
}

// FuzzAppendValue checks that any text, under any column type, becomes
// valid JSON.
//
//	go test -run='^$' -fuzz=FuzzAppendValue -fuzztime=10s ./replication
func FuzzAppendValue(f *testing.F) {
	tc := newTypeCache(nil)
	var types []*pgType
	for _, c := range fuzzColumns {
		typ, _ := tc.get(context.Background(), c.oid)
		types = append(types, typ)
	}
	types = append(types, &pgType{name: "_box", kind: kindArray, elem: &pgType{name: "box"}, delim: ';'})
	for _, s := range []string{"{1,2}", `{"a\\b",NULL}`, "[1:2]={{1},{2}}", "1e5", "2024-01-02 03:04:05+05:30", `\x00`, "NaN", "{(1,1);(2,2)}"} {
		for i := range types {
			f.Add(uint8(i), s)
		}
	}
	f.Fuzz(func(t *testing.T, which uint8, text string) {
		typ := types[int(which)%len(types)]
		var scratch []byte
		out := appendValue(nil, typ, []byte(text), &scratch)
		if !json.Valid(out) {
			t.Fatalf("%s %q → invalid JSON %s", typ.name, text, out)
		}
	})
}
