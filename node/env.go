package node

import (
	"fmt"
	"net"
	"net/mail"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/fluxbase/fluxbase/api/realtime"
	"github.com/fluxbase/fluxbase/api/rest"
	"github.com/fluxbase/fluxbase/auth"
	"github.com/fluxbase/fluxbase/broker"
	"github.com/fluxbase/fluxbase/broker/fanout"
	"github.com/fluxbase/fluxbase/replication"
	"github.com/fluxbase/fluxbase/storage"
)

// configError is a bad environment value: one line that names the variable
// and what it accepts.
type configError struct {
	name, value, accepts string
}

func (e *configError) Error() string {
	if e.value == "" {
		return fmt.Sprintf("%s is required: %s", e.name, e.accepts)
	}
	return fmt.Sprintf("%s=%q is invalid: want %s", e.name, e.value, e.accepts)
}

// env reads and validates variables, keeping the first error.
type env struct {
	get func(string) string
	err error
}

func (e *env) fail(name, value, accepts string) {
	if e.err == nil {
		e.err = &configError{name, value, accepts}
	}
}

func (e *env) str(name, def string) string {
	if v := strings.TrimSpace(e.get(name)); v != "" {
		return v
	}
	return def
}

func (e *env) boolean(name string, def bool) bool {
	v := e.str(name, "")
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		e.fail(name, v, "true or false")
	}
	return b
}

func (e *env) integer(name string, def, min, max int64, accepts string) int64 {
	v := e.str(name, "")
	if v == "" {
		return def
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < min || n > max {
		e.fail(name, v, accepts)
	}
	return n
}

func (e *env) duration(name string, def time.Duration) time.Duration {
	v := e.str(name, "")
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		e.fail(name, v, "a duration such as 500ms, 30s or 24h")
	}
	return d
}

// bytes accepts a plain byte count or one with a KB/MB/GB/TB suffix
// (powers of 1024).
func (e *env) bytes(name string, def int64) int64 {
	v := e.str(name, "")
	if v == "" {
		return def
	}
	n, err := storage.ParseSize(v)
	if err != nil {
		e.fail(name, v, "a size in bytes, optionally with KB, MB, GB or TB (for example 10GB), or -1 for no limit")
		return def
	}
	return n
}

