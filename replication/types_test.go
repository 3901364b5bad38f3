package replication

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
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

func TestSubjectEscaping(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ name, token string }{
		{"todos", "todos"},
		{"My_Table-2", "My_Table-2"},
		{"a.b", "a%2Eb"},
		{"with space", "with%20space"},
		{"*", "%2A"},
		{">", "%3E"},
		{"100%", "100%25"},
		{"données", "donn%C3%A9es"},
		{"", "%"},
	} {
		if got := EscapeToken(tt.name); got != tt.token {
			t.Errorf("EscapeToken(%q) = %q, want %q", tt.name, got, tt.token)
		}
		back, ok := UnescapeToken(tt.token)
		if !ok || back != tt.name {
			t.Errorf("UnescapeToken(%q) = %q, %v", tt.token, back, ok)
		}
	}
	for _, bad := range []string{"", "%2", "%zz", "%61", "a.b", "a%2eb"} {
		if _, ok := UnescapeToken(bad); ok {
			t.Errorf("UnescapeToken(%q) accepted", bad)
		}
	}
	if got := ChangeSubject("public", "a.b", "insert"); got != "fluxbase.changes.public.a%2Eb.insert" {
		t.Errorf("ChangeSubject = %s", got)
	}
	if s, tb, op, ok := ParseChangeSubject(ChangeSubject("my schema", "a.b", "update")); !ok || s != "my schema" || tb != "a.b" || op != "update" {
		t.Errorf("ParseChangeSubject(ChangeSubject(...)) = %q %q %q %v", s, tb, op, ok)
	}
	for _, bad := range []string{"fluxbase.changes.public.t", "fluxbase.changes.public.t.insert.x", "other.changes.public.t.insert", "fluxbase.changes.a%2eb.t.insert"} {
		if _, _, _, ok := ParseChangeSubject(bad); ok {
			t.Errorf("ParseChangeSubject(%q) accepted", bad)
		}
	}
}

func TestPositions(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"0/0", "16/B374D848", "FFFFFFFF/FFFFFFFF"} {
		l, err := ParseLSN(s)
		if err != nil || l.String() != s {
			t.Errorf("ParseLSN(%q) = %v, %v", s, l, err)
		}
	}
	for _, s := range []string{"", "/", "1/", "/1", "x/1", "123456789/0", "1-1"} {
		if _, err := ParseLSN(s); err == nil {
			t.Errorf("ParseLSN(%q) accepted", s)
		}
	}
	p := Position{CommitLSN: 0x16B374D848, TxIndex: 7}
	if p.MsgID() != "16/B374D848/7" {
		t.Errorf("MsgID = %s", p.MsgID())
	}
	if q, err := ParseMsgID(p.MsgID()); err != nil || q != p {
		t.Errorf("ParseMsgID = %v, %v", q, err)
	}
	for _, s := range []string{"16/B374D848", "16/B374D848/-1", "x/y/1"} {
		if _, err := ParseMsgID(s); err == nil {
			t.Errorf("ParseMsgID(%q) accepted", s)
		}
	}
	if !(Position{1, 5}).Less(Position{2, 0}) || !(Position{2, 0}).Less(Position{2, 1}) || (Position{2, 1}).Less(Position{2, 1}) {
		t.Error("Position.Less is not commit order")
	}
}

func TestChangeJSONRoundTrip(t *testing.T) {
	t.Parallel()
	in := `{"commit_lsn":"1/2","lsn":"1/1","xid":7,"commit_ts":"2024-01-02T03:04:05.123456Z","tx_index":3,` +
		`"schema":"public","table":"t","op":"update","pk":{"id":1},"record":{"id":1,"z":[1,{"a":null}],"a":"x"},` +
		`"old_record":null,"columns":[{"name":"id","type":"int4"},{"name":"z","type":"jsonb"},{"name":"a","type":"text"}],` +
		`"unchanged_toast":["b"],"tx_last":true}`
	var c Change
	if err := json.Unmarshal([]byte(in), &c); err != nil {
		t.Fatal(err)
	}
	if got := string(c.AppendJSON(nil)); got != in {
		t.Fatalf("round trip:\n%s\n%s", in, got)
	}
	if got, err := json.Marshal(&c); err != nil || string(got) != in {
		t.Fatalf("json.Marshal: %s, %v", got, err)
	}
	if c.Record[1].Name != "z" || c.Record[2].Name != "a" {
		t.Errorf("record lost its column order: %v", c.Record)
	}
	m, err := c.Record.Map()
	if err != nil || m["id"] != json.Number("1") || m["a"] != "x" {
		t.Errorf("Map = %v, %v", m, err)
	}
	if v, ok := c.PK.Get("id"); !ok || string(v) != "1" {
		t.Errorf("PK.Get = %s, %v", v, ok)
	}
	if _, err := json.Marshal(Row{{Name: "x", Value: json.RawMessage("{")}}); err == nil {
		t.Error("a row with an invalid value was marshalled")
	}
}

func TestShrinkEvent(t *testing.T) {
	t.Parallel()
	c := Change{CommitLSN: 5, TxIndex: 1, Schema: "public", Table: "t", Op: OpUpdate,
		PK:        Row{{Name: "id", Value: json.RawMessage(`"k"`)}},
		Record:    Row{{Name: "id", Value: json.RawMessage(`"k"`)}, {Name: "big", Value: json.RawMessage(`"` + strings.Repeat("x", 5000) + `"`)}, {Name: "mid", Value: json.RawMessage(`"` + strings.Repeat("y", 900) + `"`)}},
		OldRecord: Row{{Name: "big", Value: json.RawMessage(`"` + strings.Repeat("z", 4000) + `"`)}},
	}
	data := c.AppendJSON(nil)
	out, omitted, err := shrinkEvent(data, 2000)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) > 2000 || !slices.Equal(omitted, []string{"big"}) {
		t.Fatalf("%d bytes, omitted %v", len(out), omitted)
	}
	var back Change
	if err := json.Unmarshal(out, &back); err != nil || len(back.Record) != 2 || len(back.OldRecord) != 0 {
		t.Fatalf("shrunk event: %s (%v)", out, err)
	}
	if _, _, err := shrinkEvent(data, 100); err == nil {
		t.Error("an event that cannot fit was accepted")
	}
}
