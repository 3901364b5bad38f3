// Package realtime is the small client side of Supabase's realtime
// protocol (Phoenix channels, vsn 2.0.0 array frames) that the load
// generator needs: building join, heartbeat and broadcast frames, joining a
// channel and waiting for the reply, and finding integer fields in a frame
// by a byte search instead of decoding it, so the generator's cost per
// delivery stays small and the same whatever server it measures.
//
// It is not a general client: no reconnects, presence or token refresh.
package realtime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/websocket"
)

// HeartbeatInterval is how often supabase-js sends a heartbeat.
const HeartbeatInterval = 25 * time.Second

// Binding is one postgres_changes subscription of a join.
type Binding struct {
	Event  string `json:"event"`
	Schema string `json:"schema"`
	Table  string `json:"table"`
	Filter string `json:"filter,omitempty"`
}

// JoinPayload is the phx_join payload supabase-js sends: broadcast without
// ack or self, presence off, the given postgres_changes bindings.
func JoinPayload(accessToken string, bindings []Binding) json.RawMessage {
	if bindings == nil {
		bindings = []Binding{}
	}
	p := map[string]any{
		"config": map[string]any{
			"broadcast":        map[string]any{"ack": false, "self": false},
			"presence":         map[string]any{"key": "", "enabled": false},
			"postgres_changes": bindings,
			"private":          false,
		},
	}
	if accessToken != "" {
		p["access_token"] = accessToken
	}
	b, _ := json.Marshal(p) // plain maps and strings always encode
	return b
}

// frame encodes [join_ref, ref, topic, event, payload]; empty refs are null.
func frame(joinRef, ref, topic, event string, payload json.RawMessage) []byte {
	ref2 := func(s string) any {
		if s == "" {
			return nil
		}
		return s
	}
	if len(payload) == 0 {
		payload = json.RawMessage("{}")
	}
	b, _ := json.Marshal([]any{ref2(joinRef), ref2(ref), topic, event, payload})
	return b
}

// JoinFrame is a phx_join; its ref equals its join ref.
func JoinFrame(joinRef, topic string, payload json.RawMessage) []byte {
	return frame(joinRef, joinRef, topic, "phx_join", payload)
}

// HeartbeatFrame is a heartbeat on topic phoenix.
func HeartbeatFrame(ref string) []byte { return frame("", ref, "phoenix", "heartbeat", nil) }

// BroadcastFrame is a client broadcast of event with payload on a joined
// channel, in the text form.
func BroadcastFrame(joinRef, ref, topic, event string, payload json.RawMessage) []byte {
	body, _ := json.Marshal(map[string]any{"type": "broadcast", "event": event, "payload": payload})
	return frame(joinRef, ref, topic, "broadcast", body)
}

// Message is a decoded vsn 2.0.0 text frame. Only control frames are
// decoded this way; deliveries are searched with Int.
type Message struct {
	JoinRef string
	Ref     string
	Topic   string
	Event   string
	Payload json.RawMessage
}

// Parse decodes an array frame.
func Parse(b []byte) (Message, error) {
	var parts []json.RawMessage
	if err := json.Unmarshal(b, &parts); err != nil {
		return Message{}, fmt.Errorf("realtime frame: %w", err)
	}
	if len(parts) != 5 {
		return Message{}, fmt.Errorf("realtime frame: %d elements, want 5", len(parts))
	}
	var m Message
	str := func(raw json.RawMessage) string {
		var s *string
		_ = json.Unmarshal(raw, &s)
		if s == nil {
			return ""
		}
		return *s
	}
	m.JoinRef, m.Ref, m.Topic, m.Event = str(parts[0]), str(parts[1]), str(parts[2]), str(parts[3])
	m.Payload = parts[4]
	return m, nil
}

// Reply is a phx_reply payload.
type Reply struct {
	Status   string          `json:"status"`
	Response json.RawMessage `json:"response"`
}

// Int finds key (written with its quotes and colon, e.g. `"ts":`) in b and
// parses the integer after it; a value in quotes is accepted too. It does
// not look at JSON structure: callers choose keys that occur once.
func Int(b, key []byte) (int64, bool) {
	i := bytes.Index(b, key)
	if i < 0 {
		return 0, false
	}
	i += len(key)
	for i < len(b) && (b[i] == ' ' || b[i] == '"') {
		i++
	}
	var v int64
	digits := 0
	neg := i < len(b) && b[i] == '-'
	if neg {
		i++
	}
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		v = v*10 + int64(b[i]-'0')
		digits++
	}
	if digits == 0 || digits > 19 {
		return 0, false
	}
	if neg {
		v = -v
	}
	return v, true
}

// Dialer opens websockets for the generator: small buffers, since it holds
// many connections that each receive small frames.
func Dialer(local net.Addr, timeout time.Duration) *websocket.Dialer {
	nd := &net.Dialer{Timeout: timeout, LocalAddr: local}
	return &websocket.Dialer{
		NetDialContext:   nd.DialContext,
		HandshakeTimeout: timeout,
		ReadBufferSize:   2048,
		WriteBufferSize:  512,
	}
}

// ErrEndpointMissing means the server answered the websocket handshake with
// an HTTP status other than 101: there is no realtime endpoint there.
var ErrEndpointMissing = errors.New("realtime endpoint not available")

// Dial connects to url and maps a refused upgrade to ErrEndpointMissing.
func Dial(ctx context.Context, d *websocket.Dialer, url string) (*websocket.Conn, error) {
	c, resp, err := d.DialContext(ctx, url, nil)
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return nil, fmt.Errorf("%w (the websocket upgrade of %s answered HTTP %s)", ErrEndpointMissing, resp.Request.URL.Path, resp.Status)
		}
		return nil, fmt.Errorf("dial %s: %w", url, err)
	}
	return c, nil
}

// ErrJoinTimeout means the server accepted the websocket but never answered
// the join.
var ErrJoinTimeout = errors.New("no reply to phx_join")

// Join sends phx_join for topic and reads frames until its reply, or until
// timeout. An error reply is returned with its reason.
func Join(c *websocket.Conn, joinRef, topic string, payload json.RawMessage, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	_ = c.SetWriteDeadline(deadline)
	if err := c.WriteMessage(websocket.TextMessage, JoinFrame(joinRef, topic, payload)); err != nil {
		return fmt.Errorf("send phx_join: %w", err)
	}
	_ = c.SetReadDeadline(deadline)
	defer func() {
		_ = c.SetReadDeadline(time.Time{})
		_ = c.SetWriteDeadline(time.Time{})
	}()
	for {
		mt, b, err := c.ReadMessage()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return fmt.Errorf("%w within %s", ErrJoinTimeout, timeout)
			}
			return fmt.Errorf("wait for join reply: %w", err)
		}
		if mt != websocket.TextMessage {
			continue
		}
		m, err := Parse(b)
		if err != nil || m.Event != "phx_reply" || m.Ref != joinRef || m.Topic != topic {
			continue
		}
		var r Reply
		if err := json.Unmarshal(m.Payload, &r); err != nil {
			return fmt.Errorf("join reply: %w", err)
		}
		if r.Status != "ok" {
			return fmt.Errorf("join refused: %s %s", r.Status, string(r.Response))
		}
		return nil
	}
}

// Ref formats a counter value as a ref.
func Ref(n uint64) string { return strconv.FormatUint(n, 10) }
