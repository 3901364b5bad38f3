package realtime

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/fluxbase/fluxbase/broker/fanout"
)

// This file decodes the client side of the Phoenix channel protocol as
// realtime-js speaks it: vsn 1.0.0 text frames holding
// {topic, event, payload, ref, join_ref}, vsn 2.0.0 text frames holding
// [join_ref, ref, topic, event, payload], and vsn 2.0.0 binary user
// broadcast pushes (kind 3). Encoding lives in broker/fanout, which
// encodes the frames it fans out.

// inMsg is one decoded client message.
type inMsg struct {
	JoinRef fanout.Ref
	Ref     fanout.Ref
	Topic   string
	Event   string
	Payload json.RawMessage // a JSON object; nil for a binary broadcast
	// Broadcast is set for a user broadcast, text or binary.
	Broadcast *inBroadcast
}

type inBroadcast struct {
	Event    string
	Encoding byte // fanout.EncodingJSON or fanout.EncodingBinary
	Payload  []byte
}

// frameError is a malformed frame. Topic and Ref are set when they could
// be read, so the error can be answered as a reply.
type frameError struct {
	Topic string
	Ref   fanout.Ref
	Err   error
}

func (e *frameError) Error() string { return "malformed message: " + e.Err.Error() }

// decodeFrame decodes one websocket message of a client speaking vsn.
func decodeFrame(vsn fanout.Vsn, binary bool, data []byte) (*inMsg, error) {
	if binary {
		if vsn != fanout.V2 {
			return nil, &frameError{Err: errors.New("binary frames need vsn 2.0.0")}
		}
		return decodeBinary(data)
	}
	if !utf8.Valid(data) {
		return nil, &frameError{Err: errors.New("text frame is not valid UTF-8")}
	}
	var m *inMsg
	var err error
	if vsn == fanout.V2 {
		m, err = decodeArray(data)
	} else {
		m, err = decodeObject(data)
	}
	if err != nil {
		return nil, err
	}
	if m.Event == "broadcast" {
		b, err := textBroadcast(m.Payload)
		if err != nil {
			return nil, &frameError{Topic: m.Topic, Ref: m.Ref, Err: err}
		}
		m.Broadcast = b
	}
	return m, nil
}

func decodeArray(data []byte) (*inMsg, error) {
	var parts []json.RawMessage
	if err := json.Unmarshal(data, &parts); err != nil {
		return nil, &frameError{Err: fmt.Errorf("vsn 2.0.0 wants a JSON array [join_ref, ref, topic, event, payload]: %w", err)}
	}
	if len(parts) != 5 {
		return nil, &frameError{Err: fmt.Errorf("vsn 2.0.0 wants an array of 5 elements, got %d", len(parts))}
	}
	m := &inMsg{}
	var err error
	if m.Topic, err = jsonString(parts[2], "topic"); err != nil {
		return nil, &frameError{Err: err}
	}
	if m.Ref, err = jsonRef(parts[1], "ref"); err != nil {
		return nil, &frameError{Topic: m.Topic, Err: err}
	}
	if m.JoinRef, err = jsonRef(parts[0], "join_ref"); err != nil {
		return nil, &frameError{Topic: m.Topic, Ref: m.Ref, Err: err}
	}
	if m.Event, err = jsonString(parts[3], "event"); err != nil {
		return nil, &frameError{Topic: m.Topic, Ref: m.Ref, Err: err}
	}
	if m.Payload, err = jsonObject(parts[4]); err != nil {
		return nil, &frameError{Topic: m.Topic, Ref: m.Ref, Err: err}
	}
	return m, nil
}

func decodeObject(data []byte) (*inMsg, error) {
	var o struct {
		Topic   json.RawMessage `json:"topic"`
		Event   json.RawMessage `json:"event"`
		Payload json.RawMessage `json:"payload"`
		Ref     json.RawMessage `json:"ref"`
		JoinRef json.RawMessage `json:"join_ref"`
	}
	if err := json.Unmarshal(data, &o); err != nil {
		return nil, &frameError{Err: fmt.Errorf("vsn 1.0.0 wants a JSON object {topic, event, payload, ref}: %w", err)}
	}
	m := &inMsg{}
	var err error
	if m.Topic, err = jsonString(o.Topic, "topic"); err != nil {
		return nil, &frameError{Err: err}
	}
	if m.Ref, err = jsonRef(o.Ref, "ref"); err != nil {
		return nil, &frameError{Topic: m.Topic, Err: err}
	}
	if m.JoinRef, err = jsonRef(o.JoinRef, "join_ref"); err != nil {
		return nil, &frameError{Topic: m.Topic, Ref: m.Ref, Err: err}
	}
	if m.Event, err = jsonString(o.Event, "event"); err != nil {
		return nil, &frameError{Topic: m.Topic, Ref: m.Ref, Err: err}
	}
	if m.Payload, err = jsonObject(o.Payload); err != nil {
		return nil, &frameError{Topic: m.Topic, Ref: m.Ref, Err: err}
	}
	return m, nil
}

