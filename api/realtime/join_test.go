package realtime

import (
	"encoding/json"
	"strings"
	"testing"
)

// The join payload, as the server parses it, never panics, and what it
// accepts is sound: every binding has one of the four events, a schema,
// a positive id that its echo gives back when parsed again, and a filter
// whose conditions name columns; parsing is deterministic. A refusal is
// one of the reasons a join reply gives.
func FuzzJoinPayload(f *testing.F) {
	for _, s := range []string{
		`{"config":{"postgres_changes":[{"event":"*","schema":"public","table":"todos","filter":"owner=eq.ann"}]}}`,
		`{"config":{"broadcast":{"ack":"true","self":false,"replication_ready":true},"presence":{"key":{"a":1},"enabled":"false"},"private":"true"},"access_token":"x"}`,
		`{"config":{"postgres_changes":[{"event":"delete","schema":"*","table":"*","filter":"id=in.(1,\"2,3\"),title=not.like.%a_"}],"postgres_changes_resume":{"log_seq":42}}}`,
		`{"config":{"postgres_changes":[{"event":"INSERT","table":"t","filter":"secret=like.alice%"},{"event":"UPDATE","schema":null}]}}`,
		`{"config":{"postgres_changes":[{"event":"SELECT"}]}}`,
		`{"config":{"postgres_changes":[1]},"access_token":null}`,
		`{"config":{"private":2}}`,
		`{"config":null}`,
		`[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		p, err := parseJoin(payload)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "InvalidJoinPayload: ") {
				t.Fatalf("refusal %q is no join reason", err)
			}
			return
		}
		bindings, err := parseBindings(p.Config.PostgresChanges)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "Unable to subscribe to changes with given parameters: ") {
				t.Fatalf("refusal %q is no join reason", err)
			}
			return
		}
		if len(bindings) != len(p.Config.PostgresChanges) {
			t.Fatalf("%d bindings of %d", len(bindings), len(p.Config.PostgresChanges))
		}
		again, err := parseBindings(p.Config.PostgresChanges)
		if err != nil || len(again) != len(bindings) {
			t.Fatalf("a second parse differs: %v", err)
		}
		for i, jb := range bindings {
			b := jb.b
			switch b.Event {
			case "*", "INSERT", "UPDATE", "DELETE":
			default:
				t.Fatalf("binding %d: event %q", i, b.Event)
			}
			if b.Schema == "" {
				t.Fatalf("binding %d has no schema", i)
			}
			if b.ID == 0 || b.ID > 0x7fffffff || again[i].b.ID != b.ID {
				t.Fatalf("binding %d: id %d, %d when parsed again", i, b.ID, again[i].b.ID)
			}
			for _, col := range b.Filter.Columns() {
				if col == "" {
					t.Fatalf("binding %d: a filter condition without a column", i)
				}
			}
			echo, err := json.Marshal(jb.echo())
			if err != nil {
				t.Fatalf("binding %d: echo: %v", i, err)
			}
			back, err := parseBinding(echo)
			if err != nil || back.b.ID != b.ID {
				t.Fatalf("binding %d: its echo %s parses to id %d (%v), want %d", i, echo, back.b.ID, err, b.ID)
			}
		}
	})
}
