// Package broker runs the event bus every Fluxbase node shares: a NATS
// server embedded in the node (standalone, or clustered with the other
// nodes by routes) with JetStream, or a connection to an existing NATS
// cluster. It provisions the change log — the stream change.Stream on
// the subjects change.SubjectWildcard — and the KV buckets other parts keep
// cluster-wide state in, and hands the node one in-process connection.
//
// It does not decode or publish changes (replication does), nor fan them out
// to websocket clients (broker/fanout and api/realtime do). The api packages see no
// NATS types: replication and the fan-out hub take the connection through
// their own adapters, wired in cmd/fluxbase.
//
// Credentials. The client port, for external CDC consumers, admits user
// "service_role" with a valid service key (any service-role JWT signed with
// the node's secret) as the password; everything else is refused. The node's
// own in-process connection uses a random password made at start. Routes
// between nodes authenticate with a user and password derived from the
// shared JWT secret, so only nodes with the same secret can join.
//
// Storage failures. JetStream keeps a failed write to a stream's files (too
// many open files, an I/O error) and refuses every later write, and out of
// disk space it disables itself; neither clears when the cause goes away.
// The broker probes its embedded server for both and restarts JetStream on
// the running server, which recovers the streams from disk, then
// provisions again. Meanwhile Ready reports the failure; a failed recovery
// is retried with backoff, and fluxbase_broker_recoveries_total counts the
// recoveries.
package broker

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/fluxbase/fluxbase/change"
)

// Names of what the broker provisions.
const (
	PresenceBucket    = "fluxbase_presence"
	RateLimitBucket   = "fluxbase_ratelimits"
	RevocationsBucket = "fluxbase_revocations"

	// ServiceUser is the user name external clients connect with, the
	// service key being the password.
	ServiceUser = "service_role"

	clusterName  = "fluxbase"
	internalUser = "fluxbase-node"
	routeUser    = "fluxbase-route"
)

// Config configures a Broker; the zero value of each field means its
// default.
type Config struct {
	// DataDir holds the JetStream files of the embedded server.
	DataDir string
	// NodeName is the server's name in the cluster; required with Routes.
	NodeName string
	// ClientPort is the NATS client port for external consumers; 0 opens
	// none (the node itself always connects in-process).
	ClientPort int
	// ClientHost is the interface the client port binds; default 0.0.0.0.
	ClientHost string
	// ClusterPort is the route port; default 6222. ClusterHost is its
	// interface; default 0.0.0.0.
	ClusterPort int
	ClusterHost string
	// Routes are the nats://host:port routes of the cluster's nodes, this
	// node's own included or not. Empty means standalone.
	Routes []string
	// ExternalURL connects to an existing NATS cluster instead of embedding
	// a server; ExternalUser and ExternalPassword authenticate to it.
	ExternalURL                    string
	ExternalUser, ExternalPassword string
	// SyncInterval is JetStream's fsync interval; 0 syncs every write.
	SyncInterval time.Duration
	// ChangesMaxAge and ChangesMaxBytes bound the change log; 0 means no
	// age bound, and 0 or -1 no size bound.
	ChangesMaxAge   time.Duration
	ChangesMaxBytes int64
	// DuplicateWindow is the stream's duplicate-detection window; default
	// DefaultDuplicateWindow.
	DuplicateWindow time.Duration
	// RouteSecret derives the route credentials; nodes of one cluster
	// share it (the JWT secret).
	RouteSecret string
	// ServiceKeyValid reports whether a password presented on the client
	// port is a valid service key. Nil refuses every external client.
	ServiceKeyValid func(password string) bool
	// StartTimeout bounds waiting for the server, the cluster's JetStream
	// leader and the stream. Default 60 s.
	StartTimeout time.Duration
}

// Broker is a node's bus: the embedded server (if any) and the node's
// connection to it.
type Broker struct {
	cfg      Config
	log      *zap.Logger
	srv      *server.Server // nil with ExternalURL
	nc       *nats.Conn
	js       jetstream.JetStream
	replicas int
	srvOpts  *server.Options // the embedded server's
	heal     *healer         // nil with ExternalURL

	closeOnce sync.Once
}

// Option sets a collaborator.
type Option func(*Broker)

// WithLogger logs through l.
func WithLogger(l *zap.Logger) Option { return func(b *Broker) { b.log = l } }

