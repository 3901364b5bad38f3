package realtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"

	"github.com/fluxbase/fluxbase/auth"
	"github.com/fluxbase/fluxbase/broker/fanout"
)

// rtConn is one websocket connection. Its reader goroutine handles client
// messages in order; the realtime writers (realtime_writer.go) drain the
// client's queue. Everything the server sends goes through that queue,
// so replies, changes, broadcasts and presence leave in the order they
// were queued.
type rtConn struct {
	rt     *Endpoint
	ws     *websocket.Conn
	fd     int // the socket's descriptor, for the writers; -1 if it has none
	vsn    fanout.Vsn
	claims *auth.Claims // the API key's (or bearer token's) claims
	client *fanout.Client
	// joins and events pace the client's messages (limits.go); only the
	// reader touches them.
	joins, events *bucket

	mu     sync.Mutex // guards chans and closed; not held while calling the database
	chans  map[string]*rtChannel
	closed bool
}

// rtChannel is the connection's view of one joined channel.
//
// Fields other than topic and name are guarded by rtConn.mu once the
// channel is in chans.
type rtChannel struct {
	ch       *fanout.Channel
	topic    string
	name     string // the topic without "realtime:"
	joinRef  fanout.Ref
	claims   *auth.Claims
	token    string
	private  bool
	ack      bool
	bindings []joinBinding
	pol      channelPolicies
	expiry   *time.Timer
	// session is the session the channel is filed under in
	// Endpoint.sessions, guarded by that registry's lock.
	session string
}

func newRTConn(rt *Endpoint, ws *websocket.Conn, vsn fanout.Vsn, claims *auth.Claims) *rtConn {
	c := &rtConn{rt: rt, ws: ws, fd: -1, vsn: vsn, claims: claims,
		client: rt.hub.NewClient(vsn), chans: map[string]*rtChannel{},
		joins: newBucket(rt.limits.JoinsPerSecond), events: newBucket(rt.limits.EventsPerSecond)}
	if sc, ok := ws.NetConn().(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			_ = raw.Control(func(fd uintptr) { c.fd = int(fd) })
		}
	}
	c.client.Queue.Notify(func() { rt.writers.schedule(c) })
	// Only the writers write to the socket: pings are answered through
	// the queue, and a client's close is answered when the queue closes.
	ws.SetPingHandler(func(data string) error {
		c.client.Push(fanout.Frame{Pong: true, Data: []byte(data)})
		return nil
	})
	ws.SetCloseHandler(func(int, string) error { return nil })
	return c
}

// readLoop reads and handles client messages until the connection ends.
func (c *rtConn) readLoop(ctx context.Context) {
	defer c.close("connection closed")
	// ctx ends when the endpoint closes; a websocket blocked in a read
	// would not notice otherwise.
	stop := context.AfterFunc(ctx, func() { c.close(shutdownReason) })
	defer stop()
	c.ws.SetReadLimit(c.rt.cfg.MaxMessageBytes)
	for {
		_ = c.ws.SetReadDeadline(time.Now().Add(c.rt.cfg.IdleTimeout))
		mt, data, err := c.ws.ReadMessage()
		if err != nil {
			if errors.Is(err, websocket.ErrReadLimit) {
				c.client.Queue.Close(fmt.Sprintf("message larger than %d bytes", c.rt.cfg.MaxMessageBytes))
			}
			return
		}
		if ctx.Err() != nil {
			return
		}
		m, err := decodeFrame(c.vsn, mt == websocket.BinaryMessage, data)
		if err != nil {
			c.malformed(err)
			continue
		}
		c.handle(ctx, m)
	}
}

// malformed answers a frame that could not be decoded: a reply when its
// ref could be read, else an error on the phoenix topic. The connection
// stays open.
func (c *rtConn) malformed(err error) {
	var fe *frameError
	topic, ref := "phoenix", fanout.Ref{}
	if errors.As(err, &fe) {
		if fe.Topic != "" {
			topic = fe.Topic
		}
		ref = fe.Ref
	}
	c.client.Push(fanout.ErrorReplyFrame(c.vsn, fanout.Ref{}, ref, topic, err.Error()))
}

