package auth_test

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fluxbase/fluxbase/auth"
	"github.com/fluxbase/fluxbase/internal/apitest"
	"github.com/fluxbase/fluxbase/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// revoked records what the service revokes.
type revoked struct {
	mu  sync.Mutex
	ids []string
}

func (r *revoked) Revoke(_ context.Context, until time.Time, ids ...string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Until(until) < time.Hour {
		return errors.New("revoked for less than a token's life")
	}
	r.ids = append(r.ids, ids...)
	return nil
}

func (r *revoked) has(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Contains(r.ids, id)
}

// service is a Service on a fresh database, at the lowest bcrypt cost.
func service(t *testing.T, edit func(*auth.Config)) (*auth.Service, *pgxpool.Pool, *revoked) {
	t.Helper()
	db := apitest.NewDB(t, "")
	cfg := auth.Config{JWTSecret: apitest.Secret, BcryptCost: 4, Autoconfirm: true, AnonymousUsers: true,
		RefreshReuseInterval: 10 * time.Second}
	if edit != nil {
		edit(&cfg)
	}
	rv := &revoked{}
	s, err := auth.NewService(cfg, db, rv)
	if err != nil {
		t.Fatal(err)
	}
	return s, db, rv
}

func code(err error) auth.ErrorCode {
	if e, ok := auth.AsError(err); ok {
		return e.Code
	}
	return ""
}

func wantCode(t *testing.T, err error, want auth.ErrorCode) {
	t.Helper()
	if got := code(err); got != want {
		t.Fatalf("err = %v (code %q), want code %q", err, got, want)
	}
}

var ctx = context.Background()

