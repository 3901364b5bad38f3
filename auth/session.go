package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Session is what a sign-in or refresh answers, GoTrue's shape.
type Session struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	ExpiresAt    int64  `json:"expires_at"`
	RefreshToken string `json:"refresh_token"`
	User         *User  `json:"user"`
}

// AMR is one authentication method of a session, in the token's amr.
type AMR struct {
	Method    string `json:"method"`
	Timestamp int64  `json:"timestamp"`
}

// The authentication methods recorded in amr.
const (
	methodPassword  = "password"
	methodAnonymous = "anonymous"
	// methodRefresh is what the access-token hook is told for a refresh.
	methodRefresh = "token_refresh"
)

// sessionRow is a row of auth.sessions.
type sessionRow struct {
	id, userID string
	aal        string
	notAfter   *time.Time
}

// startSession records a session for u signed in by method, with its
// first refresh token, and returns its tokens.
func (s *Service) startSession(ctx context.Context, tx pgx.Tx, u *User, method string, meta RequestMeta) (*Session, error) {
	now := s.now()
	sid := newUUID()
	var notAfter *time.Time
	if s.cfg.SessionTimebox > 0 {
		t := now.Add(s.cfg.SessionTimebox)
		notAfter = &t
	}
	_, err := tx.Exec(ctx, `insert into auth.sessions (id, user_id, created_at, updated_at, aal, not_after, user_agent, ip)
		values ($1::uuid, $2::uuid, $3, $3, 'aal1', $4, nullif($5, ''), $6::inet)`,
		sid, u.ID, now, notAfter, meta.UserAgent, meta.ip())
	if err != nil {
		return nil, fmt.Errorf("insert session: %w", err)
	}
	if _, err := tx.Exec(ctx, `insert into auth.mfa_amr_claims (session_id, created_at, updated_at, authentication_method, id)
		values ($1::uuid, $2, $2, $3, $4::uuid)`, sid, now, method, newUUID()); err != nil {
		return nil, fmt.Errorf("insert amr claim: %w", err)
	}
	refresh, err := insertRefreshToken(ctx, tx, u.ID, sid, "", now)
	if err != nil {
		return nil, err
	}
	return s.issue(ctx, tx, u, sessionRow{id: sid, userID: u.ID, aal: "aal1", notAfter: notAfter}, refresh, method)
}

// insertRefreshToken writes a new refresh token of the session, the child
// of parent ("" for the first).
func insertRefreshToken(ctx context.Context, q querier, userID, sessionID, parent string, now time.Time) (string, error) {
	token := randomToken(16)
	_, err := q.Exec(ctx, `insert into auth.refresh_tokens (instance_id, token, user_id, revoked, created_at, updated_at, parent, session_id)
		values ($1::uuid, $2, $3, false, $4, $4, nullif($5, ''), $6::uuid)`, instanceID, token, userID, now, parent, sessionID)
	if err != nil {
		return "", fmt.Errorf("insert refresh token: %w", err)
	}
	return token, nil
}

// issue signs an access token for the session and pairs it with refresh;
// method is how this issue came about, for the access-token hook.
func (s *Service) issue(ctx context.Context, q querier, u *User, sess sessionRow, refresh, method string) (*Session, error) {
	rows, err := q.Query(ctx, `select authentication_method, extract(epoch from created_at)::bigint
		from auth.mfa_amr_claims where session_id = $1::uuid order by created_at desc`, sess.id)
	if err != nil {
		return nil, fmt.Errorf("load amr: %w", err)
	}
	amr, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (AMR, error) {
		var a AMR
		err := r.Scan(&a.Method, &a.Timestamp)
		return a, err
	})
	if err != nil {
		return nil, fmt.Errorf("load amr: %w", err)
	}
	now := s.now()
	exp := now.Add(s.cfg.AccessTokenTTL)
	if sess.notAfter != nil && sess.notAfter.Before(exp) {
		exp = *sess.notAfter
	}
	aud, role := u.Aud, u.Role
	if aud == "" {
		aud = RoleAuthenticated
	}
	if role == "" {
		role = RoleAuthenticated
	}
	aal := sess.aal
	if aal == "" {
		aal = "aal1"
	}
	claims := map[string]any{
		"iss":           s.cfg.Issuer,
		"aud":           aud,
		"exp":           exp.Unix(),
		"iat":           now.Unix(),
		"sub":           u.ID,
		"email":         u.Email,
		"phone":         u.Phone,
		"app_metadata":  u.AppMetadata,
		"user_metadata": u.UserMetadata,
		"role":          role,
		"aal":           aal,
		"amr":           amr,
		"session_id":    sess.id,
		"is_anonymous":  u.IsAnonymous,
	}
	if s.cfg.AccessTokenHook != "" {
		if claims, err = s.runHook(ctx, q, u.ID, method, claims); err != nil {
			return nil, err
		}
	}
	token, err := signToken(s.cfg.JWTSecret, s.cfg.JWTKeys, claims)
	if err != nil {
		return nil, fmt.Errorf("sign access token: %w", err)
	}
	return &Session{
		AccessToken: token, TokenType: "bearer",
		ExpiresIn: int64(exp.Sub(now).Round(time.Second) / time.Second), ExpiresAt: exp.Unix(),
		RefreshToken: refresh, User: u,
	}, nil
}

