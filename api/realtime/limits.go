package realtime

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/fluxbase/fluxbase/api"
)

// This file bounds what one anonymous client may ask of a node, so none
// can take it down: websockets per node (refused before the upgrade, so
// the process never runs out of descriptors), channels per connection,
// bindings per join, the size of a presence, and joins and messages per
// second per connection. The names and defaults follow Supabase
// Realtime's tenant limits (max_channels_per_client,
// max_joins_per_second, max_events_per_second), applied per connection,
// and so do the reasons a client is given.

// Limits bounds what clients may ask; zero values mean the defaults.
type Limits struct {
	// MaxConnections bounds the websockets open on this node; past it an
	// upgrade is answered 503 with Retry-After. The node sets it from its
	// open-file limit less a reserve (FLUXBASE_FD_RESERVE), or lower
	// (FLUXBASE_REALTIME_MAX_CONNECTIONS). 0 means no bound.
	MaxConnections int
	// MaxChannelsPerClient bounds the channels one connection has joined
	// at once. Default 100, as Supabase's max_channels_per_client.
	MaxChannelsPerClient int
	// MaxBindingsPerJoin bounds the postgres_changes bindings of one join.
	// Default 100.
	MaxBindingsPerJoin int
	// MaxPresenceBytes bounds the payload of one presence track. Default
	// 16 KiB. A channel holds one presence per connection: a track
	// replaces the channel's previous one.
	MaxPresenceBytes int
	// JoinsPerSecond is each connection's rate of joins, with bursts of as
	// many. Default 100, Supabase's max_joins_per_second.
	JoinsPerSecond float64
	// EventsPerSecond is each connection's rate of other messages
	// (broadcasts, presence, heartbeats, leaves, token refreshes), with
	// bursts of as many. Default 100, Supabase's max_events_per_second.
	EventsPerSecond float64
}

// Defaults of Limits.
const (
	DefaultMaxChannelsPerClient = 100
	DefaultMaxBindingsPerJoin   = 100
	DefaultMaxPresenceBytes     = 16 << 10
	DefaultJoinsPerSecond       = 100
	DefaultEventsPerSecond      = 100
)

func (l Limits) withDefaults() Limits {
	if l.MaxChannelsPerClient <= 0 {
		l.MaxChannelsPerClient = DefaultMaxChannelsPerClient
	}
	if l.MaxBindingsPerJoin <= 0 {
		l.MaxBindingsPerJoin = DefaultMaxBindingsPerJoin
	}
	if l.MaxPresenceBytes <= 0 {
		l.MaxPresenceBytes = DefaultMaxPresenceBytes
	}
	if l.JoinsPerSecond <= 0 {
		l.JoinsPerSecond = DefaultJoinsPerSecond
	}
	if l.EventsPerSecond <= 0 {
		l.EventsPerSecond = DefaultEventsPerSecond
	}
	return l
}

// The reasons a limit gives, Supabase's where it has one.
const (
	reasonTooManyChannels = "ChannelRateLimitReached: Too many channels"
	reasonTooManyJoins    = "ClientJoinRateLimitReached: Too many joins per second"
	reasonTooManyEvents   = "MessagePerSecondRateLimitReached: Too many messages per second"
	reasonPresenceSize    = "Track message size exceeded"
)

// errTooManyConnections answers an upgrade past MaxConnections (see
// docs/ERRORS.md); Supabase calls the same refusal
// ConnectionRateLimitReached.
var errTooManyConnections = &api.Error{Status: http.StatusServiceUnavailable, Code: "FB092",
	Message: "Too many realtime connections on this node", Hint: "retry after the Retry-After delay, or on another node"}

// connRetryAfter is what a refused upgrade is told to wait.
const connRetryAfter = 5 * time.Second

// refuseConnection answers an upgrade past the cap, closing the HTTP
// connection so its descriptor is free at once.
func refuseConnection(w http.ResponseWriter, limit int) {
	w.Header().Set("Retry-After", strconv.Itoa(int(connRetryAfter/time.Second)))
	w.Header().Set("Connection", "close")
	api.WriteError(w, errTooManyConnections.With(fmt.Sprintf("this node holds its limit of %d websocket connections (FLUXBASE_REALTIME_MAX_CONNECTIONS)", limit)))
}

// bucket is a token bucket that may go into debt: every message takes a
// token, one that finds less than a whole token left is refused, and a
// client whose debt reaches a whole burst — it kept sending at more than
// its rate for about as long again after being refused — is to be
// disconnected. A short burst past the rate costs refusals only. Only
// the connection's reader uses it.
type bucket struct {
	rate, burst, tokens float64
	last                time.Time
}

func newBucket(rate float64) *bucket {
	burst := max(rate, 1)
	return &bucket{rate: rate, burst: burst, tokens: burst}
}

// take spends a token at now: ok says whether the message may pass,
// over whether the client has gone so far past its rate that it must go.
func (b *bucket) take(now time.Time) (ok, over bool) {
	if !b.last.IsZero() {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	ok = b.tokens >= 1
	b.tokens--
	return ok, b.tokens <= -b.burst
}
