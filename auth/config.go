package auth

import (
	"runtime"
	"strings"
	"time"
)

// Config is the auth subsystem's configuration. Zero values mean the
// defaults, which are GoTrue's unless said otherwise.
type Config struct {
	// JWTSecret signs and verifies every token (FLUXBASE_JWT_SECRET); at
	// least MinSecretLength characters.
	JWTSecret string

	// JWTKeys are asymmetric keys (FLUXBASE_AUTH_JWT_KEYS): with a
	// signing key, user tokens are ES256 with its kid; every key of the
	// set verifies. Nil signs and verifies with JWTSecret alone.
	JWTKeys *KeySet

	// AccessTokenHook names a SQL function ("schema.function") that
	// receives {user_id, claims, authentication_method} as jsonb before
	// each access token is signed and returns {claims} to sign instead,
	// as Supabase's custom access token hook does. Empty calls none.
	AccessTokenHook string

	// Mailer sends confirmation, recovery and magic-link mail
	// (FLUXBASE_SMTP_*); nil sends none, and the flows that need mail
	// answer email_provider_disabled.
	Mailer Mailer
	// MailLimiter, when set, bounds mail through the shared counters:
	// one mail per address per MailInterval (60 s) and MailPerHour (30)
	// in all. 0 turns a bound off.
	MailLimiter  *RateLimiter
	MailInterval time.Duration
	MailPerHour  int
	// ExternalURL is the API's public base URL, for the links in mail.
	// Default http://localhost:8080.
	ExternalURL string

	// OIDC is a generic OpenID Connect provider to sign in with; nil for
	// none.
	OIDC *OIDCConfig

	// SiteURL is the app's URL, reported by /settings; redirects default to it.
	SiteURL string
	// Issuer is the access tokens' iss claim. Default "fluxbase".
	Issuer string
	// AccessTokenTTL is how long an access token lives. Default 1 h.
	AccessTokenTTL time.Duration
	// RefreshReuseInterval is how long a rotated refresh token may still
	// be presented (two tabs refreshing at once) before its reuse counts
	// as theft and ends the session. 0 allows no reuse (GoTrue's default);
	// the node's default is 10 s, Supabase's.
	RefreshReuseInterval time.Duration
	// SessionTimebox ends every session this long after sign-in; 0 never.
	SessionTimebox time.Duration

	// BcryptCost is the cost of new password hashes. Default 10.
	BcryptCost int
	// HashWorkers bounds the bcrypt computations running at once, so a
	// flood of sign-ins queues instead of taking every core from the other
	// requests. Default GOMAXPROCS.
	HashWorkers int
	// MinPasswordLength is the shortest password accepted. Default 6.
	MinPasswordLength int

	// DisableSignup refuses POST /signup (admins may still create users).
	DisableSignup bool
	// Autoconfirm confirms new addresses at sign-up, which then returns a
	// session. The node defaults it to true while no mailer exists to send
	// confirmation links.
	Autoconfirm bool
	// AnonymousUsers allows anonymous sign-ins (POST /signup without an
	// address).
	AnonymousUsers bool

	// RateLimitWindow is the window of the per-IP limits below, counted
	// by all nodes together. Default 5 min.
	RateLimitWindow time.Duration
	// RateLimitToken bounds POST /token per IP and window (GoTrue's
	// default 150); RateLimitSignup POST /signup (30). 0 is no limit.
	RateLimitToken, RateLimitSignup int
	// RateLimitOTP bounds POST /otp, /recover and /verify together per
	// IP and window (30). 0 is no limit.
	RateLimitOTP int
	// RateLimitHeader names the header holding the client's address
	// (X-Forwarded-For behind a proxy, its first entry); empty uses the
	// connection's address.
	RateLimitHeader string
}

// withDefaults fills in the zero values.
func (c Config) withDefaults() Config {
	if c.Issuer == "" {
		c.Issuer = "fluxbase"
	}
	if c.AccessTokenTTL <= 0 {
		c.AccessTokenTTL = time.Hour
	}
	if c.BcryptCost == 0 {
		c.BcryptCost = 10
	}
	if c.HashWorkers <= 0 {
		c.HashWorkers = runtime.GOMAXPROCS(0)
	}
	if c.ExternalURL == "" {
		c.ExternalURL = "http://localhost:8080"
	}
	c.ExternalURL = strings.TrimSuffix(c.ExternalURL, "/")
	if c.RateLimitWindow <= 0 {
		c.RateLimitWindow = 5 * time.Minute
	}
	if c.MinPasswordLength <= 0 {
		c.MinPasswordLength = 6
	}
	return c
}
