package baseline

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func TestPublishReachesEveryConnection(t *testing.T) {
	t.Parallel()
	srv := New(Config{Writers: 2})
	hs := httptest.NewServer(srv)
	defer hs.Close()
	defer srv.Close()
	url := "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws"
	var conns []*websocket.Conn
	for range 3 {
		c, _, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// Whatever a client sends is dropped.
		_ = c.WriteMessage(websocket.TextMessage, []byte(`[null,"1","phoenix","heartbeat",{}]`))
		conns = append(conns, c)
	}
	for srv.Connections() < 3 {
		time.Sleep(time.Millisecond)
	}
	res, err := srv.Publish(context.Background(), PublishSpec{Count: 5, Rate: 1000, PayloadBytes: 100})
	if err != nil || res.Sent != 5 || res.Connections != 3 {
		t.Fatalf("publish %+v %v", res, err)
	}
	for _, c := range conns {
		for seq := range 5 {
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, b, err := c.ReadMessage()
			if err != nil {
				t.Fatal(err)
			}
			var frame []json.RawMessage
			if err := json.Unmarshal(b, &frame); err != nil || len(frame) != 5 {
				t.Fatalf("frame %s: %v", b, err)
			}
			var body struct {
				Type    string `json:"type"`
				Payload struct {
					Seq int   `json:"bench_seq"`
					TS  int64 `json:"bench_ts"`
				} `json:"payload"`
			}
			if err := json.Unmarshal(frame[4], &body); err != nil || body.Type != "broadcast" || body.Payload.Seq != seq || body.Payload.TS == 0 {
				t.Fatalf("frame %s", b)
			}
			if len(b) < 100 {
				t.Errorf("frame of %d bytes, want about 100 of payload", len(b))
			}
		}
	}
}