func (e *env) list(name string) []string {
	var out []string
	for _, part := range strings.Split(e.str(name, ""), ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// Mode is what a node's configuration is read for: each needs different
// variables.
type Mode int

const (
	// Serve is a production node: DATABASE_URL and FLUXBASE_JWT_SECRET
	// are required.
	Serve Mode = iota
	// Dev runs its own database and makes its own secret when they are
	// missing.
	Dev
	// Migrate only applies migrations: it needs no secret.
	Migrate
)

// FromEnv reads a node's configuration from the environment through get,
// one subsystem at a time, each into its own config type. Every value is
// validated; the error names the first bad variable and what it accepts.
func FromEnv(get func(string) string, mode Mode) (Config, error) {
	e := &env{get: get}
	var c Config
	c.DataDir = e.str("FLUXBASE_DATA_DIR", ".fluxbase")
	c.Debug = e.boolean("FLUXBASE_DEBUG", false)
	host, _ := os.Hostname()
	c.Name = e.str("FLUXBASE_NODE_NAME", host)
	if !validNodeName(c.Name) {
		e.fail("FLUXBASE_NODE_NAME", c.Name, "letters, digits, '-' and '_' only")
	}
	c.Database = databaseFromEnv(e, mode)
	c.HTTP = httpFromEnv(e)
	c.Auth = authFromEnv(e, mode)
	c.Broker = brokerFromEnv(e)
	c.Replication = replicationFromEnv(e)
	c.Realtime, c.RealtimeLimits = realtimeFromEnv(e)
	c.REST = restFromEnv(e)
	c.Storage = storageFromEnv(e, c.DataDir)
	return c, e.err
}

func databaseFromEnv(e *env, mode Mode) DatabaseConfig {
	var c DatabaseConfig
	c.URL = e.str("DATABASE_URL", "")
	if c.URL == "" && mode != Dev {
		e.fail("DATABASE_URL", "", "a PostgreSQL URL such as postgres://user:pass@host:5432/db")
	} else if c.URL != "" && !validPostgresURL(c.URL) {
		e.fail("DATABASE_URL", redactURL(c.URL), "a PostgreSQL URL such as postgres://user:pass@host:5432/db")
	}
	c.MaxConns = int32(e.integer("FLUXBASE_DATABASE_MAX_CONNECTIONS", 0, 1, 10000, "a whole number from 1 to 10000"))
	c.MinConns = int32(e.integer("FLUXBASE_DATABASE_MIN_CONNECTIONS", 0, 0, 10000, "a whole number from 0 to 10000"))
	if c.MaxConns > 0 && c.MinConns > c.MaxConns {
		e.fail("FLUXBASE_DATABASE_MIN_CONNECTIONS", strconv.Itoa(int(c.MinConns)), "at most FLUXBASE_DATABASE_MAX_CONNECTIONS")
	}
	c.MaxConnLifetime = e.duration("FLUXBASE_DATABASE_MAX_CONN_LIFETIME", time.Hour)
	c.MaxConnIdleTime = e.duration("FLUXBASE_DATABASE_MAX_CONN_IDLE_TIME", 30*time.Minute)
	c.RoleSettingsRefresh = e.duration("FLUXBASE_ROLE_SETTINGS_REFRESH", 30*time.Second)
	if c.RoleSettingsRefresh == 0 {
		e.fail("FLUXBASE_ROLE_SETTINGS_REFRESH", "0", "a positive duration such as 30s")
	}
	for _, r := range e.list("FLUXBASE_DATABASE_READ_REPLICAS") {
		if _, _, err := net.SplitHostPort(r); err != nil && !validPostgresURL(r) {
			e.fail("FLUXBASE_DATABASE_READ_REPLICAS", r, "comma-separated host:port pairs or PostgreSQL URLs")
		}
		c.ReadReplicas = append(c.ReadReplicas, r)
	}
	return c
}

func httpFromEnv(e *env) HTTPConfig {
	var c HTTPConfig
	c.Addr = e.str("FLUXBASE_HTTP_ADDR", ":8080")
	if _, port, err := net.SplitHostPort(c.Addr); err != nil || !validPort(port, true) {
		e.fail("FLUXBASE_HTTP_ADDR", c.Addr, "host:port or :port, such as :8080 or 127.0.0.1:8080")
	}
	c.DrainTimeout = e.duration("FLUXBASE_SHUTDOWN_TIMEOUT", 15*time.Second)
	c.DrainDelay = e.duration("FLUXBASE_DRAIN_DELAY", 0)
	c.FDReserve = int(e.integer("FLUXBASE_FD_RESERVE", 0, minReserve, 1<<30, fmt.Sprintf("a whole number of file descriptors, at least %d", minReserve)))
	c.BodyTimeout = e.duration("FLUXBASE_HTTP_BODY_TIMEOUT", 30*time.Second)
	if c.BodyTimeout == 0 {
		c.BodyTimeout = -1 // none
	}
	return c
}

// restFromEnv reads the REST surface's limits.
func restFromEnv(e *env) rest.Config {
	var c rest.Config
	c.MaxRows = int(e.integer("FLUXBASE_REST_MAX_ROWS", 1000, 0, 1<<30, "a whole number of rows, or 0 for no limit"))
	if c.MaxRows == 0 {
		c.MaxRows = -1 // none
	}
	c.MaxQueryBytes = int(e.bytes("FLUXBASE_REST_MAX_QUERY_BYTES", 32<<10))
	if c.MaxQueryBytes < 1<<10 || c.MaxQueryBytes > 1<<20 {
		e.fail("FLUXBASE_REST_MAX_QUERY_BYTES", e.str("FLUXBASE_REST_MAX_QUERY_BYTES", ""), "a size from 1KB to 1MB")
	}
	c.MaxEmbedDepth = int(e.integer("FLUXBASE_REST_MAX_EMBED_DEPTH", 8, 1, 100, "a whole number from 1 to 100"))
	c.MaxFilterDepth = int(e.integer("FLUXBASE_REST_MAX_FILTER_DEPTH", 16, 1, 100, "a whole number from 1 to 100"))
	return c
}

func authFromEnv(e *env, mode Mode) auth.Config {
	var c auth.Config
	c.JWTSecret = e.str("FLUXBASE_JWT_SECRET", "")
	if c.JWTSecret == "" && mode == Serve {
		e.fail("FLUXBASE_JWT_SECRET", "", fmt.Sprintf("a secret of at least %d characters", auth.MinSecretLength))
	} else if c.JWTSecret != "" && len(c.JWTSecret) < auth.MinSecretLength {
		e.fail("FLUXBASE_JWT_SECRET", "(hidden)", fmt.Sprintf("at least %d characters", auth.MinSecretLength))
	}
	if raw := e.str("FLUXBASE_AUTH_JWT_KEYS", ""); raw != "" {
		ks, err := auth.ParseKeySet(raw)
		if err != nil {
			e.fail("FLUXBASE_AUTH_JWT_KEYS", "(hidden)", "a JSON array of EC P-256 JWKs with kids, at most one with key_ops [\"sign\"] and d ("+err.Error()+")")
		}
		c.JWTKeys = ks
	}
	c.ExternalURL = e.str("FLUXBASE_AUTH_EXTERNAL_URL", "http://localhost:8080")
	if u, err := url.Parse(c.ExternalURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		e.fail("FLUXBASE_AUTH_EXTERNAL_URL", c.ExternalURL, "the API's public http or https URL, such as https://api.example.com")
	}
	if host := e.str("FLUXBASE_SMTP_HOST", ""); host != "" {
		m := &auth.SMTPMailer{Host: host}
		m.Port = int(e.integer("FLUXBASE_SMTP_PORT", 587, 1, 65535, "a port from 1 to 65535"))
		m.User = e.str("FLUXBASE_SMTP_USER", "")
		m.Pass = e.str("FLUXBASE_SMTP_PASS", "")
		m.From = e.str("FLUXBASE_SMTP_SENDER", "")
		if _, err := mail.ParseAddress(m.From); err != nil {
			e.fail("FLUXBASE_SMTP_SENDER", m.From, "the address mail is sent from, such as auth@example.com, when FLUXBASE_SMTP_HOST is set")
		}
		c.Mailer = m
	}
	if issuer := e.str("FLUXBASE_AUTH_OIDC_ISSUER", ""); issuer != "" {
		o := &auth.OIDCConfig{Issuer: issuer, Name: e.str("FLUXBASE_AUTH_OIDC_NAME", "oidc"),
			ClientID: e.str("FLUXBASE_AUTH_OIDC_CLIENT_ID", ""), ClientSecret: e.str("FLUXBASE_AUTH_OIDC_SECRET", "")}
		if u, err := url.Parse(issuer); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			e.fail("FLUXBASE_AUTH_OIDC_ISSUER", issuer, "the provider's issuer URL, such as https://accounts.example.com")
		}
		if o.ClientID == "" {
			e.fail("FLUXBASE_AUTH_OIDC_CLIENT_ID", "", "the client id registered at the provider, with FLUXBASE_AUTH_OIDC_ISSUER")
		}
		if !validNodeName(o.Name) {
			e.fail("FLUXBASE_AUTH_OIDC_NAME", o.Name, "letters, digits, '-' and '_' only")
		}
		c.OIDC = o
	}
	c.AccessTokenHook = e.str("FLUXBASE_AUTH_ACCESS_TOKEN_HOOK", "")
	if c.AccessTokenHook != "" && !auth.ValidHookName(c.AccessTokenHook) {
		e.fail("FLUXBASE_AUTH_ACCESS_TOKEN_HOOK", c.AccessTokenHook, "a function name such as public.custom_access_token_hook (lower-case letters, digits, _)")
	}
	c.SiteURL = e.str("FLUXBASE_AUTH_SITE_URL", "")
	if c.SiteURL != "" {
		if u, err := url.Parse(c.SiteURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			e.fail("FLUXBASE_AUTH_SITE_URL", c.SiteURL, "an http or https URL such as https://app.example.com")
		}
	}
	c.AccessTokenTTL = e.duration("FLUXBASE_AUTH_JWT_EXPIRY", time.Hour)
	if c.AccessTokenTTL < 30*time.Second || c.AccessTokenTTL > 7*24*time.Hour {
		e.fail("FLUXBASE_AUTH_JWT_EXPIRY", c.AccessTokenTTL.String(), "a duration from 30s to 168h")
	}
	c.RefreshReuseInterval = e.duration("FLUXBASE_AUTH_REFRESH_REUSE_INTERVAL", 10*time.Second)
	c.SessionTimebox = e.duration("FLUXBASE_AUTH_SESSION_TIMEBOX", 0)
	c.BcryptCost = int(e.integer("FLUXBASE_AUTH_BCRYPT_COST", 10, 4, 31, "a whole number from 4 to 31"))
	c.HashWorkers = int(e.integer("FLUXBASE_AUTH_HASH_WORKERS", 0, 1, 1024, "a whole number from 1 to 1024"))
	c.MinPasswordLength = int(e.integer("FLUXBASE_AUTH_PASSWORD_MIN_LENGTH", 6, 1, 72, "a whole number from 1 to 72"))
	c.DisableSignup = e.boolean("FLUXBASE_AUTH_DISABLE_SIGNUP", false)
	c.Autoconfirm = e.boolean("FLUXBASE_AUTH_AUTOCONFIRM", true)
	c.AnonymousUsers = e.boolean("FLUXBASE_AUTH_ANONYMOUS_USERS", false)
	c.RateLimitWindow = e.duration("FLUXBASE_AUTH_RATE_LIMIT_WINDOW", 5*time.Minute)
	if c.RateLimitWindow < time.Second || c.RateLimitWindow > time.Hour {
		e.fail("FLUXBASE_AUTH_RATE_LIMIT_WINDOW", c.RateLimitWindow.String(), "a duration from 1s to 1h")
	}
	c.RateLimitToken = int(e.integer("FLUXBASE_AUTH_RATE_LIMIT_TOKEN", 150, 0, 1<<30, "a whole number, 0 for no limit"))
	c.RateLimitSignup = int(e.integer("FLUXBASE_AUTH_RATE_LIMIT_SIGNUP", 30, 0, 1<<30, "a whole number, 0 for no limit"))
	c.MailInterval = e.duration("FLUXBASE_AUTH_RATE_LIMIT_EMAIL_INTERVAL", time.Minute)
	c.MailPerHour = int(e.integer("FLUXBASE_AUTH_RATE_LIMIT_EMAIL_SENT", 30, 0, 1<<30, "mails per hour in all, 0 for no limit"))
	c.RateLimitOTP = int(e.integer("FLUXBASE_AUTH_RATE_LIMIT_OTP", 30, 0, 1<<30, "a whole number, 0 for no limit"))
	c.RateLimitHeader = e.str("FLUXBASE_AUTH_RATE_LIMIT_HEADER", "")
	if c.RateLimitHeader != "" && strings.ContainsAny(c.RateLimitHeader, " :\t\r\n") {
		e.fail("FLUXBASE_AUTH_RATE_LIMIT_HEADER", c.RateLimitHeader, "a header name such as X-Forwarded-For")
	}
	return c
}

// brokerFromEnv reads the broker's own settings; the node fills in what
// it derives (data folder, server name, route secret, key check).
func brokerFromEnv(e *env) broker.Config {
	var c broker.Config
	port := int(e.integer("FLUXBASE_NATS_PORT", 4222, -1, 65535, "a port from 1 to 65535, or -1 for none"))
	switch port {
	case 0:
		e.fail("FLUXBASE_NATS_PORT", "0", "a port from 1 to 65535, or -1 for none")
	case -1:
		c.ClientPort = 0 // none
	default:
		c.ClientPort = port
	}
	c.ClusterPort = int(e.integer("FLUXBASE_CLUSTER_PORT", 6222, 1, 65535, "a port from 1 to 65535"))
	for _, r := range e.list("FLUXBASE_CLUSTER_ROUTES") {
		if u, err := url.Parse(r); err != nil || u.Scheme != "nats" || u.Port() == "" {
			e.fail("FLUXBASE_CLUSTER_ROUTES", r, "comma-separated nats://host:port route URLs")
		}
		c.Routes = append(c.Routes, r)
	}
	c.ExternalURL = e.str("FLUXBASE_NATS_URL", "")
	if c.ExternalURL != "" {
		for _, s := range strings.Split(c.ExternalURL, ",") {
			if u, err := url.Parse(strings.TrimSpace(s)); err != nil || (u.Scheme != "nats" && u.Scheme != "tls") || u.Host == "" {
				e.fail("FLUXBASE_NATS_URL", c.ExternalURL, "nats://host:port (comma-separated for several servers)")
				break
			}
		}
		if len(c.Routes) > 0 {
			e.fail("FLUXBASE_CLUSTER_ROUTES", strings.Join(c.Routes, ","), "nothing when FLUXBASE_NATS_URL names an external NATS")
		}
	}
	// Syncing on an interval is safe: replication confirms the slot only
	// behind what is synced. "always" syncs each write, at a large cost.
	c.SyncInterval = 100 * time.Millisecond
	if v := e.str("FLUXBASE_NATS_SYNC_INTERVAL", "100ms"); v == "always" {
		c.SyncInterval = 0
	} else {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			e.fail("FLUXBASE_NATS_SYNC_INTERVAL", v, "always (fsync every write) or a duration such as 100ms or 2m")
		}
		c.SyncInterval = d
	}
	c.ChangesMaxAge = e.duration("FLUXBASE_CHANGES_MAX_AGE", 7*24*time.Hour)
	c.ChangesMaxBytes = -1
	if v := e.str("FLUXBASE_CHANGES_MAX_BYTES", ""); v != "-1" {
		c.ChangesMaxBytes = e.bytes("FLUXBASE_CHANGES_MAX_BYTES", 10<<30)
	}
	return c
}

