package fanout

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/fluxbase/fluxbase/change"
)

// Vsn is the Phoenix serializer a connection speaks.
type Vsn uint8

// The serializers realtime-js speaks.
const (
	// V1 is vsn 1.0.0: text frames holding JSON objects
	// {topic, event, payload, ref, join_ref}.
	V1 Vsn = 1
	// V2 is vsn 2.0.0: text frames holding JSON arrays
	// [join_ref, ref, topic, event, payload], plus binary broadcast frames.
	V2 Vsn = 2
)

// ParseVsn maps the vsn query parameter to a serializer; an absent one
// means 1.0.0, as in Phoenix.
func ParseVsn(s string) (Vsn, error) {
	switch s {
	case "", "1.0.0":
		return V1, nil
	case "2.0.0":
		return V2, nil
	}
	return 0, fmt.Errorf("unsupported vsn %q: want 1.0.0 or 2.0.0", s)
}

// Frame is one websocket message ready to write: Data, then Body, then
// Tail. Frames are immutable once built and shared by every client they
// are queued to; a fanned-out payload is built once as a Body that the
// frames of every topic share.
type Frame struct {
	Binary bool
	// Pong marks a websocket pong control frame carrying Data: the
	// answer to a client's ping, queued in order with everything else.
	Pong bool
	Data []byte
	Body []byte
	Tail []byte
}

// Len is the message's length in bytes.
func (f Frame) Len() int { return len(f.Data) + len(f.Body) + len(f.Tail) }

// Bytes is the whole message in one slice.
func (f Frame) Bytes() []byte {
	if len(f.Body) == 0 && len(f.Tail) == 0 {
		return f.Data
	}
	b := make([]byte, 0, f.Len())
	return append(append(append(b, f.Data...), f.Body...), f.Tail...)
}

// PushFrame is a server push with null refs around a payload built once
// and shared (Body), for fan-out.
func PushFrame(vsn Vsn, topic, event string, payload []byte) Frame {
	if vsn == V2 {
		h := make([]byte, 0, 16+len(topic)+len(event))
		h = append(h, "[null,null,"...)
		h = AppendString(h, topic)
		h = append(h, ',')
		h = AppendString(h, event)
		h = append(h, ',')
		return Frame{Data: h, Body: payload, Tail: v2Tail}
	}
	h := make([]byte, 0, 32+len(topic)+len(event))
	h = append(h, `{"topic":`...)
	h = AppendString(h, topic)
	h = append(h, `,"event":`...)
	h = AppendString(h, event)
	h = append(h, `,"payload":`...)
	return Frame{Data: h, Body: payload, Tail: v1Tail}
}

var (
	v2Tail = []byte("]")
	v1Tail = []byte(`,"ref":null}`)
)

// Ref is a Phoenix ref or join_ref: a string, or null when !Valid.
type Ref struct {
	S     string
	Valid bool
}

// R makes a non-null Ref.
func R(s string) Ref { return Ref{S: s, Valid: true} }

func appendRef(dst []byte, r Ref) []byte {
	if !r.Valid {
		return append(dst, "null"...)
	}
	return AppendString(dst, r.S)
}

// AppendMessage appends a server message in vsn's text form. payload must
// be a JSON object.
func AppendMessage(dst []byte, vsn Vsn, joinRef, ref Ref, topic, event string, payload []byte) []byte {
	if vsn == V2 {
		dst = append(dst, '[')
		dst = appendRef(dst, joinRef)
		dst = append(dst, ',')
		dst = appendRef(dst, ref)
		dst = append(dst, ',')
		dst = AppendString(dst, topic)
		dst = append(dst, ',')
		dst = AppendString(dst, event)
		dst = append(dst, ',')
		dst = append(dst, payload...)
		return append(dst, ']')
	}
	dst = append(dst, `{"topic":`...)
	dst = AppendString(dst, topic)
	dst = append(dst, `,"event":`...)
	dst = AppendString(dst, event)
	dst = append(dst, `,"payload":`...)
	dst = append(dst, payload...)
	dst = append(dst, `,"ref":`...)
	dst = appendRef(dst, ref)
	if joinRef.Valid {
		dst = append(dst, `,"join_ref":`...)
		dst = appendRef(dst, joinRef)
	}
	return append(dst, '}')
}

