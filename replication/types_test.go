package replication

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/fluxbase/fluxbase/change"
)

func TestAppendValue(t *testing.T) {
	t.Parallel()
	tc := newTypeCache(nil)
	get := func(oid uint32) *pgType {
		typ, err := tc.get(context.Background(), oid)
		if err != nil {
			t.Fatal(err)
		}
		return typ
	}
	box := &pgType{name: "_box", kind: kindArray, elem: &pgType{name: "box"}, delim: ';'}
	tests := []struct {
		typ  *pgType
		in   string
		want string
	}{
		{get(23), "42", `42`},
		{get(20), "-9223372036854775808", `-9223372036854775808`},
		{get(23), "042", `"042"`}, // not what PostgreSQL prints: kept, as a string
		{get(23), "", `""`},
		{get(701), "1.5e+300", `1.5e+300`},
		{get(701), "NaN", `"NaN"`},
		{get(700), "-Infinity", `"-Infinity"`},
		{get(1700), "123456789012345", `123456789012345`},
		{get(1700), "1234567890123456", `"1234567890123456"`},
		{get(1700), "0.000000000000000000001", `0.000000000000000000001`},
		{get(1700), "1000000000000000000000", `1000000000000000000000`},
		{get(1700), "12345678.12345678", `"12345678.12345678"`},
		{get(1700), "0.00", `0.00`},
		{get(1700), "-Infinity", `"-Infinity"`},
		{get(16), "t", `true`},
		{get(16), "x", `"x"`},
		{get(3802), `{"a": [1]}`, `{"a": [1]}`},
		{get(114), `{"a": `, `"{\"a\": "`},
		{get(17), `\x`, `""`},
		{get(17), `\xDEADbeef`, `"3q2+7w=="`},
		{get(17), `\x0`, `"\\x0"`},
		{get(17), `a\\b\001`, `"YVxiAQ=="`}, // escape format
		{get(1184), "2024-01-02 03:04:05+00", `"2024-01-02T03:04:05Z"`},
		{get(1184), "2024-01-02 03:04:05.000001-00", `"2024-01-02T03:04:05.000001Z"`},
		{get(1184), "2024-01-02 03:04:05.25+05:30", `"2024-01-01T21:34:05.25Z"`},
		{get(1184), "1900-01-01 00:00:00+00:09:21", `"1899-12-31T23:50:39Z"`},
		{get(1184), "12024-01-02 03:04:05+00", `"12024-01-02 03:04:05+00"`},
		{get(1184), "infinity", `"infinity"`},
		{get(1114), "2024-01-02 03:04:05.5", `"2024-01-02T03:04:05.5"`},
		{get(1114), "2024-01-02 03:04:05 BC", `"2024-01-02 03:04:05 BC"`},
		{get(1007), "{1,2,NULL}", `[1,2,null]`},
		{get(1007), "{{1,2},{3,4}}", `[[1,2],[3,4]]`},
		{get(1007), "[2:3]={1,2}", `[1,2]`},
		{get(1007), "{}", `[]`},
		{get(1007), "{1,2", `"{1,2"`},
		{get(1007), "{1,,2}", `"{1,,2}"`},
		{get(1007), "{1}}", `"{1}}"`},
		{get(1009), `{"a\"b","c\\d",null,"NULL"}`, `["a\"b","c\\d",null,"NULL"]`},
		{get(1009), `{"unterminated}`, `"{\"unterminated}"`},
		{get(1115), `{"2024-01-02 03:04:05"}`, `["2024-01-02T03:04:05"]`},
		{get(1000), `{t,f,NULL}`, `[true,false,null]`},
		{get(3807), `{"{\"a\": 1}"}`, `[{"a": 1}]`},
		{box, `{(1,1),(0,0);(3,3),(2,2)}`, `["(1,1),(0,0)","(3,3),(2,2)"]`},
		{get(25), "tab\there \x01 \"q\" \\ é \xff", `"tab\there \u0001 \"q\" \\ é \ufffd"`},
		{get(99999), "whatever", `"whatever"`},
	}
	for _, tt := range tests {
		var scratch []byte
		got := string(appendValue(nil, tt.typ, []byte(tt.in), &scratch))
		if got != tt.want {
			t.Errorf("%s %q: got %s, want %s", tt.typ.name, tt.in, got, tt.want)
		}
		if !json.Valid([]byte(got)) {
			t.Errorf("%s %q: invalid JSON %s", tt.typ.name, tt.in, got)
		}
	}
}