// realtimeFromEnv reads the hub's replay bounds and the limits of
// realtime clients; the node derives the websocket cap's default from its
// open-file limit.
func realtimeFromEnv(e *env) (fanout.Config, realtime.Limits) {
	var h fanout.Config
	var l realtime.Limits
	count := func(name string, def, max int64) int64 {
		return e.integer(name, def, 1, max, fmt.Sprintf("a whole number from 1 to %d", max))
	}
	l.MaxConnections = int(e.integer("FLUXBASE_REALTIME_MAX_CONNECTIONS", 0, 1, 1<<30,
		"a whole number of websocket connections, at least 1 (by default all the open-file limit leaves after FLUXBASE_FD_RESERVE)"))
	l.MaxChannelsPerClient = int(count("FLUXBASE_REALTIME_MAX_CHANNELS_PER_CLIENT", realtime.DefaultMaxChannelsPerClient, 100000))
	l.MaxBindingsPerJoin = int(count("FLUXBASE_REALTIME_MAX_BINDINGS_PER_JOIN", realtime.DefaultMaxBindingsPerJoin, 100000))
	l.JoinsPerSecond = float64(count("FLUXBASE_REALTIME_MAX_JOINS_PER_SECOND", realtime.DefaultJoinsPerSecond, 1000000))
	l.EventsPerSecond = float64(count("FLUXBASE_REALTIME_MAX_EVENTS_PER_SECOND", realtime.DefaultEventsPerSecond, 1000000))
	presence := e.bytes("FLUXBASE_REALTIME_MAX_PRESENCE_BYTES", realtime.DefaultMaxPresenceBytes)
	if presence < 1 || presence > 1<<20 {
		e.fail("FLUXBASE_REALTIME_MAX_PRESENCE_BYTES", e.str("FLUXBASE_REALTIME_MAX_PRESENCE_BYTES", ""), "a size from 1 byte to 1MB (a client message's bound), such as 16KB")
	}
	l.MaxPresenceBytes = int(presence)
	h.MaxResumeChanges = int(count("FLUXBASE_REALTIME_MAX_RESUME_CHANGES", 10000, 1<<30))
	h.ResumeParallel = int(count("FLUXBASE_REALTIME_RESUME_PARALLEL", 2, 1024))
	return h, l
}

