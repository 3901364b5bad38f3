package realtime

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/fluxbase/fluxbase/broker/fanout"
)

func TestDecodeFrame(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		vsn     fanout.Vsn
		binary  bool
		data    string
		wantErr bool
		check   func(*inMsg) bool
	}{
		{"v2 join", fanout.V2, false, `["1","1","realtime:a","phx_join",{"config":{}}]`, false,
			func(m *inMsg) bool {
				return m.JoinRef.S == "1" && m.Ref.S == "1" && m.Topic == "realtime:a" && m.Event == "phx_join"
			}},
		{"v2 null refs and payload", fanout.V2, false, `[null,null,"phoenix","heartbeat",null]`, false,
			func(m *inMsg) bool { return !m.JoinRef.Valid && !m.Ref.Valid && string(m.Payload) == "{}" }},
		{"v2 numeric ref", fanout.V2, false, `[null,7,"phoenix","heartbeat",{}]`, false,
			func(m *inMsg) bool { return m.Ref.S == "7" }},
		{"v1 object", fanout.V1, false, `{"topic":"realtime:a","event":"phx_leave","payload":{},"ref":"3","join_ref":"1"}`, false,
			func(m *inMsg) bool { return m.JoinRef.S == "1" && m.Ref.S == "3" && m.Event == "phx_leave" }},
		{"v1 text broadcast", fanout.V1, false, `{"topic":"realtime:a","event":"broadcast","payload":{"type":"broadcast","event":"e","payload":{"x":1}},"ref":"3"}`, false,
			func(m *inMsg) bool { return m.Broadcast.Event == "e" && string(m.Broadcast.Payload) == `{"x":1}` }},
		{"v2 binary broadcast", fanout.V2, true, string(kind3("1", "2", "realtime:a", "ev", []byte(`[1]`), 1)), false,
			func(m *inMsg) bool {
				return m.Topic == "realtime:a" && m.Ref.S == "2" && m.Broadcast.Event == "ev" && m.Broadcast.Encoding == 1
			}},
		{"v2 raw binary broadcast", fanout.V2, true, string(kind3("", "", "realtime:a", "ev", []byte{0, 255}, 0)), false,
			func(m *inMsg) bool { return !m.Ref.Valid && bytes.Equal(m.Broadcast.Payload, []byte{0, 255}) }},
		{"v1 binary", fanout.V1, true, "\x03", true, nil},
		{"short binary", fanout.V2, true, "\x03\x01", true, nil},
		{"lying lengths", fanout.V2, true, "\x03\x09\x09\x09\x09\x00\x01ab", true, nil},
		{"json marked binary invalid", fanout.V2, true, string(kind3("", "", "realtime:a", "e", []byte("{"), 1)), true, nil},
		{"array too short", fanout.V2, false, `["1","1","t"]`, true, nil},
		{"payload not object", fanout.V2, false, `["1","1","t","e",[1]]`, true, nil},
		{"topic not string", fanout.V1, false, `{"topic":1,"event":"e","payload":{}}`, true, nil},
		{"broadcast without event", fanout.V2, false, `[null,"1","t","broadcast",{"type":"broadcast"}]`, true, nil},
		{"invalid utf8", fanout.V2, false, "[\"\xff\"]", true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := decodeFrame(tt.vsn, tt.binary, []byte(tt.data))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("decoded %+v, want an error", m)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(m) {
				t.Fatalf("decoded %+v", m)
			}
		})
	}
}

// FuzzDecodeFrame feeds arbitrary frames to the decoder: it must never
// panic, everything it accepts must be well-formed, and a text message it
// accepts must survive a round trip through the encoder.
func FuzzDecodeFrame(f *testing.F) {
	seeds := []struct {
		vsn    byte
		binary bool
		data   []byte
	}{
		{2, false, []byte(`["1","1","realtime:a","phx_join",{"config":{"postgres_changes":[{"event":"*","schema":"public"}]}}]`)},
		{2, false, []byte(`[null,"2","phoenix","heartbeat",{}]`)},
		{2, false, []byte(`["1","3","realtime:a","broadcast",{"type":"broadcast","event":"e","payload":{}}]`)},
		{1, false, []byte(`{"topic":"realtime:a","event":"phx_join","payload":{},"ref":"1","join_ref":"1"}`)},
		{2, true, kind3("1", "2", "realtime:a", "e", []byte(`{"a":1}`), 1)},
		{2, true, kind3("", "", "t", "", nil, 0)},
		{2, true, []byte{3, 255, 255, 255, 255, 255, 1}},
	}
	for _, s := range seeds {
		f.Add(s.vsn, s.binary, s.data)
	}
	f.Fuzz(func(t *testing.T, v byte, binary bool, data []byte) {
		vsn := fanout.V1
		if v%2 == 0 {
			vsn = fanout.V2
		}
		m, err := decodeFrame(vsn, binary, data)
		if err != nil {
			if _, ok := err.(*frameError); !ok {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		if m.Topic == "" || m.Event == "" {
			t.Fatalf("accepted a message without topic or event: %+v", m)
		}
		if m.Event == "broadcast" && m.Broadcast == nil {
			t.Fatalf("broadcast without its body: %+v", m)
		}
		if m.Broadcast != nil && m.Broadcast.Encoding == fanout.EncodingJSON && !json.Valid(m.Broadcast.Payload) {
			t.Fatalf("JSON broadcast payload is not JSON: %q", m.Broadcast.Payload)
		}
		if binary {
			return
		}
		if !json.Valid(m.Payload) || m.Payload[0] != '{' {
			t.Fatalf("payload is not a JSON object: %q", m.Payload)
		}
		enc := fanout.AppendMessage(nil, vsn, m.JoinRef, m.Ref, m.Topic, m.Event, m.Payload)
		m2, err := decodeFrame(vsn, false, enc)
		if err != nil {
			t.Fatalf("re-encoded message %q does not decode: %v", enc, err)
		}
		if m2.Topic != m.Topic || m2.Event != m.Event || m2.Ref != m.Ref || m2.JoinRef != m.JoinRef {
			t.Fatalf("round trip changed %+v into %+v", m, m2)
		}
	})
}