func jsonString(raw json.RawMessage, name string) (string, error) {
	var s string
	if len(raw) == 0 || json.Unmarshal(raw, &s) != nil {
		return "", fmt.Errorf("%s must be a string", name)
	}
	if s == "" {
		return "", fmt.Errorf("%s must not be empty", name)
	}
	return s, nil
}

// jsonRef reads a ref: a string, a number (as its text) or null.
func jsonRef(raw json.RawMessage, name string) (fanout.Ref, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return fanout.Ref{}, nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return fanout.R(s), nil
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		return fanout.R(n.String()), nil
	}
	return fanout.Ref{}, fmt.Errorf("%s must be a string, a number or null", name)
}

// jsonObject accepts a JSON object; null or absent becomes {}.
func jsonObject(raw json.RawMessage) (json.RawMessage, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return json.RawMessage("{}"), nil
	}
	if raw[0] != '{' {
		return nil, errors.New("payload must be a JSON object")
	}
	return raw, nil
}

// textBroadcast reads the payload of a text broadcast push:
// {type:"broadcast", event, payload}.
func textBroadcast(p json.RawMessage) (*inBroadcast, error) {
	var b struct {
		Event   *string         `json:"event"`
		Payload json.RawMessage `json:"payload"`
	}
	if err := json.Unmarshal(p, &b); err != nil {
		return nil, fmt.Errorf("broadcast payload: %w", err)
	}
	if b.Event == nil {
		return nil, errors.New("broadcast payload needs an event")
	}
	payload := bytes.TrimSpace(b.Payload)
	if len(payload) == 0 {
		payload = []byte("{}")
	}
	return &inBroadcast{Event: *b.Event, Encoding: fanout.EncodingJSON, Payload: payload}, nil
}

// decodeBinary reads a kind 3 user broadcast push:
// kind, len(join_ref), len(ref), len(topic), len(event), len(meta),
// encoding, then those strings and the payload.
func decodeBinary(b []byte) (*inMsg, error) {
	if len(b) == 0 {
		return nil, &frameError{Err: errors.New("empty binary frame")}
	}
	if b[0] != fanout.KindUserBroadcastPush {
		return nil, &frameError{Err: fmt.Errorf("binary frame of kind %d: only kind 3 (user broadcast push) is accepted", b[0])}
	}
	if len(b) < 7 {
		return nil, &frameError{Err: errors.New("binary broadcast shorter than its 7-byte header")}
	}
	lens := [5]int{int(b[1]), int(b[2]), int(b[3]), int(b[4]), int(b[5])}
	encoding := b[6]
	rest := b[7:]
	var fields [5]string
	for i, n := range lens {
		if len(rest) < n {
			return nil, &frameError{Err: errors.New("binary broadcast shorter than its header says")}
		}
		fields[i] = string(rest[:n])
		rest = rest[n:]
	}
	m := &inMsg{Topic: fields[2], Event: "broadcast"}
	if fields[1] != "" {
		m.Ref = fanout.R(fields[1])
	}
	if fields[0] != "" {
		m.JoinRef = fanout.R(fields[0])
	}
	for i, name := range []string{"join_ref", "ref", "topic", "event", "meta"} {
		if !utf8.ValidString(fields[i]) {
			return nil, &frameError{Topic: m.Topic, Ref: m.Ref, Err: fmt.Errorf("binary broadcast %s is not UTF-8", name)}
		}
	}
	if m.Topic == "" {
		return nil, &frameError{Err: errors.New("binary broadcast without a topic")}
	}
	if fields[4] != "" && !json.Valid([]byte(fields[4])) {
		return nil, &frameError{Topic: m.Topic, Ref: m.Ref, Err: errors.New("binary broadcast meta is not JSON")}
	}
	switch encoding {
	case fanout.EncodingJSON:
		if !json.Valid(rest) {
			return nil, &frameError{Topic: m.Topic, Ref: m.Ref, Err: errors.New("binary broadcast payload is marked JSON but is not")}
		}
	case fanout.EncodingBinary:
	default:
		return nil, &frameError{Topic: m.Topic, Ref: m.Ref, Err: errors.New("binary broadcast encoding " + strconv.Itoa(int(encoding)) + ": want 0 (binary) or 1 (JSON)")}
	}
	m.Broadcast = &inBroadcast{Event: fields[3], Encoding: encoding, Payload: append([]byte(nil), rest...)}
	return m, nil
}