// close ends the connection's channels and queue; the writer then closes
// the socket. Idempotent.
func (c *rtConn) close(reason string) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	chans := c.chans
	for _, rc := range chans {
		if rc.expiry != nil {
			rc.expiry.Stop()
		}
	}
	c.chans = nil
	c.mu.Unlock()
	for _, rc := range chans {
		c.rt.untrack(rc)
	}
	c.client.Close(reason)
}

func (c *rtConn) writeClose(reason string) {
	code := websocket.CloseNormalClosure
	switch {
	case reason == fanout.SlowConsumerReason:
		code = websocket.ClosePolicyViolation
	case strings.HasPrefix(reason, "message larger"):
		code = websocket.CloseMessageTooBig
	case reason == shutdownReason:
		code = websocket.CloseGoingAway
	case reason == reasonTooManyJoins || reason == reasonTooManyEvents:
		code = websocket.ClosePolicyViolation
	}
	if len(reason) > 120 {
		reason = reason[:120]
	}
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
}

func (c *rtConn) push(f fanout.Frame) { c.client.Push(f) }

func (c *rtConn) replyOK(m *inMsg, response []byte) {
	c.push(fanout.ReplyFrame(c.vsn, m.JoinRef, m.Ref, m.Topic, "ok", response))
}

func (c *rtConn) replyError(m *inMsg, reason string) {
	c.push(fanout.ErrorReplyFrame(c.vsn, m.JoinRef, m.Ref, m.Topic, reason))
}

func (c *rtConn) channel(topic string) *rtChannel {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.chans[topic]
}

// paced spends a token of the message's bucket: joins have theirs, every
// other message shares the other. A message past the rate is refused
// with the limit's reason; a client that keeps going past it is
// disconnected with that reason, as Supabase does.
func (c *rtConn) paced(m *inMsg) bool {
	b, reason, limit := c.events, reasonTooManyEvents, "events"
	if m.Event == "phx_join" {
		b, reason, limit = c.joins, reasonTooManyJoins, "joins"
	}
	ok, over := b.take(time.Now())
	if ok {
		return true
	}
	c.rt.metrics.limited.WithLabelValues(limit).Inc()
	c.replyError(m, reason)
	if over {
		c.rt.log.Info("client disconnected for its message rate", zap.String("limit", limit))
		c.close(reason)
	}
	return false
}

func (c *rtConn) handle(ctx context.Context, m *inMsg) {
	if !c.paced(m) {
		return
	}
	if m.Topic == "phoenix" {
		if m.Event == "heartbeat" {
			c.replyOK(m, []byte("{}"))
			return
		}
		c.replyError(m, "unmatched topic")
		return
	}
	if m.Event == "phx_join" {
		c.join(ctx, m)
		return
	}
	rc := c.channel(m.Topic)
	if rc == nil {
		c.replyError(m, "unmatched topic")
		return
	}
	switch m.Event {
	case "phx_leave":
		c.leave(m.Topic, rc)
		c.replyOK(m, []byte("{}"))
	case "access_token":
		c.refreshToken(ctx, m, rc)
	case "broadcast":
		c.broadcast(m, rc)
	case "presence":
		c.presence(m, rc)
	default:
		c.replyError(m, fmt.Sprintf("Unexpected message from client of type `%s`", m.Event))
	}
}

func (c *rtConn) leave(topic string, rc *rtChannel) {
	c.mu.Lock()
	if c.chans[topic] == rc {
		delete(c.chans, topic)
	}
	if rc.expiry != nil {
		rc.expiry.Stop()
	}
	ch := rc.ch
	c.mu.Unlock()
	c.rt.untrack(rc)
	if ch != nil {
		c.client.LeaveChannel(ch)
	} else {
		c.client.Leave(topic) // still joining
	}
}

