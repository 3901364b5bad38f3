package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oauth2-proxy/mockoidc"

	"github.com/fluxbase/fluxbase/auth"
	"github.com/fluxbase/fluxbase/internal/mailpit"
	"github.com/fluxbase/fluxbase/node"
)

// authCall sends a JSON request with the anon key (and a bearer token
// when given) and decodes the JSON answer, if any.
func authCall(t *testing.T, method, url, bearer string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		raw, _ := json.Marshal(body)
		rd = bytes.NewReader(raw)
	}
	req, _ := http.NewRequest(method, url, rd)
	anon, _ := auth.APIKey(jwtSecret, auth.RoleAnon)
	req.Header.Set("apikey", anon)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Supabase-Api-Version", "2024-01-01")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return resp.StatusCode, out
}

// Signing out on node A makes the session's access token refused by node
// B's REST and closes its realtime channel on node B, long before the
// token's exp: the revocation travels through the broker and each node
// holds it in memory. The delay is measured and printed, not asserted.
func TestAuthRevocationReachesEveryNode(t *testing.T) {
	t.Parallel()
	c := startCluster(t, `
create table public.auth_notes (id bigserial primary key, owner uuid not null default auth.uid(), body text);
alter table public.auth_notes enable row level security;
create policy own on public.auth_notes to authenticated using (owner = auth.uid()) with check (owner = auth.uid());
grant select, insert on public.auth_notes to authenticated;
grant usage on sequence public.auth_notes_id_seq to authenticated;`)
	status, sess := authCall(t, "POST", c.a+"/auth/v1/signup", "", map[string]any{"email": "rev@example.com", "password": "secret-pass"})
	if status != 200 || sess["access_token"] == nil {
		t.Fatalf("signup on A: %d %v", status, sess)
	}
	token := sess["access_token"].(string)
	uid := sess["user"].(map[string]any)["id"].(string)

	status, _ = authCall(t, "POST", c.b+"/rest/v1/auth_notes", token, map[string]any{"body": "mine"})
	if status != 201 {
		t.Fatalf("insert on B under auth.uid(): %d", status)
	}
	var owner string
	if err := c.db.QueryRow(t.Context(), `select owner::text from public.auth_notes`).Scan(&owner); err != nil || owner != uid {
		t.Fatalf("row owner %q, want %q (%v)", owner, uid, err)
	}
	rt := dial(t, c.b, mustAnon(t))
	rt.mustJoin("realtime:auth_notes", changes("auth_notes"), token)

	status, _ = authCall(t, "POST", c.a+"/auth/v1/logout?scope=local", token, nil)
	if status != 204 {
		t.Fatalf("logout on A: %d", status)
	}
	signedOut := time.Now()
	deadline := signedOut.Add(30 * time.Second)
	var body map[string]any
	for {
		status, body = authCall(t, "GET", c.b+"/rest/v1/auth_notes", token, nil)
		if status == 401 || time.Now().After(deadline) {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	restDelay := time.Since(signedOut)
	if status != 401 || body["code"] != "FB006" {
		t.Fatalf("node B still serves the signed-out token after %v: %d %v", restDelay, status, body)
	}
	sys := rt.expect("the channel's close", func(m *msg) bool { return m.Event == "system" && m.Payload["status"] == "error" })
	closeDelay := time.Since(signedOut)
	if sys.Payload["message"] != "InvalidJWTToken: Token has been revoked" {
		t.Fatalf("system message %s", sys.Raw)
	}
	rt.expect("phx_close", func(m *msg) bool { return m.Event == "phx_close" && m.Topic == "realtime:auth_notes" })
	t.Logf("signed out on A: node B's REST refused the token after %v (at most); its realtime channel closed after %v (at most)",
		restDelay, closeDelay)

	// The token stays refused everywhere, and its refresh token is gone.
	if status, _ := authCall(t, "GET", c.a+"/auth/v1/user", token, nil); status != 403 {
		t.Fatalf("GET /user on A with the signed-out token: %d", status)
	}
	status, body = authCall(t, "POST", c.b+"/auth/v1/token?grant_type=refresh_token", "", map[string]any{"refresh_token": sess["refresh_token"]})
	if status != 400 || body["code"] != "refresh_token_not_found" {
		t.Fatalf("refresh after sign-out: %d %v", status, body)
	}
	// A new sign-in works on either node.
	status, again := authCall(t, "POST", c.b+"/auth/v1/token?grant_type=password", "", map[string]any{"email": "rev@example.com", "password": "secret-pass"})
	if status != 200 {
		t.Fatalf("sign in on B: %d %v", status, again)
	}
	if status, _ := authCall(t, "GET", c.a+"/rest/v1/auth_notes", again["access_token"].(string), nil); status != 200 {
		t.Fatalf("the new session on A: %d", status)
	}
}

func mustAnon(t *testing.T) string {
	t.Helper()
	k, err := auth.APIKey(jwtSecret, auth.RoleAnon)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// The per-IP limit is one count shared by the nodes: requests hammering
// both at once are admitted at most N + 1 times in all, the rest get 429
// over_request_rate_limit with Retry-After.
func TestAuthRateLimitSharedByNodes(t *testing.T) {
	t.Parallel()
	const limit, requests = 5, 24
	c := startClusterWith(t, "", func(_ int, cfg *node.Config) {
		cfg.Auth.RateLimitSignup = limit
		cfg.Auth.RateLimitWindow = time.Hour
	})
	type result struct {
		status int
		retry  string
		body   map[string]any
	}
	results := make(chan result, requests)
	var wg sync.WaitGroup
	for i := range requests {
		base := c.a
		if i%2 == 1 {
			base = c.b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("POST", base+"/auth/v1/signup", bytes.NewReader([]byte(`{"email":"not-an-address"}`)))
			req.Header.Set("apikey", mustAnon(t))
			req.Header.Set("X-Supabase-Api-Version", "2024-01-01")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			var body map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&body)
			results <- result{resp.StatusCode, resp.Header.Get("Retry-After"), body}
		}()
	}
	wg.Wait()
	close(results)
	admitted, refused := 0, 0
	for r := range results {
		switch r.status {
		case 429:
			refused++
			if r.body["code"] != "over_request_rate_limit" || r.retry == "" || r.retry == "0" {
				t.Fatalf("429 without GoTrue's code or Retry-After: %q %v", r.retry, r.body)
			}
		case 400:
			admitted++ // counted, then refused for the address
		default:
			t.Fatalf("status %d: %v", r.status, r.body)
		}
	}
	t.Logf("limit %d: %d of %d admitted across two nodes, %d refused", limit, admitted, requests, refused)
	if admitted > limit+1 || admitted < limit || admitted+refused != requests {
		t.Fatalf("admitted %d, refused %d; want %d (at most %d)", admitted, refused, limit, limit+1)
	}
}

// With an ES256 signing key, user tokens carry its kid, every node
// verifies them (REST and realtime), and the public key is published.
func TestAuthES256Keys(t *testing.T) {
	t.Parallel()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := key.PublicKey.Bytes()
	d, _ := key.Bytes()
	enc := base64.RawURLEncoding.EncodeToString
	jwks := fmt.Sprintf(`[{"kty":"EC","crv":"P-256","kid":"e2e-1","x":%q,"y":%q,"d":%q,"key_ops":["sign","verify"]}]`,
		enc(pub[1:33]), enc(pub[33:]), enc(d))
	ks, err := auth.ParseKeySet(jwks)
	if err != nil {
		t.Fatal(err)
	}
	c := startClusterWith(t, `create table public.es_items (id int primary key);
		grant select on public.es_items to authenticated;`, func(_ int, cfg *node.Config) { cfg.Auth.JWTKeys = ks })
	status, sess := authCall(t, "POST", c.a+"/auth/v1/signup", "", map[string]any{"email": "es@example.com", "password": "secret-pass"})
	if status != 200 {
		t.Fatalf("signup: %d %v", status, sess)
	}
	token := sess["access_token"].(string)
	header, _ := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[0])
	if !strings.Contains(string(header), `"alg":"ES256"`) || !strings.Contains(string(header), `"kid":"e2e-1"`) {
		t.Fatalf("token header %s", header)
	}
	if status, _ := authCall(t, "GET", c.b+"/rest/v1/es_items", token, nil); status != 200 {
		t.Fatalf("node B's REST with the ES256 token: %d", status)
	}
	rt := dial(t, c.b, mustAnon(t))
	rt.mustJoin("realtime:es", map[string]any{}, token)
	status, body := authCall(t, "GET", c.b+"/auth/v1/.well-known/jwks.json", "", nil)
	keys, _ := body["keys"].([]any)
	if status != 200 || len(keys) != 1 || keys[0].(map[string]any)["kid"] != "e2e-1" || keys[0].(map[string]any)["d"] != nil {
		t.Fatalf("jwks: %d %v", status, body)
	}
}

// Mail through a real SMTP server: a sign-up's confirmation link, opened
// on the other node by a browser (no key), redirects to the site with
// the session in the fragment; recovery and OTP codes verify over POST.
func TestAuthMailLinks(t *testing.T) {
	t.Parallel()
	mp := mailpit.Start(t)
	c := startClusterWith(t, "", func(_ int, cfg *node.Config) {
		cfg.Auth.Autoconfirm = false
		cfg.Auth.SiteURL = "https://app.example.com"
		cfg.Auth.Mailer = &auth.SMTPMailer{Host: "127.0.0.1", Port: mp.SMTPPort, From: "auth@example.com"}
		cfg.Auth.ExternalURL = "http://api.example.com"
	})
	status, body := authCall(t, "POST", c.a+"/auth/v1/signup", "", map[string]any{"email": "link@example.com", "password": "secret-pass"})
	if status != 200 || body["access_token"] != nil || body["confirmation_sent_at"] == nil {
		t.Fatalf("signup: %d %v", status, body)
	}
	status, body = authCall(t, "POST", c.b+"/auth/v1/token?grant_type=password", "", map[string]any{"email": "link@example.com", "password": "secret-pass"})
	if status != 400 || body["code"] != "email_not_confirmed" {
		t.Fatalf("sign-in before confirming: %d %v", status, body)
	}
	link := linkIn(t, mp.Last(t, "link@example.com").Text)
	if !strings.HasPrefix(link, "http://api.example.com/auth/v1/verify?") {
		t.Fatalf("link %s", link)
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get(c.b + strings.TrimPrefix(link, "http://api.example.com"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "https://app.example.com#") {
		t.Fatalf("link answered %d, Location %q", resp.StatusCode, loc)
	}
	frag, _ := url.ParseQuery(strings.SplitN(loc, "#", 2)[1])
	if frag.Get("type") != "signup" || frag.Get("refresh_token") == "" {
		t.Fatalf("fragment %v", frag)
	}
	if status, _ := authCall(t, "GET", c.a+"/auth/v1/user", frag.Get("access_token"), nil); status != 200 {
		t.Fatalf("the link's session on A: %d", status)
	}
	// The link works once.
	resp, err = noRedirect.Get(c.a + strings.TrimPrefix(link, "http://api.example.com"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); !strings.Contains(loc, "error_code=otp_expired") {
		t.Fatalf("second use: %q", loc)
	}

	// Recovery: {} for anyone; the code verifies on the other node.
	for _, addr := range []string{"link@example.com", "nobody@example.com"} {
		if status, body := authCall(t, "POST", c.a+"/auth/v1/recover", "", map[string]any{"email": addr}); status != 200 || len(body) != 0 {
			t.Fatalf("recover %s: %d %v", addr, status, body)
		}
	}
	code := codeIn(t, mp.Last(t, "link@example.com").Text)
	status, body = authCall(t, "POST", c.b+"/auth/v1/verify", "", map[string]any{"type": "recovery", "email": "link@example.com", "token": code})
	if status != 200 || body["access_token"] == nil {
		t.Fatalf("verify recovery: %d %v", status, body)
	}
	status, body = authCall(t, "POST", c.b+"/auth/v1/verify", "", map[string]any{"type": "recovery", "email": "link@example.com", "token": code})
	if status != 403 || body["code"] != "otp_expired" {
		t.Fatalf("a used code: %d %v", status, body)
	}
	status, body = authCall(t, "POST", c.a+"/auth/v1/otp", "", map[string]any{"email": "stranger@example.com", "create_user": false})
	if status != 422 || body["code"] != "otp_disabled" {
		t.Fatalf("otp without create_user: %d %v", status, body)
	}
	if mp.Count(t, "nobody@example.com")+mp.Count(t, "stranger@example.com") != 0 {
		t.Fatal("mail went to an unknown address")
	}

	// PKCE: the magic link answers ?code=, which only the verifier of
	// the challenge exchanges, once.
	verifier := strings.Repeat("v3rifier-", 6)
	sum := sha256.Sum256([]byte(verifier))
	status, body = authCall(t, "POST", c.a+"/auth/v1/otp?redirect_to="+url.QueryEscape("https://app.example.com/welcome"), "",
		map[string]any{"email": "link@example.com", "code_challenge": base64.RawURLEncoding.EncodeToString(sum[:]), "code_challenge_method": "s256"})
	if status != 200 {
		t.Fatalf("otp with a challenge: %d %v", status, body)
	}
	link = linkIn(t, mp.Last(t, "link@example.com").Text)
	resp, err = noRedirect.Get(c.b + strings.TrimPrefix(link, "http://api.example.com"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc = resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "https://app.example.com/welcome?code=") {
		t.Fatalf("PKCE link: %d %q", resp.StatusCode, loc)
	}
	authCode := strings.TrimPrefix(loc, "https://app.example.com/welcome?code=")
	status, body = authCall(t, "POST", c.a+"/auth/v1/token?grant_type=pkce", "", map[string]any{"auth_code": authCode, "code_verifier": verifier + "x"})
	if status != 400 || body["code"] != "bad_code_verifier" {
		t.Fatalf("wrong verifier: %d %v", status, body)
	}
	status, body = authCall(t, "POST", c.a+"/auth/v1/token?grant_type=pkce", "", map[string]any{"auth_code": authCode, "code_verifier": verifier})
	if status != 200 || body["access_token"] == nil {
		t.Fatalf("exchange: %d %v", status, body)
	}
	status, body = authCall(t, "POST", c.b+"/auth/v1/token?grant_type=pkce", "", map[string]any{"auth_code": authCode, "code_verifier": verifier})
	if status != 404 || body["code"] != "flow_state_not_found" {
		t.Fatalf("second exchange: %d %v", status, body)
	}
}

func linkIn(t *testing.T, text string) string {
	t.Helper()
	m := regexp.MustCompile(`(http\S+/auth/v1/verify\?\S+)`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no link in %q", text)
	}
	return m[1]
}

func codeIn(t *testing.T, text string) string {
	t.Helper()
	m := regexp.MustCompile(`code: (\d{6})`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no code in %q", text)
	}
	return m[1]
}

// OpenID Connect sign-in against a real local provider (mockoidc): the
// browser goes to the provider and back through the other node; a
// verified address links the identity to the user who has it, an
// unverified one does not.
func TestAuthOIDCSignIn(t *testing.T) {
	t.Parallel()
	m, err := mockoidc.Run()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Shutdown() })
	const api = "http://fluxbase.test"
	c := startClusterWith(t, "", func(_ int, cfg *node.Config) {
		cfg.Auth.SiteURL = "https://app.example.com"
		cfg.Auth.ExternalURL = api
		cfg.Auth.OIDC = &auth.OIDCConfig{Issuer: m.Issuer(), ClientID: m.ClientID, ClientSecret: m.ClientSecret}
	})
	service, _ := auth.APIKey(jwtSecret, auth.RoleServiceRole)
	req, _ := http.NewRequest("POST", c.a+"/auth/v1/admin/users", strings.NewReader(`{"email":"oidc@example.com","password":"secret-pass","email_confirm":true}`))
	req.Header.Set("apikey", service)
	req.Header.Set("Authorization", "Bearer "+service)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var existing map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&existing)
	resp.Body.Close()

	browser := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	hop := func(u string, want int) string {
		t.Helper()
		resp, err := browser.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("GET %s: %d, want %d", u, resp.StatusCode, want)
		}
		return resp.Header.Get("Location")
	}
	signIn := func(user *mockoidc.MockUser) url.Values {
		t.Helper()
		m.QueueUser(user)
		toProvider := hop(c.a+"/auth/v1/authorize?provider=oidc&redirect_to="+url.QueryEscape("https://app.example.com/in"), http.StatusFound)
		back := hop(toProvider, http.StatusFound)
		if !strings.HasPrefix(back, api+"/auth/v1/callback?") {
			t.Fatalf("provider sent the browser to %s", back)
		}
		landed := hop(c.b+strings.TrimPrefix(back, api), http.StatusSeeOther)
		if !strings.HasPrefix(landed, "https://app.example.com/in#") {
			t.Fatalf("landed on %s", landed)
		}
		frag, _ := url.ParseQuery(strings.SplitN(landed, "#", 2)[1])
		return frag
	}
	frag := signIn(&mockoidc.MockUser{Subject: "sub-verified", Email: "oidc@example.com", EmailVerified: true})
	status, u := authCall(t, "GET", c.a+"/auth/v1/user", frag.Get("access_token"), nil)
	if status != 200 || u["id"] != existing["id"] {
		t.Fatalf("verified address: user %v, want the existing %v", u["id"], existing["id"])
	}
	providers := fmt.Sprint(u["app_metadata"].(map[string]any)["providers"])
	if len(u["identities"].([]any)) != 2 || !strings.Contains(providers, "oidc") || !strings.Contains(providers, "email") {
		t.Fatalf("identities %v, providers %s", u["identities"], providers)
	}
	// The same subject again is the same user.
	again := signIn(&mockoidc.MockUser{Subject: "sub-verified", Email: "oidc@example.com", EmailVerified: true})
	if _, u2 := authCall(t, "GET", c.b+"/auth/v1/user", again.Get("access_token"), nil); u2["id"] != existing["id"] {
		t.Fatalf("second sign-in: %v", u2["id"])
	}
	other := signIn(&mockoidc.MockUser{Subject: "sub-unverified", Email: "oidc@example.com", EmailVerified: false})
	if _, u3 := authCall(t, "GET", c.a+"/auth/v1/user", other.Get("access_token"), nil); u3["id"] == existing["id"] || u3["id"] == nil {
		t.Fatalf("an unverified address was linked: %v", u3["id"])
	}
	status, body := authCall(t, "GET", c.a+"/auth/v1/callback?code=x&state=forged", "", nil)
	if status != 400 || body["code"] != "bad_oauth_state" {
		t.Fatalf("forged state: %d %v", status, body)
	}
	status, body = authCall(t, "GET", c.a+"/auth/v1/authorize?provider=github", "", nil)
	if status != 400 || body["code"] != "validation_failed" {
		t.Fatalf("unknown provider: %d %v", status, body)
	}
}
