package change

import (
	"encoding/json"
	"strings"
	"testing"
)

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
	if got := Subject("public", "a.b", "insert"); got != "fluxbase.changes.public.a%2Eb.insert" {
		t.Errorf("Subject = %s", got)
	}
	if s, tb, op, ok := ParseSubject(Subject("my schema", "a.b", "update")); !ok || s != "my schema" || tb != "a.b" || op != "update" {
		t.Errorf("ParseSubject(Subject(...)) = %q %q %q %v", s, tb, op, ok)
	}
	for _, bad := range []string{"fluxbase.changes.public.t", "fluxbase.changes.public.t.insert.x", "other.changes.public.t.insert", "fluxbase.changes.a%2eb.t.insert"} {
		if _, _, _, ok := ParseSubject(bad); ok {
			t.Errorf("ParseSubject(%q) accepted", bad)
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

func TestEventJSONRoundTrip(t *testing.T) {
	t.Parallel()
	in := `{"commit_lsn":"1/2","lsn":"1/1","xid":7,"commit_ts":"2024-01-02T03:04:05.123456Z","tx_index":3,` +
		`"schema":"public","table":"t","op":"update","pk":{"id":1},"record":{"id":1,"z":[1,{"a":null}],"a":"x"},` +
		`"old_record":null,"columns":[{"name":"id","type":"int4"},{"name":"z","type":"jsonb"},{"name":"a","type":"text"}],` +
		`"unchanged_toast":["b"],"tx_last":true}`
	var c Event
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

// FuzzToken checks that escaping is reversible and canonical: every name
// comes back from its token, a token holds no separator or wildcard, and
// a token UnescapeToken accepts is the one EscapeToken writes.
func FuzzToken(f *testing.F) {
	for _, s := range []string{"", "todos", "a.b", "*", ">", "100%", "données", "%", "%2E", "%2e", "%61", "a%"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok := EscapeToken(s)
		if back, ok := UnescapeToken(tok); !ok || back != s {
			t.Fatalf("UnescapeToken(EscapeToken(%q)) = %q, %v", s, back, ok)
		}
		if tok == "" || strings.ContainsAny(tok, ".*> \t\r\n") {
			t.Fatalf("EscapeToken(%q) = %q", s, tok)
		}
		if name, ok := UnescapeToken(s); ok && EscapeToken(name) != s {
			t.Fatalf("UnescapeToken accepted %q, which escapes as %q", s, EscapeToken(name))
		}
		if sc, tb, op, ok := ParseSubject(Subject(s, s+".t", "insert")); !ok || sc != s || tb != s+".t" || op != "insert" {
			t.Fatalf("ParseSubject(Subject(%q, ...)) = %q %q %q %v", s, sc, tb, op, ok)
		}
	})
}