// shutdown closes a channel from the server side, as Supabase does: a
// system error with the reason, then phx_close.
func (c *rtConn) shutdown(rc *rtChannel, reason string) {
	topic := rc.topic
	c.mu.Lock()
	current := c.chans[topic] == rc
	c.mu.Unlock()
	if !current {
		return
	}
	c.leave(topic, rc)
	c.push(fanout.MessageFrame(c.vsn, rc.joinRef, fanout.Ref{}, topic, "system", fanout.SystemPayload("system", "error", reason, rc.name)))
	c.push(fanout.MessageFrame(c.vsn, rc.joinRef, rc.joinRef, topic, "phx_close", []byte("{}")))
}

// joinPayload is the payload of phx_join.
type joinPayload struct {
	Config struct {
		Broadcast struct {
			Ack  flexBool `json:"ack"`
			Self flexBool `json:"self"`
			// ReplicationReady asks for a system message once changes
			// flow; here they flow as soon as the channel is joined.
			ReplicationReady flexBool `json:"replication_ready"`
		} `json:"broadcast"`
		Presence struct {
			Key     json.RawMessage `json:"key"`
			Enabled *flexBool       `json:"enabled"`
		} `json:"presence"`
		PostgresChanges []json.RawMessage `json:"postgres_changes"`
		Private         flexBool          `json:"private"`
		// Resume is Fluxbase's extension: the last position the client
		// saw (the seq of a postgres_changes payload's data); the channel
		// replays the log after it, then goes live.
		Resume *struct {
			LogSeq uint64 `json:"log_seq"`
			Seq    uint64 `json:"seq"`
		} `json:"postgres_changes_resume"`
	} `json:"config"`
	AccessToken *string `json:"access_token"`
}

// flexBool accepts true/false and their string forms, as Supabase does.
type flexBool bool

func (b *flexBool) UnmarshalJSON(data []byte) error {
	switch strings.Trim(strings.ToLower(string(data)), `"`) {
	case "true":
		*b = true
	case "false", "null", "":
		*b = false
	default:
		return fmt.Errorf("want a boolean, got %s", data)
	}
	return nil
}

// joinBinding is one postgres_changes binding as the client sent it, kept
// to echo it back verbatim with its id.
type joinBinding struct {
	raw map[string]json.RawMessage
	b   fanout.Binding
}

func parseBinding(raw json.RawMessage) (joinBinding, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		return joinBinding{}, errors.New("each postgres_changes entry must be an object {event, schema, table, filter}")
	}
	str := func(name string) (string, error) {
		v, ok := fields[name]
		if !ok || string(v) == "null" {
			return "", nil
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return "", fmt.Errorf("postgres_changes %s must be a string", name)
		}
		return s, nil
	}
	event, err := str("event")
	if err != nil {
		return joinBinding{}, err
	}
	schema, err := str("schema")
	if err != nil {
		return joinBinding{}, err
	}
	table, err := str("table")
	if err != nil {
		return joinBinding{}, err
	}
	filter, err := str("filter")
	if err != nil {
		return joinBinding{}, err
	}
	ev := strings.ToUpper(event)
	switch ev {
	case "*", "INSERT", "UPDATE", "DELETE":
	default:
		return joinBinding{}, fmt.Errorf("postgres_changes event %q: want *, INSERT, UPDATE or DELETE", event)
	}
	if schema == "" {
		schema = "public"
	}
	f, err := fanout.ParseFilter(filter)
	if err != nil {
		return joinBinding{}, err
	}
	return joinBinding{raw: fields, b: fanout.Binding{
		ID: fanout.BindingID(ev, schema, table, filter), Event: ev, Schema: schema, Table: table, Filter: f,
	}}, nil
}

