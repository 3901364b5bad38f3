package node

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/fluxbase/fluxbase/auth"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

var validServeEnv = map[string]string{
	"DATABASE_URL":        "postgres://fluxbase:secret@db.internal:5432/app",
	"FLUXBASE_JWT_SECRET": strings.Repeat("s", 40),
}

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	c, err := FromEnv(envOf(validServeEnv), Serve)
	if err != nil {
		t.Fatal(err)
	}
	if a := c.Auth; a.AccessTokenTTL != time.Hour || a.RefreshReuseInterval != 10*time.Second || a.BcryptCost != 10 ||
		a.MinPasswordLength != 6 || !a.Autoconfirm || a.AnonymousUsers || a.DisableSignup || a.HashWorkers != 0 || a.SessionTimebox != 0 ||
		a.RateLimitWindow != 5*time.Minute || a.RateLimitToken != 150 || a.RateLimitSignup != 30 || a.RateLimitHeader != "" {
		t.Fatalf("auth defaults: %+v", a)
	}
	if c.HTTP.Addr != ":8080" || c.Broker.ClientPort != 4222 || c.Storage.Provider != "local" || c.DataDir != ".fluxbase" ||
		c.Broker.SyncInterval != 100*time.Millisecond || c.Broker.ChangesMaxBytes != 10<<30 || c.Broker.ChangesMaxAge != 7*24*time.Hour {
		t.Fatalf("defaults: %+v", c)
	}
	if c.REST.MaxRows != 1000 || c.REST.MaxQueryBytes != 32<<10 || c.REST.MaxEmbedDepth != 8 || c.REST.MaxFilterDepth != 16 ||
		c.HTTP.BodyTimeout != 30*time.Second || c.Database.RoleSettingsRefresh != 30*time.Second {
		t.Fatalf("limits' defaults: REST %+v, body timeout %v, role settings refresh %v", c.REST, c.HTTP.BodyTimeout, c.Database.RoleSettingsRefresh)
	}
	c, err = FromEnv(envOf(map[string]string{}), Dev)
	if err != nil {
		t.Fatalf("dev needs no variables: %v", err)
	}
	if _, err := FromEnv(envOf(map[string]string{"DATABASE_URL": validServeEnv["DATABASE_URL"]}), Migrate); err != nil {
		t.Fatalf("migrate needs no JWT secret: %v", err)
	}
}

func TestConfigValues(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"FLUXBASE_NATS_PORT":                "-1",
		"FLUXBASE_CHANGES_MAX_BYTES":        "512MB",
		"FLUXBASE_NATS_SYNC_INTERVAL":       "100ms",
		"FLUXBASE_CLUSTER_ROUTES":           "nats://10.0.0.1:6222, nats://10.0.0.2:6222",
		"FLUXBASE_DATABASE_READ_REPLICAS":   "replica1:5432,postgres://u@replica2/app",
		"FLUXBASE_REPLICATION_TABLES":       "todos,audit.events",
		"FLUXBASE_STORAGE_PROVIDER":         "s3",
		"FLUXBASE_STORAGE_S3_ENDPOINT":      "127.0.0.1:7070",
		"FLUXBASE_STORAGE_S3_BUCKET":        "files",
		"FLUXBASE_STORAGE_S3_USE_SSL":       "false",
		"FLUXBASE_DATABASE_MAX_CONNECTIONS": "50",
		"FLUXBASE_STORAGE_LOCAL_SHARED":     "true",
		"FLUXBASE_STORAGE_MAX_FILE_SIZE":    "20MB",
		"FLUXBASE_DRAIN_DELAY":              "5s",
		"FLUXBASE_REST_MAX_ROWS":            "0",
		"FLUXBASE_REST_MAX_QUERY_BYTES":     "8KB",
		"FLUXBASE_REST_MAX_EMBED_DEPTH":     "3",
		"FLUXBASE_REST_MAX_FILTER_DEPTH":    "4",
		"FLUXBASE_HTTP_BODY_TIMEOUT":        "0",
		"FLUXBASE_ROLE_SETTINGS_REFRESH":    "5s",
		"FLUXBASE_AUTH_BCRYPT_COST":         "12",
		"FLUXBASE_AUTH_ANONYMOUS_USERS":     "true",
		"FLUXBASE_AUTH_JWT_EXPIRY":          "15m",
		"FLUXBASE_AUTH_HASH_WORKERS":        "3",
		"FLUXBASE_AUTH_SITE_URL":            "https://app.example.com",
	}
	for k, v := range validServeEnv {
		env[k] = v
	}
	c, err := FromEnv(envOf(env), Serve)
	if err != nil {
		t.Fatal(err)
	}
	// FLUXBASE_NATS_PORT=-1 opens no client port: the broker's zero.
	if c.Broker.ClientPort != 0 || c.Broker.ChangesMaxBytes != 512<<20 || c.Broker.SyncInterval != 100*time.Millisecond ||
		len(c.Broker.Routes) != 2 || len(c.Database.ReadReplicas) != 2 || len(c.Replication.Tables) != 2 ||
		c.Storage.S3.UseSSL || !c.Storage.LocalShared || c.Storage.MaxFileSize != 20<<20 || c.Database.MaxConns != 50 ||
		c.HTTP.DrainDelay != 5*time.Second ||
		c.Auth.BcryptCost != 12 || !c.Auth.AnonymousUsers ||
		c.Auth.AccessTokenTTL != 15*time.Minute || c.Auth.HashWorkers != 3 || c.Auth.SiteURL != "https://app.example.com" {
		t.Fatalf("parsed: %+v", c)
	}
	// 0 rows and a 0 s body timeout are no limit: the configs' -1.
	if c.REST.MaxRows != -1 || c.REST.MaxQueryBytes != 8<<10 || c.REST.MaxEmbedDepth != 3 || c.REST.MaxFilterDepth != 4 ||
		c.HTTP.BodyTimeout != -1 || c.Database.RoleSettingsRefresh != 5*time.Second {
		t.Fatalf("limits: REST %+v, body timeout %v, role settings refresh %v", c.REST, c.HTTP.BodyTimeout, c.Database.RoleSettingsRefresh)
	}
}

