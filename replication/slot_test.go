package replication

import (
	"reflect"
	"testing"
)

func TestParseTables(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   []string
		want tableSpec
		bad  bool
	}{
		{in: nil, want: tableSpec{defaults: true, schemas: []string{"public"}, tables: []qname{{"storage", "objects"}}}},
		{in: []string{" ", ""}, want: tableSpec{defaults: true, schemas: []string{"public"}, tables: []qname{{"storage", "objects"}}}},
		{in: []string{"todos", "audit.events", "app.*", "Mixed"}, want: tableSpec{schemas: []string{"app"},
			tables: []qname{{"public", "todos"}, {"audit", "events"}, {"public", "Mixed"}}}},
		{in: []string{"a.b.c"}, bad: true},
		{in: []string{".x"}, bad: true},
		{in: []string{"x."}, bad: true},
		{in: []string{"*"}, bad: true},
		{in: []string{"*.x"}, bad: true},
	}
	for _, tt := range tests {
		got, err := parseTables(tt.in)
		if tt.bad {
			if err == nil {
				t.Errorf("parseTables(%q) accepted", tt.in)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("parseTables(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

func TestPublicationTargets(t *testing.T) {
	t.Parallel()
	a := publicationTargets([]string{"public", "app"}, []qname{{"x", "b"}, {"x", "a"}})
	b := publicationTargets([]string{"app", "public"}, []qname{{"x", "a"}, {"x", "b"}})
	if a != b || a != `tables in schema "app", "public", table "x"."a", "x"."b"` {
		t.Errorf("targets %q and %q", a, b)
	}
	if got := publicationTargets(nil, []qname{{"public", `we"ird`}}); got != `table "public"."we""ird"` {
		t.Errorf("quoting: %s", got)
	}
	if got := publicationTargets(nil, nil); got != "" {
		t.Errorf("empty: %q", got)
	}
}

func TestNewChecksConfig(t *testing.T) {
	t.Parallel()
	log := newFakeLog()
	for _, tt := range []struct {
		name string
		cfg  Config
		sink Log
	}{
		{"no log", Config{DatabaseURL: "postgres://x/y"}, nil},
		{"no url", Config{}, log},
		{"bad url", Config{DatabaseURL: "postgres://x:notaport/y"}, log},
		{"bad slot", Config{DatabaseURL: "postgres://x/y", SlotName: "My-Slot"}, log},
		{"long slot", Config{DatabaseURL: "postgres://x/y", SlotName: "s234567890123456789012345678901234567890123456789012345678901234"}, log},
		{"bad table", Config{DatabaseURL: "postgres://x/y", Tables: []string{"a.b.c"}}, log},
	} {
		if _, err := New(tt.cfg, tt.sink); err == nil {
			t.Errorf("%s: New accepted %+v", tt.name, tt.cfg)
		}
	}
	r, err := New(Config{DatabaseURL: "postgres://x/y"}, log)
	if err != nil {
		t.Fatal(err)
	}
	if r.cfg.SlotName != "fluxbase" || r.cfg.PublicationName != "fluxbase" || r.cfg.Window != 4096 || r.cfg.StatusInterval <= 0 {
		t.Errorf("defaults: %+v", r.cfg)
	}
	if err := r.Ready(); err == nil {
		t.Error("ready before Run")
	}
	if err := r.Close(); err != nil || r.Close() != nil {
		t.Error("Close is not idempotent")
	}
	if err := r.Run(t.Context()); err != nil {
		t.Errorf("Run after Close: %v", err)
	}
	if r.replCfg.RuntimeParams["application_name"] != "fluxbase-replication" || r.replCfg.RuntimeParams["replication"] != "database" {
		t.Errorf("replication connection parameters: %v", r.replCfg.RuntimeParams)
	}
}