// parseJoin reads a phx_join payload as the server takes it; an error is
// the reason the join reply gives.
func parseJoin(payload []byte) (joinPayload, error) {
	var p joinPayload
	if err := json.Unmarshal(payload, &p); err != nil {
		return p, errors.New("InvalidJoinPayload: " + err.Error())
	}
	return p, nil
}

// parseBindings reads the postgres_changes bindings of a join's config,
// each checked; an error is the reason the join reply gives.
func parseBindings(raws []json.RawMessage) ([]joinBinding, error) {
	bindings := make([]joinBinding, 0, len(raws))
	for _, raw := range raws {
		jb, err := parseBinding(raw)
		if err != nil {
			return nil, errors.New("Unable to subscribe to changes with given parameters: " + err.Error())
		}
		bindings = append(bindings, jb)
	}
	return bindings, nil
}

// echo is the binding as sent, plus its id.
func (jb joinBinding) echo() map[string]json.RawMessage {
	out := make(map[string]json.RawMessage, len(jb.raw)+1)
	for k, v := range jb.raw {
		out[k] = v
	}
	out["id"] = json.RawMessage(fmt.Sprint(jb.b.ID))
	return out
}

// tokenClaims verifies a token sent in a join or refresh. Publishable
// keys ("sb_...") and the empty token fall back to the connection's
// claims.
func (c *rtConn) tokenClaims(token *string) (*auth.Claims, string, error) {
	if token == nil || *token == "" || strings.HasPrefix(*token, "sb_") {
		return c.claims, "", nil
	}
	cl, err := c.rt.cfg.Verifier.Verify(*token)
	switch {
	case errors.Is(err, auth.ErrExpiredToken):
		return nil, "", errors.New("InvalidJWTToken: Token has expired")
	case err != nil:
		return nil, "", fmt.Errorf("InvalidJWTToken: %v", err)
	case c.rt.revoked(cl):
		return nil, "", errors.New(revokedReason)
	}
	return cl, *token, nil
}

func authOf(cl *auth.Claims) fanout.Auth {
	return fanout.Auth{Role: cl.Role, Claims: cl.Raw, Bypass: cl.IsServiceRole()}
}