// Every bad value stops start-up with one line that names the variable.
func TestConfigRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, value string
		dev         bool
	}{
		{"DATABASE_URL", "", false},
		{"DATABASE_URL", "mysql://localhost/db", false},
		{"DATABASE_URL", "not a url", true},
		{"FLUXBASE_JWT_SECRET", "", false},
		{"FLUXBASE_JWT_SECRET", "short", true},
		{"FLUXBASE_HTTP_ADDR", "8080", false},
		{"FLUXBASE_DRAIN_DELAY", "soon", false},
		{"FLUXBASE_DRAIN_DELAY", "-1s", false},
		{"FLUXBASE_HTTP_ADDR", ":99999", false},
		{"FLUXBASE_DEBUG", "yes please", false},
		{"FLUXBASE_NATS_PORT", "0", false},
		{"FLUXBASE_NATS_PORT", "-2", false},
		{"FLUXBASE_NATS_PORT", "abc", false},
		{"FLUXBASE_CLUSTER_PORT", "70000", false},
		{"FLUXBASE_CLUSTER_ROUTES", "http://a:1", false},
		{"FLUXBASE_CLUSTER_ROUTES", "nats://nohost", false},
		{"FLUXBASE_NATS_URL", "localhost:4222", false},
		{"FLUXBASE_NATS_SYNC_INTERVAL", "sometimes", false},
		{"FLUXBASE_NATS_SYNC_INTERVAL", "0s", false},
		{"FLUXBASE_CHANGES_MAX_AGE", "a week", false},
		{"FLUXBASE_CHANGES_MAX_AGE", "-1h", false},
		{"FLUXBASE_CHANGES_MAX_BYTES", "lots", false},
		{"FLUXBASE_CHANGES_MAX_BYTES", "10PB", false},
		{"FLUXBASE_DATABASE_MAX_CONNECTIONS", "0", false},
		{"FLUXBASE_DATABASE_MAX_CONNECTIONS", "many", false},
		{"FLUXBASE_DATABASE_MIN_CONNECTIONS", "-1", false},
		{"FLUXBASE_DATABASE_MAX_CONN_LIFETIME", "forever", false},
		{"FLUXBASE_DATABASE_MAX_CONN_IDLE_TIME", "5", false},
		{"FLUXBASE_DATABASE_READ_REPLICAS", "replica-without-port", false},
		{"FLUXBASE_STORAGE_PROVIDER", "ftp", false},
		{"FLUXBASE_STORAGE_S3_USE_SSL", "maybe", false},
		{"FLUXBASE_STORAGE_LOCAL_SHARED", "perhaps", false},
		{"FLUXBASE_STORAGE_MAX_FILE_SIZE", "huge", false},
		{"FLUXBASE_NODE_NAME", "node 1", false},
		{"FLUXBASE_REPLICATION_TABLES", "a.b.c", false},
		{"FLUXBASE_REPLICATION_TABLES", "todos;drop table x", false},
		{"FLUXBASE_REPLICA_IDENTITY_FULL", "full", false},
		{"FLUXBASE_SHUTDOWN_TIMEOUT", "soon", false},
		{"FLUXBASE_HTTP_BODY_TIMEOUT", "-1s", false},
		{"FLUXBASE_REST_MAX_ROWS", "-1", false},
		{"FLUXBASE_REST_MAX_ROWS", "all", false},
		{"FLUXBASE_REST_MAX_QUERY_BYTES", "10", false},
		{"FLUXBASE_REST_MAX_QUERY_BYTES", "2MB", false},
		{"FLUXBASE_REST_MAX_EMBED_DEPTH", "0", false},
		{"FLUXBASE_REST_MAX_FILTER_DEPTH", "deep", false},
		{"FLUXBASE_ROLE_SETTINGS_REFRESH", "0s", false},
		{"FLUXBASE_REPLICATION_SLOT", "My-Slot", false},
		{"FLUXBASE_FD_RESERVE", "10", false},
		{"FLUXBASE_REALTIME_MAX_CONNECTIONS", "0", false},
		{"FLUXBASE_REALTIME_MAX_CHANNELS_PER_CLIENT", "none", false},
		{"FLUXBASE_REALTIME_MAX_BINDINGS_PER_JOIN", "0", false},
		{"FLUXBASE_REALTIME_MAX_PRESENCE_BYTES", "2MB", false},
		{"FLUXBASE_REALTIME_MAX_PRESENCE_BYTES", "0", false},
		{"FLUXBASE_REALTIME_MAX_JOINS_PER_SECOND", "-5", false},
		{"FLUXBASE_REALTIME_MAX_EVENTS_PER_SECOND", "1.5", false},
		{"FLUXBASE_REALTIME_MAX_RESUME_CHANGES", "all", false},
		{"FLUXBASE_REALTIME_RESUME_PARALLEL", "0", false},
		{"FLUXBASE_AUTH_SITE_URL", "app.example.com", false},
		{"FLUXBASE_AUTH_JWT_EXPIRY", "5s", false},
		{"FLUXBASE_AUTH_JWT_EXPIRY", "an hour", false},
		{"FLUXBASE_AUTH_REFRESH_REUSE_INTERVAL", "-1s", false},
		{"FLUXBASE_AUTH_SESSION_TIMEBOX", "a day", false},
		{"FLUXBASE_AUTH_BCRYPT_COST", "3", false},
		{"FLUXBASE_AUTH_BCRYPT_COST", "32", false},
		{"FLUXBASE_AUTH_HASH_WORKERS", "0", false},
		{"FLUXBASE_AUTH_PASSWORD_MIN_LENGTH", "100", false},
		{"FLUXBASE_AUTH_DISABLE_SIGNUP", "sometimes", false},
		{"FLUXBASE_AUTH_AUTOCONFIRM", "yes please", false},
		{"FLUXBASE_AUTH_ANONYMOUS_USERS", "2", false},
		{"FLUXBASE_AUTH_RATE_LIMIT_WINDOW", "2h", false},
		{"FLUXBASE_AUTH_JWT_KEYS", `[{"kty":"RSA","kid":"a"}]`, false},
		{"FLUXBASE_AUTH_JWT_KEYS", "not json", false},
		{"FLUXBASE_AUTH_EXTERNAL_URL", "api.example.com", false},
		{"FLUXBASE_AUTH_RATE_LIMIT_OTP", "x", false},
		{"FLUXBASE_AUTH_RATE_LIMIT_EMAIL_INTERVAL", "soon", false},
		{"FLUXBASE_AUTH_RATE_LIMIT_EMAIL_SENT", "-2", false},
		{"FLUXBASE_AUTH_OIDC_ISSUER", "accounts.example.com", false},
		{"FLUXBASE_AUTH_ACCESS_TOKEN_HOOK", "public.hook(); drop table x", false},
		{"FLUXBASE_AUTH_RATE_LIMIT_TOKEN", "-1", false},
		{"FLUXBASE_AUTH_RATE_LIMIT_SIGNUP", "lots", false},
		{"FLUXBASE_AUTH_RATE_LIMIT_HEADER", "X Forwarded", false},
	}
	for _, tt := range tests {
		t.Run(tt.name+"="+tt.value, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{}
			if !tt.dev {
				for k, v := range validServeEnv {
					env[k] = v
				}
			}
			env[tt.name] = tt.value
			mode := Serve
			if tt.dev {
				mode = Dev
			}
			_, err := FromEnv(envOf(env), mode)
			var ce *configError
			if !errors.As(err, &ce) {
				t.Fatalf("accepted (err %v)", err)
			}
			msg := err.Error()
			if ce.name != tt.name || !strings.HasPrefix(msg, tt.name) || strings.Contains(msg, "\n") {
				t.Fatalf("error %q does not name %s on one line", msg, tt.name)
			}
		})
	}
	t.Run("S3 needs endpoint and bucket", func(t *testing.T) {
		t.Parallel()
		env := map[string]string{"FLUXBASE_STORAGE_PROVIDER": "s3"}
		for k, v := range validServeEnv {
			env[k] = v
		}
		if _, err := FromEnv(envOf(env), Serve); err == nil || !strings.HasPrefix(err.Error(), "FLUXBASE_STORAGE_S3_ENDPOINT") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("SMTP needs a sender", func(t *testing.T) {
		t.Parallel()
		env := map[string]string{"FLUXBASE_SMTP_HOST": "mail.internal"}
		for k, v := range validServeEnv {
			env[k] = v
		}
		if _, err := FromEnv(envOf(env), Serve); err == nil || !strings.HasPrefix(err.Error(), "FLUXBASE_SMTP_SENDER") {
			t.Fatalf("err %v", err)
		}
		env["FLUXBASE_SMTP_SENDER"] = "auth@example.com"
		env["FLUXBASE_SMTP_PORT"] = "2525"
		c, err := FromEnv(envOf(env), Serve)
		if err != nil || c.Auth.Mailer.(*auth.SMTPMailer).Port != 2525 {
			t.Fatalf("smtp: %+v %v", c.Auth.Mailer, err)
		}
	})
	t.Run("passwords never echoed", func(t *testing.T) {
		t.Parallel()
		_, err := FromEnv(envOf(map[string]string{"DATABASE_URL": "mysql://u:hunter2@h/db"}), Dev)
		if err == nil || strings.Contains(err.Error(), "hunter2") {
			t.Fatalf("err %v", err)
		}
	})
}

func TestReplicaURL(t *testing.T) {
	const primary = "postgres://app:secret@db1:5432/app?sslmode=disable"
	for replica, want := range map[string]string{
		"db2:5433":                    "postgres://app:secret@db2:5433/app?sslmode=disable",
		"[::1]:5432":                  "postgres://app:secret@[::1]:5432/app?sslmode=disable",
		"postgres://ro@db3:5432/app":  "postgres://ro@db3:5432/app",
		"postgresql://ro@db4/app?x=1": "postgresql://ro@db4/app?x=1",
	} {
		if got := replicaURL(primary, replica); got != want {
			t.Errorf("replicaURL(%q) = %q, want %q", replica, got, want)
		}
	}
}

// The realtime limits and the descriptor reserve have safe defaults and
// take the values given.
func TestConfigRealtimeLimits(t *testing.T) {
	t.Parallel()
	c, err := FromEnv(envOf(validServeEnv), Serve)
	if err != nil {
		t.Fatal(err)
	}
	l := c.RealtimeLimits
	if l.MaxConnections != 0 || l.MaxChannelsPerClient != 100 || l.MaxBindingsPerJoin != 100 || l.MaxPresenceBytes != 16<<10 ||
		l.JoinsPerSecond != 100 || l.EventsPerSecond != 100 || c.Realtime.MaxResumeChanges != 10000 || c.Realtime.ResumeParallel != 2 ||
		c.HTTP.FDReserve != 0 || c.Replication.SlotName != "fluxbase" {
		t.Fatalf("defaults: %+v, hub %+v, reserve %d, slot %q", l, c.Realtime, c.HTTP.FDReserve, c.Replication.SlotName)
	}
	env := map[string]string{
		"FLUXBASE_FD_RESERVE":                       "2048",
		"FLUXBASE_REALTIME_MAX_CONNECTIONS":         "5000",
		"FLUXBASE_REALTIME_MAX_CHANNELS_PER_CLIENT": "10",
		"FLUXBASE_REALTIME_MAX_BINDINGS_PER_JOIN":   "20",
		"FLUXBASE_REALTIME_MAX_PRESENCE_BYTES":      "4KB",
		"FLUXBASE_REALTIME_MAX_JOINS_PER_SECOND":    "5",
		"FLUXBASE_REALTIME_MAX_EVENTS_PER_SECOND":   "50",
		"FLUXBASE_REALTIME_MAX_RESUME_CHANGES":      "1000",
		"FLUXBASE_REALTIME_RESUME_PARALLEL":         "8",
		"FLUXBASE_REPLICATION_SLOT":                 "app_2",
	}
	for k, v := range validServeEnv {
		env[k] = v
	}
	if c, err = FromEnv(envOf(env), Serve); err != nil {
		t.Fatal(err)
	}
	l = c.RealtimeLimits
	if l.MaxConnections != 5000 || l.MaxChannelsPerClient != 10 || l.MaxBindingsPerJoin != 20 || l.MaxPresenceBytes != 4<<10 ||
		l.JoinsPerSecond != 5 || l.EventsPerSecond != 50 || c.Realtime.MaxResumeChanges != 1000 || c.Realtime.ResumeParallel != 8 ||
		c.HTTP.FDReserve != 2048 || c.Replication.SlotName != "app_2" {
		t.Fatalf("parsed: %+v, hub %+v, reserve %d, slot %q", l, c.Realtime, c.HTTP.FDReserve, c.Replication.SlotName)
	}
}