func TestTypeCacheResolves(t *testing.T) {
	t.Parallel()
	rows := map[uint32]typeRow{
		100: {Name: "mood", Type: 'e', Delim: ','},
		101: {Name: "_mood", Type: 'b', Category: 'A', Elem: 100, Delim: ','},
		102: {Name: "posint", Type: 'd', BaseType: 23, Delim: ','},
		103: {Name: "_posint", Type: 'b', Category: 'A', Elem: 102, Delim: ','},
		104: {Name: "citext", Type: 'b', Delim: ','},
		105: {Name: "loop", Type: 'd', BaseType: 105},
	}
	lookups := 0
	tc := newTypeCache(func(_ context.Context, oid uint32) (typeRow, error) {
		lookups++
		r, ok := rows[oid]
		if !ok {
			return r, errUnknownType
		}
		return r, nil
	})
	for _, tt := range []struct {
		oid  uint32
		name string
		kind kind
	}{
		{101, "_mood", kindArray}, {100, "mood", kindString}, {102, "int4", kindInt},
		{103, "_int4", kindArray}, {104, "citext", kindString}, {105, "oid:105", kindString},
		{999, "oid:999", kindString}, {1184, "timestamptz", kindTimestamptz},
	} {
		typ, err := tc.get(context.Background(), tt.oid)
		if err != nil {
			t.Fatal(err)
		}
		if typ.name != tt.name || typ.kind != tt.kind {
			t.Errorf("oid %d: %s/%d, want %s/%d", tt.oid, typ.name, typ.kind, tt.name, tt.kind)
		}
	}
	before := lookups
	for _, oid := range []uint32{100, 101, 102, 103, 999} {
		if _, err := tc.get(context.Background(), oid); err != nil {
			t.Fatal(err)
		}
	}
	if lookups != before {
		t.Errorf("cached types were looked up again (%d lookups)", lookups-before)
	}
}

func TestShrinkEvent(t *testing.T) {
	t.Parallel()
	c := change.Event{CommitLSN: 5, TxIndex: 1, Schema: "public", Table: "t", Op: change.OpUpdate,
		PK:        change.Row{{Name: "id", Value: json.RawMessage(`"k"`)}},
		Record:    change.Row{{Name: "id", Value: json.RawMessage(`"k"`)}, {Name: "big", Value: json.RawMessage(`"` + strings.Repeat("x", 5000) + `"`)}, {Name: "mid", Value: json.RawMessage(`"` + strings.Repeat("y", 900) + `"`)}},
		OldRecord: change.Row{{Name: "big", Value: json.RawMessage(`"` + strings.Repeat("z", 4000) + `"`)}},
	}
	data := c.AppendJSON(nil)
	out, omitted, err := shrinkEvent(data, 2000)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) > 2000 || !slices.Equal(omitted, []string{"big"}) {
		t.Fatalf("%d bytes, omitted %v", len(out), omitted)
	}
	var back change.Event
	if err := json.Unmarshal(out, &back); err != nil || len(back.Record) != 2 || len(back.OldRecord) != 0 {
		t.Fatalf("shrunk event: %s (%v)", out, err)
	}
	if _, _, err := shrinkEvent(data, 100); err == nil {
		t.Error("an event that cannot fit was accepted")
	}
}