func (c *rtConn) join(ctx context.Context, m *inMsg) {
	name, ok := strings.CutPrefix(m.Topic, "realtime:")
	if !ok {
		c.replyError(m, "unmatched topic")
		return
	}
	p, err := parseJoin(m.Payload)
	if err != nil {
		c.replyError(m, err.Error())
		return
	}
	c.mu.Lock()
	_, rejoin := c.chans[m.Topic]
	joined := len(c.chans)
	c.mu.Unlock()
	if !rejoin && joined >= c.rt.limits.MaxChannelsPerClient {
		// Joins are handled one at a time by the reader, so the count
		// cannot grow past the limit between this check and the join.
		c.rt.metrics.limited.WithLabelValues("channels").Inc()
		c.replyError(m, reasonTooManyChannels)
		return
	}
	if n, limit := len(p.Config.PostgresChanges), c.rt.limits.MaxBindingsPerJoin; n > limit {
		c.rt.metrics.limited.WithLabelValues("bindings").Inc()
		c.replyError(m, fmt.Sprintf("Unable to subscribe to changes with given parameters: %d postgres_changes bindings, more than the %d a join may have", n, limit))
		return
	}
	claims, token, err := c.tokenClaims(p.AccessToken)
	if err != nil {
		c.replyError(m, err.Error())
		return
	}
	c.rt.log.Debug("join", zap.String("topic", m.Topic), zap.String("role", claims.Role), zap.String("sub", claims.Subject))
	bindings, err := parseBindings(p.Config.PostgresChanges)
	if err != nil {
		c.replyError(m, err.Error())
		return
	}
	if len(bindings) > 0 && c.rt.cfg.Source == nil {
		c.replyError(m, "Unable to subscribe to changes: this node reads no change log (it runs without the broker)")
		return
	}
	if reason := c.checkBindings(ctx, claims, bindings); reason != "" {
		c.replyError(m, reason)
		return
	}
	private := bool(p.Config.Private)
	pol := channelPolicies{readBroadcast: true, readPresence: true, writeBroadcast: true, writePresence: true}
	if private {
		pol, err = c.checkPolicies(ctx, claims, name)
		if err != nil {
			c.rt.log.Warn("private channel policy check failed", zap.Error(err))
			c.replyError(m, "Realtime was unable to connect to the project database")
			return
		}
		if !pol.readBroadcast && !pol.readPresence {
			c.replyError(m, "Unauthorized: You do not have permissions to read from this Channel topic: "+name)
			return
		}
	}

	var resume uint64
	if p.Config.Resume != nil && len(bindings) > 0 {
		// Refused here, in the join's reply, rather than after a scan:
		// a position too far back (or gone) is told to read afresh.
		resume = max(p.Config.Resume.LogSeq, p.Config.Resume.Seq)
		if err := c.rt.hub.CheckResume(ctx, resume); err != nil {
			var re *fanout.ResumeError
			if !errors.As(err, &re) {
				c.rt.log.Warn("resume check failed", zap.Error(err))
			} else {
				c.rt.metrics.limited.WithLabelValues("resume").Inc()
			}
			c.replyError(m, "UnableToReplayMessages: "+err.Error())
			return
		}
	}

	echo := make([]map[string]json.RawMessage, len(bindings))
	specs := make([]fanout.Binding, len(bindings))
	for i, jb := range bindings {
		echo[i] = jb.echo()
		specs[i] = jb.b
	}
	resp, _ := json.Marshal(map[string]any{"postgres_changes": echo})
	replies := []fanout.Frame{fanout.ReplyFrame(c.vsn, m.JoinRef, m.Ref, m.Topic, "ok", resp)}
	if len(bindings) > 0 {
		replies = append(replies, fanout.MessageFrame(c.vsn, m.JoinRef, fanout.Ref{}, m.Topic, "system",
			fanout.SystemPayload("postgres_changes", "ok", "Subscribed to PostgreSQL", name)))
	}
	if p.Config.Broadcast.ReplicationReady {
		status, msg := "ok", "Replication connection established"
		if c.rt.cfg.Source == nil {
			status, msg = "error", "Replication connection was not established in time"
		}
		replies = append(replies, fanout.MessageFrame(c.vsn, m.JoinRef, fanout.Ref{}, m.Topic, "system",
			fanout.SystemPayload("system", status, msg, name)))
	}
	presenceKey := ""
	if len(p.Config.Presence.Key) > 0 {
		var s string
		if json.Unmarshal(p.Config.Presence.Key, &s) == nil {
			presenceKey = s
		} else {
			presenceKey = string(p.Config.Presence.Key)
		}
	}
	// Presence is on unless the client says otherwise (older clients send
	// no enabled flag).
	presenceOn := p.Config.Presence.Enabled == nil || bool(*p.Config.Presence.Enabled)

	rc := &rtChannel{topic: m.Topic, name: name, joinRef: m.JoinRef, claims: claims, token: token,
		private: private, ack: bool(p.Config.Broadcast.Ack), bindings: bindings, pol: pol}
	spec := fanout.JoinSpec{
		Topic: m.Topic, Private: private, JoinRef: m.JoinRef, Auth: authOf(claims),
		Changes: specs, Self: bool(p.Config.Broadcast.Self),
		ReadBroadcast: pol.readBroadcast, ReadPresence: pol.readPresence,
		Presence: presenceOn, PresenceKey: presenceKey,
		Replies: replies,
	}
	if resume > 0 {
		spec.Resume = resume
		spec.OnResumeError = func(err error) {
			c.rt.log.Info("resume failed", zap.String("topic", m.Topic), zap.Error(err))
			c.shutdown(rc, "UnableToReplayMessages: "+err.Error())
		}
	}

	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	old := c.chans[m.Topic]
	c.chans[m.Topic] = rc
	c.mu.Unlock()
	c.rt.track(c, rc, claims.SessionID)
	if old != nil {
		// A second join of a topic replaces the first, as in Phoenix.
		c.leave(m.Topic, old)
		c.push(fanout.MessageFrame(c.vsn, old.joinRef, old.joinRef, m.Topic, "phx_close", []byte("{}")))
	}
	ch, err := c.client.Join(spec)
	if err != nil {
		c.mu.Lock()
		if c.chans != nil && c.chans[m.Topic] == rc {
			delete(c.chans, m.Topic)
		}
		c.mu.Unlock()
		return // the client is closing
	}
	c.mu.Lock()
	rc.ch = ch
	c.armExpiry(rc)
	c.mu.Unlock()
	if c.rt.revoked(claims) {
		// The session ended while the channel was joining, perhaps
		// before it was filed under it.
		c.shutdown(rc, revokedReason)
	}
}

