package realtime

import (
	"encoding/json"
	"testing"
)

func TestInt(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		frame string
		key   string
		want  int64
		ok    bool
	}{
		{`[null,null,"realtime:b","broadcast",{"payload":{"seq":42,"ts":1732640000123456789}}]`, `"ts":`, 1732640000123456789, true},
		{`{"record":{"seq":"7","ts": 12}}`, `"seq":`, 7, true},
		{`{"record":{"seq":-3}}`, `"seq":`, -3, true},
		{`{"columns":[{"name":"ts","type":"int8"}]}`, `"ts":`, 0, false},
		{`{"ts":}`, `"ts":`, 0, false},
		{`{"ts":99999999999999999999}`, `"ts":`, 0, false},
	} {
		got, ok := Int([]byte(c.frame), []byte(c.key))
		if got != c.want || ok != c.ok {
			t.Errorf("Int(%s, %s) = %d, %v; want %d, %v", c.frame, c.key, got, ok, c.want, c.ok)
		}
	}
}

func TestFrames(t *testing.T) {
	t.Parallel()
	m, err := Parse(JoinFrame("3", "realtime:bench", JoinPayload("key", []Binding{{Event: "INSERT", Schema: "public", Table: "t"}})))
	if err != nil {
		t.Fatal(err)
	}
	if m.JoinRef != "3" || m.Ref != "3" || m.Topic != "realtime:bench" || m.Event != "phx_join" {
		t.Errorf("join frame %+v", m)
	}
	var p struct {
		Config struct {
			PostgresChanges []Binding `json:"postgres_changes"`
		} `json:"config"`
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(m.Payload, &p); err != nil || p.AccessToken != "key" || p.Config.PostgresChanges[0].Table != "t" {
		t.Errorf("join payload %s", m.Payload)
	}
	if string(HeartbeatFrame("9")) != `[null,"9","phoenix","heartbeat",{}]` {
		t.Errorf("heartbeat %s", HeartbeatFrame("9"))
	}
	b, err := Parse(BroadcastFrame("1", "2", "realtime:x", "tick", json.RawMessage(`{"seq":1}`)))
	if err != nil || b.Event != "broadcast" || string(b.Payload) != `{"event":"tick","payload":{"seq":1},"type":"broadcast"}` {
		t.Errorf("broadcast %+v %v", b, err)
	}
}
