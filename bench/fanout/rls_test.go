package fanout

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/fluxbase/fluxbase/auth"
	"github.com/fluxbase/fluxbase/bench/realtime"
)

// Each user's join carries a token the nodes accept, for that user, as
// role authenticated.
func TestUserJoins(t *testing.T) {
	t.Parallel()
	const secret = "0123456789abcdef0123456789abcdef"
	bindings := []realtime.Binding{{Event: "INSERT", Schema: "public", Table: Table}}
	joins, err := userJoins(secret, 10, 3, bindings, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewVerifier(secret)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for i, j := range joins {
		var p struct {
			AccessToken string `json:"access_token"`
			Config      struct {
				PostgresChanges []realtime.Binding `json:"postgres_changes"`
			} `json:"config"`
		}
		if err := json.Unmarshal(j, &p); err != nil {
			t.Fatal(err)
		}
		c, err := v.Verify(p.AccessToken)
		if err != nil {
			t.Fatalf("join %d: %v", i, err)
		}
		var raw map[string]any
		_ = json.Unmarshal(c.Raw, &raw)
		if c.Role != auth.RoleAuthenticated || c.Subject != userID(10+i) || raw["aud"] != "authenticated" || time.Until(c.Expires) < 50*time.Minute {
			t.Errorf("join %d: claims %+v %v", i, c, raw)
		}
		if len(p.Config.PostgresChanges) != 1 || p.Config.PostgresChanges[0].Table != Table {
			t.Errorf("join %d: bindings %+v", i, p.Config.PostgresChanges)
		}
		seen[c.Subject] = true
	}
	if len(seen) != 3 {
		t.Errorf("subjects %v", seen)
	}
	other, err := auth.NewVerifier("fedcba9876543210fedcba9876543210")
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		AccessToken string `json:"access_token"`
	}
	_ = json.Unmarshal(joins[0], &p)
	if _, err := other.Verify(p.AccessToken); err == nil {
		t.Error("a token verified under another secret")
	}
}

func TestSubscriberJoins(t *testing.T) {
	t.Parallel()
	users := []json.RawMessage{json.RawMessage(`"a"`), json.RawMessage(`"b"`), json.RawMessage(`"c"`)}
	got := subscriberJoins(users, 7)
	want := `"a""b""c""a""b""c""a"`
	var s string
	for _, j := range got {
		s += string(j)
	}
	if s != want {
		t.Errorf("%s, want %s", s, want)
	}
	if userID(0) != "00000000-0000-4000-8000-000000000001" || userID(0xabc) != "00000000-0000-4000-8000-000000000abd" {
		t.Errorf("user ids %s %s", userID(0), userID(0xabc))
	}
}