// armExpiry shuts the channel down when its token expires; c.mu is held.
func (c *rtConn) armExpiry(rc *rtChannel) {
	if rc.expiry != nil {
		rc.expiry.Stop()
	}
	if rc.claims.Expires.IsZero() {
		return
	}
	d := time.Until(rc.claims.Expires)
	if d < 0 {
		d = 0
	}
	rc.expiry = time.AfterFunc(d, func() { c.shutdown(rc, "InvalidJWTToken: Token has expired") })
}

// tableAccess is what a join asks the authorizer of a table.
type tableAccess interface {
	Access(ctx context.Context, role, schema, table string) (*fanout.Access, error)
}

// checkBindings refuses bindings on tables the claims may not read. Each
// table's privileges are read once, however many bindings name it.
func (c *rtConn) checkBindings(ctx context.Context, claims *auth.Claims, bindings []joinBinding) string {
	if c.rt.access == nil || claims.IsServiceRole() {
		return ""
	}
	type table struct{ schema, name string }
	read := map[table]*fanout.Access{}
	for _, jb := range bindings {
		if jb.b.Table == "" || jb.b.Table == "*" || jb.b.Schema == "*" {
			continue // checked per change
		}
		acc, seen := read[table{jb.b.Schema, jb.b.Table}]
		var err error
		if !seen {
			acc, err = c.rt.access.Access(ctx, claims.Role, jb.b.Schema, jb.b.Table)
			if err == nil {
				read[table{jb.b.Schema, jb.b.Table}] = acc
			}
		}
		switch {
		case errors.Is(err, errNoTable):
			return fmt.Sprintf("Unable to subscribe to changes with given parameters: table %s.%s does not exist", jb.b.Schema, jb.b.Table)
		case err != nil:
			c.rt.log.Warn("table privilege check failed", zap.Error(err))
			return "Realtime was unable to connect to the project database"
		case len(acc.Columns) == 0:
			return fmt.Sprintf("Unauthorized: role %s has no SELECT privilege on table %s.%s", claims.Role, jb.b.Schema, jb.b.Table)
		}
		for _, col := range jb.b.Filter.Columns() {
			if !acc.Columns[col] {
				return fmt.Sprintf("Unauthorized: role %s cannot filter on column %s of %s.%s: it may not read it, or it does not exist", claims.Role, col, jb.b.Schema, jb.b.Table)
			}
		}
	}
	return ""
}

func (c *rtConn) checkPolicies(ctx context.Context, claims *auth.Claims, name string) (channelPolicies, error) {
	if c.rt.authz == nil || claims.IsServiceRole() {
		return channelPolicies{readBroadcast: true, readPresence: true, writeBroadcast: true, writePresence: true}, nil
	}
	return c.rt.authz.policies(ctx, claims, name)
}