func replicationFromEnv(e *env) replication.Config {
	var c replication.Config
	c.Tables = e.list("FLUXBASE_REPLICATION_TABLES")
	for _, t := range c.Tables {
		if !validTableName(t) {
			e.fail("FLUXBASE_REPLICATION_TABLES", t, "comma-separated table names, optionally schema-qualified (public.todos)")
		}
	}
	c.ReplicaIdentityFull = e.boolean("FLUXBASE_REPLICA_IDENTITY_FULL", false)
	// Slot names are cluster-wide: two deployments on one PostgreSQL
	// cluster (each on its own database) need a slot each.
	c.SlotName = e.str("FLUXBASE_REPLICATION_SLOT", "fluxbase")
	if !validSlotName(c.SlotName) {
		e.fail("FLUXBASE_REPLICATION_SLOT", c.SlotName, "lower-case letters, digits and '_', at most 63 characters")
	}
	return c
}

// validSlotName is what PostgreSQL accepts as a replication slot's name.
func validSlotName(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for _, r := range s {
		if !(r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z') {
			return false
		}
	}
	return true
}

func storageFromEnv(e *env, dataDir string) storage.Config {
	var c storage.Config
	c.Provider = e.str("FLUXBASE_STORAGE_PROVIDER", storage.ProviderLocal)
	switch c.Provider {
	case storage.ProviderLocal, storage.ProviderS3:
	default:
		e.fail("FLUXBASE_STORAGE_PROVIDER", c.Provider, "local or s3")
	}
	c.LocalPath = e.str("FLUXBASE_STORAGE_LOCAL_PATH", dataDir+"/storage")
	c.LocalShared = e.boolean("FLUXBASE_STORAGE_LOCAL_SHARED", false)
	if v := e.str("FLUXBASE_STORAGE_MAX_FILE_SIZE", ""); v != "-1" {
		c.MaxFileSize = e.bytes("FLUXBASE_STORAGE_MAX_FILE_SIZE", 5<<30)
	}
	s3 := &c.S3
	s3.Endpoint = e.str("FLUXBASE_STORAGE_S3_ENDPOINT", "")
	s3.AccessKey = e.str("FLUXBASE_STORAGE_S3_ACCESS_KEY", "")
	s3.SecretKey = e.str("FLUXBASE_STORAGE_S3_SECRET_KEY", "")
	s3.Region = e.str("FLUXBASE_STORAGE_S3_REGION", "us-east-1")
	s3.Bucket = e.str("FLUXBASE_STORAGE_S3_BUCKET", "")
	s3.UseSSL = e.boolean("FLUXBASE_STORAGE_S3_USE_SSL", true)
	if c.Provider == storage.ProviderS3 {
		if s3.Endpoint == "" {
			e.fail("FLUXBASE_STORAGE_S3_ENDPOINT", "", "the S3 endpoint as host:port when FLUXBASE_STORAGE_PROVIDER=s3")
		} else if strings.Contains(s3.Endpoint, "/") {
			e.fail("FLUXBASE_STORAGE_S3_ENDPOINT", s3.Endpoint, "host or host:port, without a scheme (use FLUXBASE_STORAGE_S3_USE_SSL)")
		}
		if s3.Bucket == "" {
			e.fail("FLUXBASE_STORAGE_S3_BUCKET", "", "the bucket name when FLUXBASE_STORAGE_PROVIDER=s3")
		}
	}
	return c
}

func validPostgresURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") && (u.Host != "" || u.Query().Get("host") != "")
}

// redactURL hides a password in a URL shown in an error.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

func validPort(s string, allowZero bool) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n <= 65535 && (n > 0 || (allowZero && n == 0))
}

func validNodeName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}

func validTableName(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) > 2 {
		return false
	}
	for _, p := range parts {
		if p == "" || len(p) > 63 || strings.ContainsAny(p, "\"'; \t\n") {
			return false
		}
	}
	return true
}
