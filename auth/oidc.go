package auth

import (
	"context"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5"
)

// OIDCConfig is one generic OpenID Connect provider
// (FLUXBASE_AUTH_OIDC_*): users sign in at the issuer and come back to
// /auth/v1/callback.
type OIDCConfig struct {
	// Name is the provider's name in /authorize?provider= and in
	// identities. Default "oidc".
	Name                           string
	Issuer, ClientID, ClientSecret string
}

// CodeOAuthFailed is the code of a failed provider sign-in.
const CodeOAuthFailed ErrorCode = "oauth_provider_failed"

// oidcProvider talks to the issuer: discovery, the code exchange, the ID
// token's keys. Discovery and keys are fetched once and kept.
type oidcProvider struct {
	cfg    OIDCConfig
	client *http.Client

	mu        sync.Mutex
	discovery *oidcDiscovery
	keys      map[string]*rsa.PublicKey
}

type oidcDiscovery struct {
	Issuer                string `json:"issuer"`
	AuthorizationEndpoint string `json:"authorization_endpoint"`
	TokenEndpoint         string `json:"token_endpoint"`
	JWKSURI               string `json:"jwks_uri"`
}

func (p *oidcProvider) getJSON(ctx context.Context, u string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 1<<20)).Decode(v)
}

func (p *oidcProvider) discover(ctx context.Context) (*oidcDiscovery, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.discovery != nil {
		return p.discovery, nil
	}
	var d oidcDiscovery
	if err := p.getJSON(ctx, strings.TrimSuffix(p.cfg.Issuer, "/")+"/.well-known/openid-configuration", &d); err != nil {
		return nil, fmt.Errorf("oidc discovery: %w", err)
	}
	if d.AuthorizationEndpoint == "" || d.TokenEndpoint == "" || d.JWKSURI == "" {
		return nil, errors.New("oidc discovery: endpoints missing")
	}
	p.discovery = &d
	return &d, nil
}

// key returns the issuer's RSA key kid, fetching the key set again when
// it is unknown (the issuer rotated).
func (p *oidcProvider) key(ctx context.Context, kid string) (*rsa.PublicKey, error) {
	d, err := p.discover(ctx)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	k := p.keys[kid]
	p.mu.Unlock()
	if k != nil {
		return k, nil
	}
	var set struct {
		Keys []struct {
			KTY, KID, N, E string
		} `json:"keys"`
	}
	if err := p.getJSON(ctx, d.JWKSURI, &set); err != nil {
		return nil, fmt.Errorf("oidc keys: %w", err)
	}
	keys := map[string]*rsa.PublicKey{}
	for _, jk := range set.Keys {
		n, err1 := base64.RawURLEncoding.DecodeString(jk.N)
		e, err2 := base64.RawURLEncoding.DecodeString(jk.E)
		if jk.KTY != "RSA" || err1 != nil || err2 != nil || len(e) > 4 {
			continue
		}
		keys[jk.KID] = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
	}
	p.mu.Lock()
	p.keys = keys
	p.mu.Unlock()
	if k := keys[kid]; k != nil {
		return k, nil
	}
	return nil, fmt.Errorf("oidc: no key %q", kid)
}

// OIDCUser is who the issuer says signed in.
type OIDCUser struct {
	Subject, Email string
	EmailVerified  bool
	Claims         map[string]any
}

