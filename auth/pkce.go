package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// PKCE error codes, GoTrue's.
const (
	CodeFlowStateNotFound ErrorCode = "flow_state_not_found"
	CodeFlowStateExpired  ErrorCode = "flow_state_expired"
	CodeBadCodeVerifier   ErrorCode = "bad_code_verifier"
)

// pkcePrefix marks a link token whose request carried a code challenge:
// the link then answers ?code= instead of the session.
const pkcePrefix = "pkce_"

// flowLife is how long an auth code may wait for its exchange.
const flowLife = 5 * time.Minute

// startFlow records a PKCE flow for the user's mailed link.
func (s *Service) startFlow(ctx context.Context, tx pgx.Tx, userID, otpType string, meta RequestMeta, now time.Time) error {
	method := strings.ToLower(meta.CodeChallengeMethod)
	if method != "s256" && method != "plain" {
		return fail(CodeValidationFailed, "code challenge method must be s256 or plain")
	}
	if n := len(meta.CodeChallenge); n < 43 || n > 128 {
		return fail(CodeValidationFailed, "code challenge must be 43 to 128 characters")
	}
	// One pending flow per user: a new link replaces the last one's.
	if _, err := tx.Exec(ctx, `delete from auth.flow_state where user_id = $1::uuid and auth_code_issued_at is null`, userID); err != nil {
		return fmt.Errorf("replace flow: %w", err)
	}
	_, err := tx.Exec(ctx, `insert into auth.flow_state (id, user_id, auth_code, code_challenge_method, code_challenge, provider_type,
		created_at, updated_at, authentication_method) values ($1::uuid, $2::uuid, $3, $4::auth.code_challenge_method, $5, 'email', $6, $6, $7)`,
		newUUID(), userID, newUUID(), method, meta.CodeChallenge, now, otpType)
	if err != nil {
		return fmt.Errorf("insert flow: %w", err)
	}
	return nil
}

// issueAuthCode marks the user's pending flow's code issued and returns it.
func issueAuthCode(ctx context.Context, tx pgx.Tx, userID string, now time.Time) (string, error) {
	var code string
	err := tx.QueryRow(ctx, `update auth.flow_state set auth_code_issued_at = $2, updated_at = $2
		where id = (select id from auth.flow_state where user_id = $1::uuid and auth_code_issued_at is null
		order by created_at desc limit 1) returning auth_code`, userID, now).Scan(&code)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fail(CodeFlowStateNotFound, "No valid flow state found for the link")
	}
	if err != nil {
		return "", fmt.Errorf("issue auth code: %w", err)
	}
	return code, nil
}

// PKCEGrant exchanges an auth code and the verifier of its challenge for
// a session, once.
func (s *Service) PKCEGrant(ctx context.Context, authCode, verifier string, meta RequestMeta) (*Session, error) {
	if authCode == "" || verifier == "" {
		return nil, fail(CodeValidationFailed, "invalid request: both auth code and code verifier should be non-empty")
	}
	var sess *Session
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		var userID, method, challenge, how string
		var issued *time.Time
		err := tx.QueryRow(ctx, `delete from auth.flow_state where auth_code = $1
			returning coalesce(user_id::text, ''), code_challenge_method::text, code_challenge, auth_code_issued_at, authentication_method`,
			authCode).Scan(&userID, &method, &challenge, &issued, &how)
		if errors.Is(err, pgx.ErrNoRows) {
			return fail(CodeFlowStateNotFound, "invalid flow state, no valid flow state found")
		}
		if err != nil {
			return fmt.Errorf("load flow: %w", err)
		}
		if issued == nil || s.now().Sub(*issued) > flowLife {
			return fail(CodeFlowStateExpired, "invalid flow state, flow state has expired")
		}
		want := verifier
		if method == "s256" {
			sum := sha256.Sum256([]byte(verifier))
			want = base64.RawURLEncoding.EncodeToString(sum[:])
		}
		if subtle.ConstantTimeCompare([]byte(want), []byte(challenge)) != 1 {
			return fail(CodeBadCodeVerifier, "code challenge does not match previously saved code verifier")
		}
		u, err := userByID(ctx, tx, userID, false)
		if err != nil {
			return err
		}
		if u == nil {
			return fail(CodeFlowStateNotFound, "invalid flow state, no user")
		}
		m := "otp"
		if how == OTPRecovery {
			m = "recovery"
		}
		sess, err = s.startSession(ctx, tx, u, m, meta)
		return err
	})
	return sess, err
}