// DefaultDuplicateWindow is the change stream's duplicate-detection
// window. The replication log's exactly-once does not rest on it: every
// publish names the previous message's id as a precondition
// (Nats-Expected-Last-Msg-Id, which the server restores from the last
// stored message after a restart, however old), and a new slot holder
// skips what the stream's last message covers. The window only catches a
// stray re-publish, and every id in it costs memory — about 150 bytes,
// so a two-minute window at 50,000 changes/s would hold near a gigabyte.
const DefaultDuplicateWindow = time.Second

// Start runs the embedded server (or connects to ExternalURL), connects to
// it, and creates or updates the change stream and the KV buckets. With
// Routes it waits until the cluster has a JetStream leader, which needs a
// majority of the nodes up.
func Start(ctx context.Context, cfg Config, opts ...Option) (*Broker, error) {
	if cfg.ClusterPort == 0 {
		cfg.ClusterPort = 6222
	}
	if cfg.DuplicateWindow == 0 {
		cfg.DuplicateWindow = DefaultDuplicateWindow
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 60 * time.Second
	}
	b := &Broker{cfg: cfg, log: zap.NewNop(), replicas: 1}
	for _, o := range opts {
		o(b)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()

	var err error
	if cfg.ExternalURL != "" {
		b.nc, err = nats.Connect(cfg.ExternalURL, nats.Name("fluxbase "+cfg.NodeName),
			nats.UserInfo(cfg.ExternalUser, cfg.ExternalPassword), nats.MaxReconnects(-1))
		if err != nil {
			return nil, fmt.Errorf("connect to FLUXBASE_NATS_URL: %w", err)
		}
		b.replicas = min(3, max(1, len(b.nc.Servers())))
	} else if err := b.startServer(); err != nil {
		return nil, err
	}
	if b.js, err = jetstream.New(b.nc); err != nil {
		b.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	if err := b.provision(ctx); err != nil {
		b.Close()
		return nil, err
	}
	b.heal = startHeal(b)
	return b, nil
}

func (b *Broker) startServer() error {
	cfg := b.cfg
	password := randomHex(24)
	opts := &server.Options{
		ServerName: cfg.NodeName,
		JetStream:  true,
		StoreDir:   cfg.DataDir,
		NoSigs:     true,
		NoLog:      true,
		MaxPayload: 8 << 20, // rows are not held to LISTEN/NOTIFY's 8 KB
		CustomClientAuthentication: clientAuth{
			internalPassword: password,
			serviceKeyValid:  cfg.ServiceKeyValid,
		},
	}
	if cfg.SyncInterval == 0 {
		opts.SyncAlways = true
		opts.SyncInterval = 2 * time.Minute // unused with SyncAlways, but must be set
	} else {
		opts.SyncInterval = cfg.SyncInterval
	}
	switch {
	case cfg.ClientPort > 0:
		opts.Host = orDefault(cfg.ClientHost, "0.0.0.0")
		opts.Port = cfg.ClientPort
	case len(cfg.Routes) > 0:
		// The server starts routing only once its client listener is up, so
		// a clustered node without a client port listens on a random
		// loopback port, behind the same credentials.
		opts.Host, opts.Port = "127.0.0.1", server.RANDOM_PORT
	default:
		opts.DontListen = true
	}
	if len(cfg.Routes) > 0 {
		if cfg.NodeName == "" {
			return errors.New("broker: a clustered node needs a name")
		}
		user, pass := routeUser, derive(cfg.RouteSecret, "nats-route")
		routes, others, err := routeURLs(cfg.Routes, cfg.ClusterPort, user, pass)
		if err != nil {
			return err
		}
		opts.Cluster = server.ClusterOpts{
			Name:     clusterName,
			Host:     orDefault(cfg.ClusterHost, "0.0.0.0"),
			Port:     cfg.ClusterPort,
			Username: user,
			Password: pass,
		}
		opts.Routes = routes
		b.replicas = min(3, others+1)
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("nats server: %w", err)
	}
	srv.SetLoggerV2(natsLogger{b.log.Named("nats")}, false, false, false)
	srv.Start()
	if !srv.ReadyForConnections(cfg.StartTimeout) {
		srv.Shutdown()
		return errors.New("nats server did not start")
	}
	b.srv, b.srvOpts = srv, opts
	b.nc, err = nats.Connect("", nats.InProcessServer(srv), nats.UserInfo(internalUser, password),
		nats.Name("fluxbase "+cfg.NodeName), nats.MaxReconnects(-1))
	if err != nil {
		srv.Shutdown()
		return fmt.Errorf("connect in-process: %w", err)
	}
	return nil
}

// provision creates or updates the stream and buckets. In a cluster the
// first attempts fail until the JetStream meta leader is elected; every node
// runs this, and whichever comes first creates, the others update.
func (b *Broker) provision(ctx context.Context) error {
	maxBytes := b.cfg.ChangesMaxBytes
	if maxBytes == 0 {
		maxBytes = -1
	}
	sc := jetstream.StreamConfig{
		Name:        change.Stream,
		Description: "Fluxbase change events, one per committed row change, in commit order",
		Subjects:    []string{change.SubjectWildcard},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      b.cfg.ChangesMaxAge,
		MaxBytes:    maxBytes,
		MaxMsgSize:  8 << 20,
		Duplicates:  b.cfg.DuplicateWindow,
		Replicas:    b.replicas,
	}
	kvs := []jetstream.KeyValueConfig{
		{Bucket: PresenceBucket, Description: "realtime presence by channel", Storage: jetstream.MemoryStorage, TTL: 5 * time.Minute, Replicas: b.replicas},
		{Bucket: RateLimitBucket, Description: "rate-limit counters", Storage: jetstream.MemoryStorage, TTL: time.Hour, Replicas: b.replicas},
		{Bucket: RevocationsBucket, Description: "revoked sessions and tokens", Storage: jetstream.FileStorage, Replicas: b.replicas},
	}
	return retry(ctx, func(ctx context.Context) error {
		if _, err := b.js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("stream %s: %w", change.Stream, err)
		}
		for _, kv := range kvs {
			if _, err := b.js.CreateOrUpdateKeyValue(ctx, kv); err != nil {
				return fmt.Errorf("bucket %s: %w", kv.Bucket, err)
			}
		}
		return nil
	})
}

// Conn is the node's connection to the bus, for cmd to hand to the
// replication log and the fan-out hub.
func (b *Broker) Conn() *nats.Conn { return b.nc }

// JetStream is the node's JetStream context.
func (b *Broker) JetStream() jetstream.JetStream { return b.js }

// Replicas is the replication factor the broker provisioned with.
func (b *Broker) Replicas() int { return b.replicas }

// SyncInterval is how long after its acknowledgement a message is surely on
// this node's disk: 0 when every write is synced, else the fsync interval.
// The replication log confirms LSNs only behind this point, so a power
// loss that takes the unsynced tail of the stream loses nothing: the slot
// has not moved past it, and PostgreSQL sends it again. Replicated streams
// keep the same rule, so even a whole cluster losing power at once loses
// nothing. With an external NATS cluster the servers' fsync is unknown and
// a quorum's acknowledgement is taken as durable.
func (b *Broker) SyncInterval() time.Duration {
	if b.cfg.ExternalURL != "" {
		return 0
	}
	return b.cfg.SyncInterval
}

// ClientURL is the embedded server's client URL, "" without a client port.
func (b *Broker) ClientURL() string {
	if b.srv == nil || b.cfg.ClientPort <= 0 {
		return ""
	}
	return b.srv.ClientURL()
}

// Ready reports whether the change stream answers through this node, and
// the embedded server keeps no storage failure that refuses writes.
func (b *Broker) Ready(ctx context.Context) error {
	if !b.nc.IsConnected() {
		return errors.New("not connected to NATS")
	}
	if err := b.heal.check(); err != nil {
		return err
	}
	if _, err := b.js.Stream(ctx, change.Stream); err != nil {
		return fmt.Errorf("stream %s: %w", change.Stream, err)
	}
	return nil
}

// Close closes the connection and shuts the embedded server down. It is
// safe to call more than once.
func (b *Broker) Close() {
	b.closeOnce.Do(func() {
		b.heal.stop()
		if b.nc != nil {
			b.nc.Close()
		}
		if b.srv != nil {
			b.srv.Shutdown()
			b.srv.WaitForShutdown()
		}
	})
}

// clientAuth admits the node's own connection, with every permission, and
// external clients with a service key, as readers of the change log. Routes
// are checked by the cluster options, not here.
type clientAuth struct {
	internalPassword string
	serviceKeyValid  func(string) bool
}

func (a clientAuth) Check(c server.ClientAuthentication) bool {
	o := c.GetOpts()
	switch o.Username {
	case internalUser:
		return subtle.ConstantTimeCompare([]byte(o.Password), []byte(a.internalPassword)) == 1
	case ServiceUser:
		if a.serviceKeyValid == nil || !a.serviceKeyValid(o.Password) {
			return false
		}
		c.RegisterUser(&server.User{Username: ServiceUser, Permissions: consumerPermissions})
		return true
	}
	return false
}

// consumerPermissions let an external client read the change log with
// consumers of its own, and nothing else: it may not publish into the log,
// touch the buckets' streams or change any stream, which would break the
// log's exactly-once guarantee.
var consumerPermissions = &server.Permissions{
	Publish: &server.SubjectPermission{
		Allow: []string{
			"$JS.API.INFO",
			"$JS.API.STREAM.NAMES",
			"$JS.API.STREAM.LIST",
			"$JS.API.STREAM.INFO." + change.Stream,
			"$JS.API.STREAM.MSG.GET." + change.Stream,
			"$JS.API.DIRECT.GET." + change.Stream,
			"$JS.API.DIRECT.GET." + change.Stream + ".>",
			"$JS.API.CONSUMER.>",
			"$JS.ACK." + change.Stream + ".>",
			"$JS.FC." + change.Stream + ".>",
			"_INBOX.>",
		},
	},
	Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>", "$JS.EVENT.>", ">"}},
}

// routeURLs adds the credentials to every route and counts the routes that
// are not this node's own.
func routeURLs(routes []string, ownPort int, user, pass string) ([]*url.URL, int, error) {
	var out []*url.URL
	others := 0
	for _, r := range routes {
		u, err := url.Parse(r)
		if err != nil || u.Scheme != "nats" || u.Port() == "" {
			return nil, 0, fmt.Errorf("broker: route %q is not nats://host:port", r)
		}
		u.User = url.UserPassword(user, pass)
		out = append(out, u)
		if !isSelf(u, ownPort) {
			others++
		}
	}
	return out, others, nil
}

// isSelf reports whether a route points at this node: its port is ours and
// its host is one of this machine's addresses.
func isSelf(u *url.URL, ownPort int) bool {
	if port, _ := strconv.Atoi(u.Port()); port != ownPort {
		return false
	}
	ips, err := net.LookupIP(u.Hostname())
	if err != nil {
		return false
	}
	addrs, _ := net.InterfaceAddrs()
	for _, ip := range ips {
		if ip.IsLoopback() {
			return true
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
				return true
			}
		}
	}
	return false
}