// exchange trades the code for the ID token and verifies it: RS256 by
// the issuer's key, its issuer, audience, expiry and nonce.
func (p *oidcProvider) exchange(ctx context.Context, code, redirectURI, nonce string) (*OIDCUser, error) {
	d, err := p.discover(ctx)
	if err != nil {
		return nil, err
	}
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirectURI},
		"client_id": {p.cfg.ClientID}, "client_secret": {p.cfg.ClientSecret}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.TokenEndpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("oidc token: %w", err)
	}
	defer resp.Body.Close()
	var tr struct {
		IDToken string `json:"id_token"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 1<<20)).Decode(&tr) != nil || tr.IDToken == "" {
		return nil, fail(CodeOAuthFailed, "The provider refused the code (%s)", resp.Status)
	}
	var mc jwt.MapClaims
	parser := jwt.NewParser(jwt.WithValidMethods([]string{"RS256"}), jwt.WithIssuer(d.Issuer),
		jwt.WithAudience(p.cfg.ClientID), jwt.WithExpirationRequired(), jwt.WithLeeway(time.Minute))
	if _, err := parser.ParseWithClaims(tr.IDToken, &mc, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		return p.key(ctx, kid)
	}); err != nil {
		return nil, fail(CodeOAuthFailed, "The provider's ID token does not verify: %v", err)
	}
	if n, _ := mc["nonce"].(string); n != nonce {
		return nil, fail(CodeOAuthFailed, "The provider's ID token has another nonce")
	}
	u := &OIDCUser{Claims: mc}
	u.Subject, _ = mc["sub"].(string)
	u.Email, _ = mc["email"].(string)
	u.EmailVerified, _ = mc["email_verified"].(bool)
	if u.Subject == "" {
		return nil, fail(CodeOAuthFailed, "The provider's ID token has no subject")
	}
	return u, nil
}

// OIDCName is the configured provider's name, "" when none is.
func (s *Service) OIDCName() string {
	if s.oidc == nil {
		return ""
	}
	return s.oidc.cfg.Name
}

type oauthState struct {
	Provider   string `json:"provider"`
	RedirectTo string `json:"redirect_to"`
	Nonce      string `json:"nonce"`
	jwt.RegisteredClaims
}

// AuthorizeURL is where /authorize sends the browser: the issuer's
// authorization endpoint with a signed state (the landing page and a
// nonce, good for ten minutes).
func (s *Service) AuthorizeURL(ctx context.Context, provider, redirectTo string) (string, error) {
	if s.oidc == nil || provider != s.oidc.cfg.Name {
		return "", fail(CodeValidationFailed, "Unsupported provider: provider is not enabled")
	}
	d, err := s.oidc.discover(ctx)
	if err != nil {
		return "", err
	}
	now := s.now()
	st := oauthState{Provider: provider, RedirectTo: s.redirect(redirectTo), Nonce: randomToken(16),
		RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(now.Add(10 * time.Minute)), Audience: jwt.ClaimStrings{"oauth_state"}}}
	state, err := jwt.NewWithClaims(jwt.SigningMethodHS256, st).SignedString([]byte(s.cfg.JWTSecret))
	if err != nil {
		return "", err
	}
	q := url.Values{"client_id": {s.oidc.cfg.ClientID}, "response_type": {"code"}, "scope": {"openid email profile"},
		"redirect_uri": {s.callbackURL()}, "state": {state}, "nonce": {st.Nonce}}
	return d.AuthorizationEndpoint + "?" + q.Encode(), nil
}

func (s *Service) callbackURL() string { return s.cfg.ExternalURL + "/auth/v1/callback" }

// Callback finishes a provider sign-in: it checks the state, exchanges
// the code, and signs in the identity — linked to an existing user with
// the same address only when the provider verified it, else a new user.
// It returns the session and where to send the browser.
func (s *Service) Callback(ctx context.Context, code, state string, meta RequestMeta) (*Session, string, error) {
	if s.oidc == nil {
		return nil, "", fail(CodeValidationFailed, "Unsupported provider: provider is not enabled")
	}
	var st oauthState
	if _, err := jwt.NewParser(jwt.WithValidMethods([]string{"HS256"}), jwt.WithAudience("oauth_state"), jwt.WithExpirationRequired()).
		ParseWithClaims(state, &st, func(*jwt.Token) (any, error) { return []byte(s.cfg.JWTSecret), nil }); err != nil || st.Provider != s.oidc.cfg.Name {
		return nil, "", fail(CodeBadOAuthState, "OAuth state is invalid or has expired")
	}
	ou, err := s.oidc.exchange(ctx, code, s.callbackURL(), st.Nonce)
	if err != nil {
		return nil, st.RedirectTo, err
	}
	sess, err := s.signInIdentity(ctx, st.Provider, ou, meta)
	return sess, st.RedirectTo, err
}

// CodeBadOAuthState refuses a callback whose state is not ours.
const CodeBadOAuthState ErrorCode = "bad_oauth_state"

func (s *Service) signInIdentity(ctx context.Context, provider string, ou *OIDCUser, meta RequestMeta) (*Session, error) {
	email := ""
	if ou.Email != "" {
		if norm, err := NormalizeEmail(ou.Email); err == nil {
			email = norm
		}
	}
	data := map[string]any{"sub": ou.Subject, "email": email, "email_verified": ou.EmailVerified, "iss": s.oidc.cfg.Issuer}
	for _, k := range []string{"name", "preferred_username", "picture"} {
		if v, ok := ou.Claims[k]; ok {
			data[k] = v
		}
	}
	var sess *Session
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		now := s.now()
		var userID string
		err := tx.QueryRow(ctx, `update auth.identities set identity_data = $3, last_sign_in_at = $4, updated_at = $4
			where provider = $1 and provider_id = $2 returning user_id::text`, provider, ou.Subject, data, now).Scan(&userID)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			var u *User
			if email != "" && ou.EmailVerified {
				if u, err = userByEmail(ctx, tx, email); err != nil {
					return err
				}
			}
			if u == nil {
				if s.cfg.DisableSignup {
					return fail(CodeSignupDisabled, "Signups not allowed for this instance")
				}
				userID = newUUID()
				appMeta := map[string]any{"provider": provider, "providers": []string{provider}}
				if err := insertUser(ctx, tx, newUser{id: userID, role: RoleAuthenticated, appMeta: appMeta, userMeta: data,
					emailConfirmed: ou.EmailVerified}, now); err != nil {
					return err
				}
				if email != "" {
					// The address is recorded; it signs in by password only
					// once one is set. A clash with an unverified address
					// leaves it unset.
					if _, err := tx.Exec(ctx, `update auth.users set email = $2, email_confirmed_at = case when $3 then $4::timestamptz end
						where id = $1::uuid and not exists (select 1 from auth.users where lower(email) = $2)`,
						userID, email, ou.EmailVerified, now); err != nil {
						return fmt.Errorf("record email: %w", err)
					}
				}
			} else {
				userID = u.ID
				if _, err := tx.Exec(ctx, `update auth.users set raw_app_meta_data = jsonb_set(coalesce(raw_app_meta_data, '{}'), '{providers}',
					(select to_jsonb(array(select distinct p from jsonb_array_elements_text(coalesce(raw_app_meta_data->'providers', '[]')
					|| to_jsonb($2::text)) p order by p)))) where id = $1::uuid`, userID, provider); err != nil {
					return fmt.Errorf("link provider: %w", err)
				}
			}
			if _, err := tx.Exec(ctx, `insert into auth.identities (provider_id, user_id, identity_data, provider, last_sign_in_at, created_at, updated_at)
				values ($1, $2::uuid, $3, $4, $5, $5, $5)`, ou.Subject, userID, data, provider, now); err != nil {
				return fmt.Errorf("insert identity: %w", err)
			}
		case err != nil:
			return fmt.Errorf("find identity: %w", err)
		}
		if _, err := tx.Exec(ctx, `update auth.users set last_sign_in_at = $2, updated_at = $2 where id = $1::uuid`, userID, now); err != nil {
			return fmt.Errorf("sign in: %w", err)
		}
		u, err := userByID(ctx, tx, userID, false)
		if err != nil {
			return err
		}
		if u.banned(now) {
			return fail(CodeUserBanned, "User is banned")
		}
		sess, err = s.startSession(ctx, tx, u, "oauth", meta)
		return err
	})
	return sess, err
}
