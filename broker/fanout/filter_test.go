package fanout

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestParseFilter(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		n       int
		wantErr string
	}{
		{"", 0, ""},
		{"id=eq.1", 1, ""},
		{"id=eq.1,name=neq.bob", 2, ""},
		{`status=in.(a,"b,c",d)`, 1, ""},
		{`title=like."a,b%"`, 1, ""},
		{"status=not.in.(draft,archived)", 1, ""},
		{"deleted_at=is.null", 1, ""},
		{"id=eq", 0, "want column=operator.value"},
		{"=eq.1", 0, "want column=operator.value"},
		{"id=foo.1", 0, "unknown operator"},
		{"id=in.1", 0, "in wants a list"},
		{"x=is.maybe", 0, "is wants null"},
		{`x=eq."abc`, 0, "unterminated quote"},
		{"x=in.(a", 0, "unbalanced"},
		{`x=match."("`, 0, "bad pattern"},
		{strings.Repeat("x", MaxFilterLen+1), 0, "longer than"},
	}
	for _, tt := range tests {
		f, err := ParseFilter(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseFilter(%q) = %v, want error containing %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || len(f) != tt.n {
			t.Errorf("ParseFilter(%q) = %d conditions, %v; want %d", tt.in, len(f), err, tt.n)
		}
	}
}

func TestFilterMatch(t *testing.T) {
	t.Parallel()
	row := map[string]Value{
		"id":      {Raw: json.RawMessage(`42`), Type: "int8"},
		"price":   {Raw: json.RawMessage(`"12.50"`), Type: "numeric"},
		"name":    {Raw: json.RawMessage(`"Alice, \"the\" first"`), Type: "text"},
		"status":  {Raw: json.RawMessage(`"active"`), Type: "text"},
		"done":    {Raw: json.RawMessage(`false`), Type: "bool"},
		"gone":    {Raw: json.RawMessage(`null`), Type: "timestamptz"},
		"at":      {Raw: json.RawMessage(`"2024-05-01T10:00:00.5Z"`), Type: "timestamptz"},
		"uid":     {Raw: json.RawMessage(`"0b9d1c7e-6a0d-4b8e-9a55-3f1a2c3d4e5f"`), Type: "uuid"},
		"big":     {Raw: json.RawMessage(`9007199254740993`), Type: "int8"},
		"untyped": {Raw: json.RawMessage(`7`), Type: ""},
	}
	get := func(c string) (Value, bool) { v, ok := row[c]; return v, ok }
	tests := []struct {
		filter string
		want   bool
	}{
		{"id=eq.42", true},
		{"id=eq.042", true},
		{"id=eq.43", false},
		{"id=neq.43", true},
		{"id=gt.9", true}, // numeric, not text, order
		{"id=lt.100", true},
		{"id=gte.42,id=lte.42", true},
		{"id=gt.42", false},
		{"price=eq.12.5", true},
		{"price=gt.9.99", true},
		{"big=eq.9007199254740993", true},
		{"big=eq.9007199254740992", false},
		{`name=eq."Alice, \"the\" first"`, true},
		{"name=like.Alice%", true},
		{"name=like.alice%", false},
		{"name=ilike.alice%", true},
		{"name=like.A_ice%", true},
		{"name=match.^Al", true},
		{"name=imatch.^al", true},
		{"status=in.(draft,active)", true},
		{"status=in.(draft,archived)", false},
		{"status=not.in.(draft,archived)", true},
		{"status=not.eq.active", false},
		{"done=eq.false", true},
		{"done=eq.f", true},
		{"done=is.false", true},
		{"done=is.true", false},
		{"gone=is.null", true},
		{"gone=not.is.null", false},
		{"gone=eq.x", false},     // NULL compares unknown
		{"gone=not.eq.x", false}, // and stays unknown negated
		{"gone=isdistinct.2024-01-01", true},
		{"gone=isdistinct.null", false},
		{"id=isdistinct.42", false},
		{"at=gt.2024-05-01 09:00:00+00", true},
		{"at=eq.2024-05-01T10:00:00.500Z", true},
		{"at=lt.2024-05-01", false},
		{"uid=eq.0B9D1C7E-6A0D-4B8E-9A55-3F1A2C3D4E5F", false}, // text compare of a uuid is exact; index folds case
		{"missing=eq.1", false},
		{"missing=not.eq.1", false},
		{"id=eq.abc", false}, // incomparable
		{"untyped=eq.7", true},
		{"status=eq.active,id=eq.1", false},
	}
	for _, tt := range tests {
		f, err := ParseFilter(tt.filter)
		if err != nil {
			t.Fatalf("%s: %v", tt.filter, err)
		}
		if got := f.Match(get); got != tt.want {
			t.Errorf("%s: match %v, want %v", tt.filter, got, tt.want)
		}
	}
}

func TestCanonKeyMeetsTypedEquality(t *testing.T) {
	t.Parallel()
	same := [][2]string{
		{"5", "5.0"}, {"5", "005"}, {"true", "t"}, {"False", "f"},
		{"2024-05-01T10:00:00Z", "2024-05-01 10:00:00+00"},
		{"0B9D1C7E-6A0D-4B8E-9A55-3F1A2C3D4E5F", "0b9d1c7e-6a0d-4b8e-9a55-3f1a2c3d4e5f"},
	}
	for _, p := range same {
		if canonKey(p[0]) != canonKey(p[1]) {
			t.Errorf("canonKey(%q)=%q != canonKey(%q)=%q", p[0], canonKey(p[0]), p[1], canonKey(p[1]))
		}
	}
	if canonKey("5") == canonKey("6") || canonKey("abc") == canonKey("abd") {
		t.Error("distinct values share a key")
	}
}

func FuzzParseFilter(f *testing.F) {
	for _, s := range []string{"id=eq.1", `a=in.(1,"2,3")`, "x=not.like.%a_", "y=is.null,z=match.^a"} {
		f.Add(s, `"abc"`)
	}
	f.Fuzz(func(t *testing.T, s, raw string) {
		flt, err := ParseFilter(s)
		if err != nil {
			return
		}
		if !json.Valid([]byte(raw)) {
			raw = `"x"`
		}
		for _, typ := range []string{"", "int4", "text", "bool", "timestamptz", "numeric"} {
			flt.Match(func(string) (Value, bool) { return Value{Raw: json.RawMessage(raw), Type: typ}, true })
		}
	})
}