// The token a session carries has Supabase's claims and verifies.
func TestSignUpIssuesSupabaseToken(t *testing.T) {
	t.Parallel()
	s, _, _ := service(t, nil)
	u, sess, err := s.SignUp(ctx, "  Ann@Example.COM ", "secret-pass", map[string]any{"name": "Ann"}, auth.RequestMeta{IP: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if u.Email != "ann@example.com" || u.EmailConfirmedAt == nil || len(u.Identities) != 1 || u.Identities[0].Provider != "email" ||
		u.Identities[0].ID != u.ID || u.AppMetadata["provider"] != "email" || u.UserMetadata["name"] != "Ann" {
		t.Fatalf("user %+v", u)
	}
	if sess == nil || sess.RefreshToken == "" || sess.ExpiresIn != 3600 || sess.TokenType != "bearer" {
		t.Fatalf("session %+v", sess)
	}
	v := apitest.Verifier(t)
	c, err := v.Verify(sess.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if c.Role != "authenticated" || c.Subject != u.ID || c.SessionID == "" {
		t.Fatalf("claims %+v", c)
	}
	for _, claim := range []string{`"aud":"authenticated"`, `"email":"ann@example.com"`, `"phone":""`, `"aal":"aal1"`,
		`"amr":[{"method":"password"`, `"is_anonymous":false`, `"app_metadata":{`, `"user_metadata":{"name":"Ann"}`, `"iat":`, `"exp":`} {
		if !strings.Contains(string(c.Raw), claim) {
			t.Errorf("claims %s lack %s", c.Raw, claim)
		}
	}
	_, _, err = s.SignUp(ctx, "ann@example.com", "another-pass", nil, auth.RequestMeta{})
	wantCode(t, err, auth.CodeUserAlreadyExists)
	_, _, err = s.SignUp(ctx, "bob@example.com", "short", nil, auth.RequestMeta{})
	wantCode(t, err, auth.CodeWeakPassword)
}

// Without autoconfirm, sign-up returns the bare user, a repeat an
// unsaved look-alike, and sign-in waits for the confirmation.
func TestSignUpUnconfirmed(t *testing.T) {
	t.Parallel()
	s, _, _ := service(t, func(c *auth.Config) { c.Autoconfirm = false })
	u, sess, err := s.SignUp(ctx, "cy@example.com", "secret-pass", nil, auth.RequestMeta{})
	if err != nil || sess != nil || u.EmailConfirmedAt != nil || len(u.Identities) != 1 {
		t.Fatalf("user %+v session %+v err %v", u, sess, err)
	}
	again, sess, err := s.SignUp(ctx, "cy@example.com", "secret-pass", nil, auth.RequestMeta{})
	if err != nil || sess != nil || again.ID == u.ID || len(again.Identities) != 0 {
		t.Fatalf("repeat: %+v %v", again, err)
	}
	_, err = s.PasswordGrant(ctx, "cy@example.com", "secret-pass", auth.RequestMeta{})
	wantCode(t, err, auth.CodeEmailNotConfirmed)
}

// An unknown address and a wrong password answer the same.
func TestPasswordGrantNoEnumeration(t *testing.T) {
	t.Parallel()
	s, _, _ := service(t, nil)
	if _, _, err := s.SignUp(ctx, "dee@example.com", "right-pass", nil, auth.RequestMeta{}); err != nil {
		t.Fatal(err)
	}
	_, wrong := s.PasswordGrant(ctx, "dee@example.com", "wrong-pass", auth.RequestMeta{})
	_, unknown := s.PasswordGrant(ctx, "nobody@example.com", "wrong-pass", auth.RequestMeta{})
	_, malformed := s.PasswordGrant(ctx, "not an address", "wrong-pass", auth.RequestMeta{})
	for _, err := range []error{wrong, unknown, malformed} {
		wantCode(t, err, auth.CodeInvalidCredentials)
		if err.Error() != wrong.Error() {
			t.Fatalf("messages differ: %q, %q", err, wrong)
		}
	}
	if _, err := s.PasswordGrant(ctx, "DEE@example.com", "right-pass", auth.RequestMeta{}); err != nil {
		t.Fatal(err)
	}
}

// A row shaped as Supabase's auth.users, with a bcrypt hash made by
// another implementation, signs in.
func TestImportedSupabaseUserSignsIn(t *testing.T) {
	t.Parallel()
	s, db, _ := service(t, nil)
	// OpenBSD's bcrypt test vector: "U*U" at cost 5, a $2a$ hash.
	const hash = "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"
	_, err := db.Exec(ctx, `
insert into auth.users (instance_id, id, aud, role, email, encrypted_password, email_confirmed_at, invited_at,
  confirmation_token, confirmation_sent_at, recovery_token, recovery_sent_at, email_change_token_new, email_change,
  email_change_sent_at, last_sign_in_at, raw_app_meta_data, raw_user_meta_data, is_super_admin, created_at, updated_at,
  phone, phone_confirmed_at, phone_change, phone_change_token, phone_change_sent_at, email_change_token_current,
  email_change_confirm_status, banned_until, reauthentication_token, reauthentication_sent_at, is_sso_user, deleted_at, is_anonymous)
values ('00000000-0000-0000-0000-000000000000', 'b1f0a3a2-1c34-4d5e-9f60-7a8b9c0d1e2f', 'authenticated', 'authenticated',
  'old@example.com', $1, '2024-01-02 03:04:05+00', null, '', '2024-01-01 00:00:00+00', '', null, '', '', null,
  '2024-05-06 07:08:09+00', '{"provider": "email", "providers": ["email"]}', '{"plan": "pro"}', null,
  '2024-01-01 00:00:00+00', '2024-05-06 07:08:09+00', null, null, '', '', null, '', 0, null, '', null, false, null, false)`, hash)
	if err != nil {
		t.Fatal(err)
	}
	_, err = db.Exec(ctx, `insert into auth.identities (provider_id, user_id, identity_data, provider, last_sign_in_at, created_at, updated_at, id)
values ('b1f0a3a2-1c34-4d5e-9f60-7a8b9c0d1e2f', 'b1f0a3a2-1c34-4d5e-9f60-7a8b9c0d1e2f',
  '{"sub": "b1f0a3a2-1c34-4d5e-9f60-7a8b9c0d1e2f", "email": "old@example.com", "email_verified": false, "phone_verified": false}',
  'email', '2024-01-01 00:00:00+00', '2024-01-01 00:00:00+00', '2024-01-01 00:00:00+00', 'c2a1b3d4-0000-4000-8000-000000000001')`)
	if err != nil {
		t.Fatal(err)
	}
	sess, err := s.PasswordGrant(ctx, "old@example.com", "U*U", auth.RequestMeta{})
	if err != nil {
		t.Fatal(err)
	}
	u := sess.User
	if u.ID != "b1f0a3a2-1c34-4d5e-9f60-7a8b9c0d1e2f" || u.UserMetadata["plan"] != "pro" || len(u.Identities) != 1 ||
		u.Identities[0].IdentityID != "c2a1b3d4-0000-4000-8000-000000000001" || u.Identities[0].Email != "old@example.com" {
		t.Fatalf("user %+v", u)
	}
	_, err = s.PasswordGrant(ctx, "old@example.com", "U*V", auth.RequestMeta{})
	wantCode(t, err, auth.CodeInvalidCredentials)
}

// Rotation as GoTrue does it: a child per refresh, the active token back
// for its parent, a sibling within the reuse interval, and the whole
// session ended by a reuse after it.
func TestRefreshRotation(t *testing.T) {
	t.Parallel()
	s, db, rv := service(t, nil)
	_, first, err := s.SignUp(ctx, "eve@example.com", "secret-pass", nil, auth.RequestMeta{})
	if err != nil {
		t.Fatal(err)
	}
	second, err := s.RefreshGrant(ctx, first.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	if second.RefreshToken == first.RefreshToken || second.User.ID != first.User.ID {
		t.Fatalf("no rotation: %+v", second)
	}
	// The parent of the active token gets the active one back.
	again, err := s.RefreshGrant(ctx, first.RefreshToken)
	if err != nil || again.RefreshToken != second.RefreshToken {
		t.Fatalf("parent again: %+v, %v", again, err)
	}
	third, err := s.RefreshGrant(ctx, second.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	// first is now a grandparent, revoked within the interval: a child.
	sibling, err := s.RefreshGrant(ctx, first.RefreshToken)
	if err != nil || sibling.RefreshToken == third.RefreshToken {
		t.Fatalf("within the interval: %+v, %v", sibling, err)
	}
	if _, err := s.RefreshGrant(ctx, sibling.RefreshToken); err != nil {
		t.Fatal(err)
	}
	// Past the interval, and no longer the active token's parent, its
	// reuse ends the session.
	if _, err := db.Exec(ctx, `update auth.refresh_tokens set updated_at = now() - interval '1 minute' where token = $1`, first.RefreshToken); err != nil {
		t.Fatal(err)
	}
	_, err = s.RefreshGrant(ctx, first.RefreshToken)
	wantCode(t, err, auth.CodeRefreshAlreadyUsed)
	sid := sessionID(t, first.AccessToken)
	if !rv.has(sid) {
		t.Fatal("the session was not revoked")
	}
	_, err = s.RefreshGrant(ctx, third.RefreshToken)
	wantCode(t, err, auth.CodeRefreshNotFound)
	_, err = s.User(ctx, first.User.ID, sid)
	wantCode(t, err, auth.CodeSessionNotFound)
	_, err = s.RefreshGrant(ctx, "no-such-token")
	wantCode(t, err, auth.CodeRefreshNotFound)
}

// Without a reuse interval any reuse ends the session; concurrent
// refreshes of one token never both rotate it.
func TestRefreshConcurrentNoInterval(t *testing.T) {
	t.Parallel()
	s, _, _ := service(t, func(c *auth.Config) { c.RefreshReuseInterval = 0 })
	_, first, err := s.SignUp(ctx, "fay@example.com", "secret-pass", nil, auth.RequestMeta{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	tokens := make([]string, 4)
	errs := make([]error, 4)
	for i := range tokens {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sess, err := s.RefreshGrant(ctx, first.RefreshToken)
			errs[i] = err
			if err == nil {
				tokens[i] = sess.RefreshToken
			}
		}()
	}
	wg.Wait()
	// Each success is the same child (the active one handed back to its
	// parent).
	var child string
	for i, tok := range tokens {
		if errs[i] != nil {
			t.Fatalf("refresh %d: %v", i, errs[i])
		}
		if child == "" {
			child = tok
		} else if tok != child {
			t.Fatalf("two children: %s, %s", child, tok)
		}
	}
}

func sessionID(t *testing.T, token string) string {
	t.Helper()
	c, err := apitest.Verifier(t).Verify(token)
	if err != nil {
		t.Fatal(err)
	}
	return c.SessionID
}

func TestLogoutScopes(t *testing.T) {
	t.Parallel()
	s, _, rv := service(t, nil)
	u, one, err := s.SignUp(ctx, "gus@example.com", "secret-pass", nil, auth.RequestMeta{})
	if err != nil {
		t.Fatal(err)
	}
	var sessions []*auth.Session
	for range 3 {
		sess, err := s.PasswordGrant(ctx, "gus@example.com", "secret-pass", auth.RequestMeta{})
		if err != nil {
			t.Fatal(err)
		}
		sessions = append(sessions, sess)
	}
	ids := []string{sessionID(t, one.AccessToken)}
	for _, sess := range sessions {
		ids = append(ids, sessionID(t, sess.AccessToken))
	}
	if err := s.Logout(ctx, u.ID, ids[0], auth.ScopeLocal); err != nil {
		t.Fatal(err)
	}
	if !rv.has(ids[0]) || rv.has(ids[1]) {
		t.Fatal("local ended the wrong sessions")
	}
	if err := s.Logout(ctx, u.ID, ids[1], auth.ScopeOthers); err != nil {
		t.Fatal(err)
	}
	if rv.has(ids[1]) || !rv.has(ids[2]) || !rv.has(ids[3]) {
		t.Fatal("others ended the wrong sessions")
	}
	if _, err := s.User(ctx, u.ID, ids[1]); err != nil {
		t.Fatalf("the kept session: %v", err)
	}
	if err := s.Logout(ctx, u.ID, ids[1], auth.ScopeGlobal); err != nil {
		t.Fatal(err)
	}
	_, err = s.User(ctx, u.ID, ids[1])
	wantCode(t, err, auth.CodeSessionNotFound)
	_, err = s.RefreshGrant(ctx, sessions[0].RefreshToken)
	wantCode(t, err, auth.CodeRefreshNotFound)
}

// Metadata merges (null removes a key); a new password ends the other
// sessions and refuses the same password.
func TestUpdateUser(t *testing.T) {
	t.Parallel()
	s, _, rv := service(t, nil)
	u, mine, err := s.SignUp(ctx, "hal@example.com", "secret-pass", map[string]any{"a": 1, "b": 2}, auth.RequestMeta{})
	if err != nil {
		t.Fatal(err)
	}
	other, err := s.PasswordGrant(ctx, "hal@example.com", "secret-pass", auth.RequestMeta{})
	if err != nil {
		t.Fatal(err)
	}
	mySID, otherSID := sessionID(t, mine.AccessToken), sessionID(t, other.AccessToken)
	got, err := s.UpdateUser(ctx, u.ID, mySID, auth.UserUpdate{Data: map[string]any{"b": nil, "c": "x"}})
	if err != nil {
		t.Fatal(err)
	}
	if got.UserMetadata["a"] != float64(1) || got.UserMetadata["c"] != "x" || len(got.UserMetadata) != 2 {
		t.Fatalf("metadata %v", got.UserMetadata)
	}
	same := "secret-pass"
	_, err = s.UpdateUser(ctx, u.ID, mySID, auth.UserUpdate{Password: &same})
	wantCode(t, err, auth.CodeSamePassword)
	weak := "x"
	_, err = s.UpdateUser(ctx, u.ID, mySID, auth.UserUpdate{Password: &weak})
	wantCode(t, err, auth.CodeWeakPassword)
	newPass := "new-secret-pass"
	if _, err := s.UpdateUser(ctx, u.ID, mySID, auth.UserUpdate{Password: &newPass}); err != nil {
		t.Fatal(err)
	}
	if !rv.has(otherSID) || rv.has(mySID) {
		t.Fatal("a new password must end the other sessions only")
	}
	if _, err := s.PasswordGrant(ctx, "hal@example.com", newPass, auth.RequestMeta{}); err != nil {
		t.Fatal(err)
	}
	email := "hal2@example.com"
	got, err = s.UpdateUser(ctx, u.ID, mySID, auth.UserUpdate{Email: &email})
	if err != nil || got.Email != email {
		t.Fatalf("email change: %+v %v", got, err)
	}
}

func TestAnonymousSignIn(t *testing.T) {
	t.Parallel()
	s, _, _ := service(t, nil)
	sess, err := s.SignUpAnonymous(ctx, map[string]any{"theme": "dark"}, auth.RequestMeta{})
	if err != nil {
		t.Fatal(err)
	}
	if !sess.User.IsAnonymous || sess.User.Email != "" || len(sess.User.AppMetadata) != 0 || len(sess.User.Identities) != 0 {
		t.Fatalf("user %+v", sess.User)
	}
	c, err := apitest.Verifier(t).Verify(sess.AccessToken)
	if err != nil || !strings.Contains(string(c.Raw), `"is_anonymous":true`) || !strings.Contains(string(c.Raw), `"method":"anonymous"`) {
		t.Fatalf("claims %s, %v", c.Raw, err)
	}
	off, _, _ := service(t, func(c *auth.Config) { c.AnonymousUsers = false })
	_, err = off.SignUpAnonymous(ctx, nil, auth.RequestMeta{})
	wantCode(t, err, auth.CodeAnonymousDisabled)
}

func TestAdminUsers(t *testing.T) {
	t.Parallel()
	s, _, rv := service(t, nil)
	hash := "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"
	yes := true
	email := "imp@example.com"
	u, err := s.CreateUser(ctx, auth.AdminUser{Email: &email, PasswordHash: &hash, EmailConfirm: &yes,
		AppMetadata: map[string]any{"tenant": "t1"}})
	if err != nil {
		t.Fatal(err)
	}
	if u.AppMetadata["tenant"] != "t1" || u.AppMetadata["provider"] != "email" || u.EmailConfirmedAt == nil {
		t.Fatalf("created %+v", u)
	}
	_, err = s.CreateUser(ctx, auth.AdminUser{Email: &email})
	wantCode(t, err, auth.CodeEmailExists)
	bad := "plain-text"
	other := "other@example.com"
	_, err = s.CreateUser(ctx, auth.AdminUser{Email: &other, PasswordHash: &bad})
	wantCode(t, err, auth.CodeValidationFailed)
	sess, err := s.PasswordGrant(ctx, email, "U*U", auth.RequestMeta{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		e := strings.Repeat("p", i+1) + "@example.com"
		if _, err := s.CreateUser(ctx, auth.AdminUser{Email: &e}); err != nil {
			t.Fatal(err)
		}
	}
	page, total, err := s.ListUsers(ctx, 2, 2)
	if err != nil || total != 5 || len(page) != 2 {
		t.Fatalf("page 2: %d users of %d, %v", len(page), total, err)
	}
	last, _, _ := s.ListUsers(ctx, 3, 2)
	if len(last) != 1 || last[0].ID != u.ID {
		t.Fatalf("the oldest comes last: %+v", last)
	}
	ban := "24h"
	banned, err := s.AdminUpdateUser(ctx, u.ID, auth.AdminUser{BanDuration: &ban})
	if err != nil || banned.BannedUntil == nil {
		t.Fatalf("ban: %+v %v", banned, err)
	}
	if !rv.has(sessionID(t, sess.AccessToken)) {
		t.Fatal("a ban must end the user's sessions")
	}
	_, err = s.PasswordGrant(ctx, email, "U*U", auth.RequestMeta{})
	wantCode(t, err, auth.CodeUserBanned)
	none := "none"
	if _, err := s.AdminUpdateUser(ctx, u.ID, auth.AdminUser{BanDuration: &none}); err != nil {
		t.Fatal(err)
	}
	sess, err = s.PasswordGrant(ctx, email, "U*U", auth.RequestMeta{})
	if err != nil {
		t.Fatal(err)
	}
	junk := "forever"
	_, err = s.AdminUpdateUser(ctx, u.ID, auth.AdminUser{BanDuration: &junk})
	wantCode(t, err, auth.CodeValidationFailed)
	if err := s.DeleteUser(ctx, u.ID); err != nil {
		t.Fatal(err)
	}
	if !rv.has(sessionID(t, sess.AccessToken)) {
		t.Fatal("deleting a user must end its sessions")
	}
	_, err = s.GetUser(ctx, u.ID)
	wantCode(t, err, auth.CodeUserNotFound)
	wantCode(t, s.DeleteUser(ctx, u.ID), auth.CodeUserNotFound)
	_, err = s.GetUser(ctx, "not-a-uuid")
	wantCode(t, err, auth.CodeUserNotFound)
}

func TestNormalizeEmail(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{" A@B.co ": "a@b.co", "ünï@exämple.de": "ünï@exämple.de"} {
		if got, err := auth.NormalizeEmail(in); err != nil || got != want {
			t.Errorf("%q: %q, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "a", "a@b", "Ann <a@b.co>", "a b@c.co", "a\u200d@b.co", "a@b.co\u202e", "a@b.co\x00",
		"\xff@b.co", strings.Repeat("a", 251) + "@b.co", "a@.co", "@b.co", "a'; drop table auth.users; --@b.co x"} {
		if _, err := auth.NormalizeEmail(in); code(err) != auth.CodeEmailAddressInvalid {
			t.Errorf("%q accepted (%v)", in, err)
		}
	}
}

// The access-token hook changes the claims signed (a tenant claim, a
// role), but not the token's subject, session or lifetime; a hook that
// drops a required claim fails the sign-in rather than sign a token
// without it.
func TestAccessTokenHook(t *testing.T) {
	t.Parallel()
	s, db, _ := service(t, func(c *auth.Config) { c.AccessTokenHook = "public.claims_hook" })
	_, err := db.Exec(ctx, `
create function public.claims_hook(event jsonb) returns jsonb language plpgsql as $$
declare c jsonb := event->'claims';
begin
  if c->>'email' like 'broken%' then
    return jsonb_build_object('claims', c - 'role');
  end if;
  c := jsonb_set(c, '{tenant}', to_jsonb('t-' || (event->>'authentication_method')));
  c := jsonb_set(c, '{sub}', '"someone-else"');
  return jsonb_build_object('claims', c);
end $$`)
	if err != nil {
		t.Fatal(err)
	}
	u, sess, err := s.SignUp(ctx, "hooked@example.com", "secret-pass", nil, auth.RequestMeta{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := apitest.Verifier(t).Verify(sess.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject != u.ID || !strings.Contains(string(c.Raw), `"tenant":"t-password"`) {
		t.Fatalf("claims %s", c.Raw)
	}
	refreshed, err := s.RefreshGrant(ctx, sess.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	c, _ = apitest.Verifier(t).Verify(refreshed.AccessToken)
	if !strings.Contains(string(c.Raw), `"tenant":"t-token_refresh"`) {
		t.Fatalf("claims after refresh %s", c.Raw)
	}
	if _, _, err := s.SignUp(ctx, "broken@example.com", "secret-pass", nil, auth.RequestMeta{}); err == nil || code(err) != "" {
		t.Fatalf("a hook dropping role: %v", err)
	}
	for name, ok := range map[string]bool{"public.claims_hook": true, "claims_hook": true, "a.b.c": false, `x"; drop`: false, "Public.X": false} {
		if auth.ValidHookName(name) != ok {
			t.Errorf("ValidHookName(%q) = %v", name, !ok)
		}
	}
}