// MessageFrame is AppendMessage as a Frame.
func MessageFrame(vsn Vsn, joinRef, ref Ref, topic, event string, payload []byte) Frame {
	return Frame{Data: AppendMessage(make([]byte, 0, 64+len(topic)+len(payload)), vsn, joinRef, ref, topic, event, payload)}
}

// ReplyFrame is a phx_reply to ref with status "ok" or "error" and a
// response object.
func ReplyFrame(vsn Vsn, joinRef, ref Ref, topic, status string, response []byte) Frame {
	p := make([]byte, 0, 32+len(response))
	p = append(p, `{"status":`...)
	p = AppendString(p, status)
	p = append(p, `,"response":`...)
	p = append(p, response...)
	p = append(p, '}')
	return MessageFrame(vsn, joinRef, ref, topic, "phx_reply", p)
}

// ErrorReplyFrame is a phx_reply with status "error" and {"reason": reason}.
func ErrorReplyFrame(vsn Vsn, joinRef, ref Ref, topic, reason string) Frame {
	return ReplyFrame(vsn, joinRef, ref, topic, "error", ReasonJSON(reason))
}

// ReasonJSON is {"reason": reason}.
func ReasonJSON(reason string) []byte {
	return append(AppendString([]byte(`{"reason":`), reason), '}')
}

// SystemPayload is the payload of a `system` push.
func SystemPayload(extension, status, message, channel string) []byte {
	p := []byte(`{"extension":`)
	p = AppendString(p, extension)
	p = append(p, `,"status":`...)
	p = AppendString(p, status)
	p = append(p, `,"message":`...)
	p = AppendString(p, message)
	p = append(p, `,"channel":`...)
	p = AppendString(p, channel)
	return append(p, '}')
}

// Payload encodings of a binary broadcast.
const (
	EncodingBinary byte = 0
	EncodingJSON   byte = 1
)

// Binary frame kinds of the vsn 2.0.0 serializer.
const (
	KindUserBroadcastPush byte = 3 // client → server
	KindUserBroadcast     byte = 4 // server → client
)

// BroadcastFrame is a user broadcast for a client of vsn: for 2.0.0 a
// binary frame of kind 4 (when the names fit its one-byte lengths), else a
// text push {type:"broadcast", event, payload}. A binary payload reaches a
// 1.0.0 client as a base64 JSON string, the only way JSON can carry it.
func BroadcastFrame(vsn Vsn, topic, event string, encoding byte, payload []byte) Frame {
	if vsn == V2 && len(topic) <= 255 && len(event) <= 255 {
		b := make([]byte, 0, 5+len(topic)+len(event)+len(payload))
		b = append(b, KindUserBroadcast, byte(len(topic)), byte(len(event)), 0, encoding)
		b = append(b, topic...)
		b = append(b, event...)
		b = append(b, payload...)
		return Frame{Binary: true, Data: b}
	}
	p := make([]byte, 0, 48+len(event)+len(payload))
	p = append(p, `{"type":"broadcast","event":`...)
	p = AppendString(p, event)
	p = append(p, `,"payload":`...)
	if encoding == EncodingJSON {
		p = append(p, payload...)
	} else {
		b, _ := json.Marshal(payload) // []byte marshals as a base64 string
		p = append(p, b...)
	}
	p = append(p, '}')
	return MessageFrame(vsn, Ref{}, Ref{}, topic, "broadcast", p)
}

// AppendString appends s as a JSON string; invalid UTF-8 becomes U+FFFD,
// so the output is always valid JSON.
func AppendString(dst []byte, s string) []byte { return change.AppendJSONString(dst, s) }

func appendUint(dst []byte, v uint64) []byte { return strconv.AppendUint(dst, v, 10) }