// RefreshGrant rotates a refresh token, GoTrue's way: the token presented
// is revoked and a child issued in the same session. A revoked token that
// is the parent of the session's active token gets that token back (a
// client that lost the answer); another revoked token still gets a child
// within RefreshReuseInterval of its rotation (two tabs refreshing at
// once). After that its reuse means it was stolen: the whole session
// ends, and its access tokens are revoked on every node.
func (s *Service) RefreshGrant(ctx context.Context, token string) (*Session, error) {
	if token == "" {
		return nil, fail(CodeValidationFailed, "Refresh token is required")
	}
	var out *Session
	var stolen string
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		var sessionID, parent string
		var revoked bool
		var updated time.Time
		err := tx.QueryRow(ctx, `select coalesce(session_id::text, ''), coalesce(parent, ''), coalesce(revoked, false),
			coalesce(updated_at, now()) from auth.refresh_tokens where token = $1`, token).
			Scan(&sessionID, &parent, &revoked, &updated)
		if errors.Is(err, pgx.ErrNoRows) {
			return fail(CodeRefreshNotFound, "Invalid Refresh Token: Refresh Token Not Found")
		}
		if err != nil {
			return fmt.Errorf("load refresh token: %w", err)
		}
		// The session's row lock orders concurrent refreshes of it.
		var sess sessionRow
		var refreshedAt *time.Time
		err = tx.QueryRow(ctx, `select id::text, user_id::text, coalesce(aal::text, 'aal1'), not_after, refreshed_at
			from auth.sessions where id = $1::uuid for update`, sessionID).
			Scan(&sess.id, &sess.userID, &sess.aal, &sess.notAfter, &refreshedAt)
		if errors.Is(err, pgx.ErrNoRows) {
			return fail(CodeSessionNotFound, "Invalid Refresh Token: Session not found")
		}
		if err != nil {
			return fmt.Errorf("load session: %w", err)
		}
		now := s.now()
		if sess.notAfter != nil && !now.Before(*sess.notAfter) {
			return fail(CodeSessionExpired, "Invalid Refresh Token: Session Expired")
		}
		u, err := userByID(ctx, tx, sess.userID, false)
		if err != nil {
			return err
		}
		if u == nil {
			return fail(CodeUserNotFound, "Invalid Refresh Token: User not found")
		}
		if u.banned(now) {
			return fail(CodeUserBanned, "Invalid Refresh Token: User Banned")
		}
		// Re-read the presented token now that the session is locked: a
		// concurrent refresh may have rotated it meanwhile.
		if err := tx.QueryRow(ctx, `select coalesce(revoked, false), coalesce(updated_at, now()) from auth.refresh_tokens where token = $1`, token).
			Scan(&revoked, &updated); err != nil {
			return fmt.Errorf("load refresh token: %w", err)
		}
		next := ""
		if revoked {
			var active string
			err := tx.QueryRow(ctx, `select token from auth.refresh_tokens where session_id = $1::uuid and not coalesce(revoked, false)
				order by id desc limit 1`, sess.id).Scan(&active)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("load active refresh token: %w", err)
			}
			var activeParent string
			if active != "" {
				_ = tx.QueryRow(ctx, `select coalesce(parent, '') from auth.refresh_tokens where token = $1`, active).Scan(&activeParent)
			}
			switch {
			case active != "" && activeParent == token:
				next = active
			case s.cfg.RefreshReuseInterval > 0 && now.Sub(updated) < s.cfg.RefreshReuseInterval:
				// a child of its own, below
			default:
				stolen = sess.id
				return nil
			}
		}
		if next == "" {
			if _, err := tx.Exec(ctx, `update auth.refresh_tokens set revoked = true, updated_at = $2 where token = $1 and not coalesce(revoked, false)`,
				token, now); err != nil {
				return fmt.Errorf("revoke refresh token: %w", err)
			}
			if next, err = insertRefreshToken(ctx, tx, u.ID, sess.id, token, now); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, `update auth.sessions set refreshed_at = $2 at time zone 'utc', updated_at = $2 where id = $1::uuid`,
			sess.id, now); err != nil {
			return fmt.Errorf("update session: %w", err)
		}
		out, err = s.issue(ctx, tx, u, sess, next, methodRefresh)
		return err
	})
	if err != nil {
		return nil, err
	}
	if stolen != "" {
		if err := s.endSessions(ctx, `id = $1::uuid`, stolen); err != nil {
			return nil, err
		}
		return nil, fail(CodeRefreshAlreadyUsed, "Invalid Refresh Token: Already Used")
	}
	return out, nil
}