// derive makes a credential from the shared secret, distinct per purpose.
func derive(secret, purpose string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("fluxbase:" + purpose))
	return hex.EncodeToString(m.Sum(nil))
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// retry calls f until it succeeds or ctx ends, returning the last error.
func retry(ctx context.Context, f func(context.Context) error) error {
	for {
		attempt, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := f(attempt)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// natsLogger sends the embedded server's log to zap.
type natsLogger struct{ log *zap.Logger }

func (l natsLogger) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l natsLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l natsLogger) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l natsLogger) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l natsLogger) Debugf(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l natsLogger) Tracef(string, ...any)           {}

// Collector exports the broker's state as fluxbase_broker_* metrics, read
// on each scrape.
type Collector struct {
	b                                   *Broker
	msgs, bytes, peers, leader, healthy *prometheus.Desc
}

// NewCollector returns the broker's metrics collector.
func NewCollector(b *Broker) *Collector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("fluxbase_broker_"+name, help, nil, nil)
	}
	return &Collector{
		b:       b,
		msgs:    d("stream_messages", "Messages held by the change stream."),
		bytes:   d("stream_bytes", "Bytes held by the change stream."),
		peers:   d("cluster_peers", "Other NATS servers this node is routed to."),
		leader:  d("jetstream_leader", "1 when this node's server leads the JetStream cluster (or runs alone)."),
		healthy: d("jetstream_healthy", "1 when the change stream answers through this node and takes writes."),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.msgs, c.bytes, c.peers, c.leader, c.healthy} {
		ch <- d
	}
	ch <- recoveriesDesc
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	healthy := 0.0
	if s, err := c.b.js.Stream(ctx, change.Stream); err == nil {
		healthy = 1
		info := s.CachedInfo()
		gauge(c.msgs, float64(info.State.Msgs))
		gauge(c.bytes, float64(info.State.Bytes))
	}
	if c.b.heal.check() != nil {
		healthy = 0
	}
	gauge(c.healthy, healthy)
	c.b.heal.collect(ch)
	if srv := c.b.srv; srv != nil {
		gauge(c.peers, float64(srv.NumRemotes()))
		leader := 0.0
		if len(c.b.cfg.Routes) == 0 || srv.JetStreamIsLeader() {
			leader = 1
		}
		gauge(c.leader, leader)
	}
}