func (c *rtConn) refreshToken(ctx context.Context, m *inMsg, rc *rtChannel) {
	var p struct {
		AccessToken *string `json:"access_token"`
	}
	if err := json.Unmarshal(m.Payload, &p); err != nil || p.AccessToken == nil {
		return
	}
	if *p.AccessToken == rc.token || strings.HasPrefix(*p.AccessToken, "sb_") {
		return
	}
	claims, token, err := c.tokenClaims(p.AccessToken)
	if err != nil {
		c.shutdown(rc, err.Error())
		return
	}
	c.rt.log.Debug("access token refresh", zap.String("topic", rc.topic), zap.String("role", claims.Role), zap.String("sub", claims.Subject))
	if reason := c.checkBindings(ctx, claims, rc.bindings); reason != "" {
		c.shutdown(rc, "You no longer have permission to read from this Channel topic: "+rc.name+" ("+reason+")")
		return
	}
	pol := rc.pol
	if rc.private {
		pol, err = c.checkPolicies(ctx, claims, rc.name)
		if err != nil {
			c.shutdown(rc, "Realtime was unable to connect to the project database")
			return
		}
		if rc.pol.readBroadcast && !pol.readBroadcast || rc.pol.readPresence && !pol.readPresence {
			c.shutdown(rc, "You no longer have permission to read from this Channel topic: "+rc.name)
			return
		}
	}
	c.mu.Lock()
	rc.claims, rc.token = claims, token
	rc.pol.writeBroadcast, rc.pol.writePresence = pol.writeBroadcast, pol.writePresence
	rc.ch.SetAuth(authOf(claims))
	c.armExpiry(rc)
	c.mu.Unlock()
	c.rt.track(c, rc, claims.SessionID)
}

func (c *rtConn) broadcast(m *inMsg, rc *rtChannel) {
	b := m.Broadcast
	c.mu.Lock()
	allowed := rc.pol.writeBroadcast
	c.mu.Unlock()
	if !allowed {
		// Supabase drops a broadcast the policies refuse, silently.
		if rc.ack {
			c.replyError(m, "Unauthorized: You do not have permissions to write to this Channel topic: "+rc.name)
		}
		return
	}
	err := rc.ch.Broadcast(b.Event, b.Encoding, b.Payload)
	if !rc.ack || !m.Ref.Valid {
		return
	}
	if err != nil {
		c.replyError(m, err.Error())
		return
	}
	c.replyOK(m, []byte("{}"))
}

func (c *rtConn) presence(m *inMsg, rc *rtChannel) {
	var p struct {
		Type    string          `json:"type"`
		Event   string          `json:"event"`
		Payload json.RawMessage `json:"payload"`
	}
	if err := json.Unmarshal(m.Payload, &p); err != nil {
		c.replyError(m, "Presence message must be {type, event, payload}")
		return
	}
	c.mu.Lock()
	allowed := rc.pol.writePresence
	c.mu.Unlock()
	if !allowed {
		c.replyError(m, "Unauthorized: You do not have permissions to track presence on this Channel topic: "+rc.name)
		return
	}
	var err error
	switch strings.ToLower(p.Event) {
	case "track":
		payload := p.Payload
		if len(payload) == 0 || string(payload) == "null" {
			payload = json.RawMessage("{}")
		}
		if limit := c.rt.limits.MaxPresenceBytes; len(payload) > limit {
			c.rt.metrics.limited.WithLabelValues("presence").Inc()
			c.replyError(m, fmt.Sprintf("%s: the payload is %d bytes, more than the %d a presence may have", reasonPresenceSize, len(payload), limit))
			return
		}
		err = rc.ch.Track(payload)
		if errors.Is(err, fanout.ErrPresencePayload) {
			c.replyError(m, "Presence track payload must be a map") // Supabase's words
			return
		}
	case "untrack":
		err = rc.ch.Untrack()
	default:
		c.replyError(m, fmt.Sprintf("presence event %q: want track or untrack", p.Event))
		return
	}
	if err != nil {
		c.replyError(m, err.Error())
		return
	}
	c.replyOK(m, []byte("{}"))
}