// endSessions deletes the sessions matching where (their refresh tokens
// go with them) and revokes their access tokens on every node.
func (s *Service) endSessions(ctx context.Context, where string, args ...any) error {
	ids, err := deleteSessions(ctx, s.db, where, args...)
	if err != nil {
		return err
	}
	return s.revoke(ctx, ids)
}

// deleteSessions deletes the sessions matching where and returns their
// ids, for the caller to revoke once its transaction commits.
func deleteSessions(ctx context.Context, q querier, where string, args ...any) ([]string, error) {
	rows, err := q.Query(ctx, `delete from auth.sessions where `+where+` returning id::text`, args...)
	if err != nil {
		return nil, fmt.Errorf("end sessions: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("end sessions: %w", err)
	}
	return ids, nil
}

func (s *Service) revoke(ctx context.Context, sessionIDs []string) error {
	if len(sessionIDs) == 0 || s.revoker == nil {
		return nil
	}
	// Access tokens live at most AccessTokenTTL; the entry outlives them
	// by the verifier's leeway.
	until := s.now().Add(s.cfg.AccessTokenTTL + time.Minute)
	if err := s.revoker.Revoke(ctx, until, sessionIDs...); err != nil {
		return fmt.Errorf("revoke sessions: %w", err)
	}
	return nil
}

// hookRequired are the claims a hook may change but not remove, as
// GoTrue requires of its access-token hook.
var hookRequired = []string{"aud", "exp", "iat", "sub", "role", "aal", "session_id", "email", "phone", "is_anonymous"}

// runHook calls the access-token hook, a SQL function named by
// configuration taking one jsonb event {user_id, claims,
// authentication_method} and returning {claims}: what it returns is
// signed. Its name is quoted, never taken from a request.
func (s *Service) runHook(ctx context.Context, q querier, userID, method string, claims map[string]any) (map[string]any, error) {
	event := map[string]any{"user_id": userID, "claims": claims, "authentication_method": method}
	var out struct {
		Claims map[string]any `json:"claims"`
	}
	if err := q.QueryRow(ctx, `select `+hookIdentifier(s.cfg.AccessTokenHook)+`($1::jsonb)`, event).Scan(&out); err != nil {
		return nil, fmt.Errorf("access token hook %s: %w", s.cfg.AccessTokenHook, err)
	}
	for _, k := range hookRequired {
		if _, ok := out.Claims[k]; !ok {
			return nil, fmt.Errorf("access token hook %s: the claims it returned lack %q", s.cfg.AccessTokenHook, k)
		}
	}
	// The token's lifetime and identity stay the server's.
	for _, k := range []string{"exp", "iat", "sub", "session_id"} {
		out.Claims[k] = claims[k]
	}
	return out.Claims, nil
}

// hookIdentifier quotes "schema.function" (or "function") for SQL.
func hookIdentifier(name string) string {
	schema, fn, ok := strings.Cut(name, ".")
	if !ok {
		return pgx.Identifier{name}.Sanitize()
	}
	return pgx.Identifier{schema, fn}.Sanitize()
}

// ValidHookName reports whether name is a plain [schema.]function name.
func ValidHookName(name string) bool {
	parts := strings.Split(name, ".")
	if len(parts) > 2 {
		return false
	}
	for _, p := range parts {
		if p == "" || len(p) > 63 {
			return false
		}
		for _, r := range p {
			if !(r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
				return false
			}
		}
	}
	return true
}
