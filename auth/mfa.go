package auth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	qrcode "github.com/skip2/go-qrcode"
)

// Factor is an MFA factor as GoTrue shows it in a user's factors.
type Factor struct {
	ID           string    `json:"id"`
	FriendlyName string    `json:"friendly_name,omitempty"`
	FactorType   string    `json:"factor_type"`
	Status       string    `json:"status"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
}

// Enrollment is what enrolling a TOTP factor answers: the secret, its
// otpauth URI and a QR code of the URI as raw SVG.
type Enrollment struct {
	ID           string `json:"id"`
	Type         string `json:"type"`
	FriendlyName string `json:"friendly_name,omitempty"`
	TOTP         struct {
		QRCode string `json:"qr_code"`
		Secret string `json:"secret"`
		URI    string `json:"uri"`
	} `json:"totp"`
}

// Challenge is a pending MFA challenge.
type Challenge struct {
	ID        string `json:"id"`
	Type      string `json:"type"`
	ExpiresAt int64  `json:"expires_at"`
}

// MFA error codes, GoTrue's.
const (
	CodeMFAFactorNotFound     ErrorCode = "mfa_factor_not_found"
	CodeMFAChallengeExpired   ErrorCode = "mfa_challenge_expired"
	CodeMFAVerificationFailed ErrorCode = "mfa_verification_failed"
	CodeMFAFactorNameConflict ErrorCode = "mfa_factor_name_conflict"
	CodeInsufficientAAL       ErrorCode = "insufficient_aal"
)

const (
	totpStep      = 30 * time.Second
	totpDigits    = 6
	challengeLife = 5 * time.Minute
	methodTOTP    = "totp"
)

// totpCode is RFC 6238's code of secret at t: HMAC-SHA1 over the
// 30-second step count, dynamically truncated to six digits.
func totpCode(secret []byte, t time.Time) string {
	var msg [8]byte
	binary.BigEndian.PutUint64(msg[:], uint64(t.Unix()/int64(totpStep/time.Second)))
	mac := hmac.New(sha1.New, secret)
	mac.Write(msg[:])
	sum := mac.Sum(nil)
	off := sum[len(sum)-1] & 0x0f
	v := binary.BigEndian.Uint32(sum[off:off+4]) & 0x7fffffff
	return fmt.Sprintf("%0*d", totpDigits, v%1_000_000)
}

// totpValid accepts the code of the current step or of one step either
// side, for clocks a little apart.
func totpValid(secret []byte, code string, now time.Time) bool {
	ok := false
	for _, d := range []time.Duration{-totpStep, 0, totpStep} {
		if hmac.Equal([]byte(totpCode(secret, now.Add(d))), []byte(code)) {
			ok = true
		}
	}
	return ok
}

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// qrSVG draws the QR code of text as SVG, one square a module.
func qrSVG(text string) (string, error) {
	q, err := qrcode.New(text, qrcode.Medium)
	if err != nil {
		return "", fmt.Errorf("qr code: %w", err)
	}
	bits := q.Bitmap()
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" shape-rendering="crispEdges"><rect width="100%%" height="100%%" fill="#fff"/><path fill="#000" d="`, len(bits), len(bits))
	for y, row := range bits {
		for x, on := range row {
			if on {
				fmt.Fprintf(&b, "M%d %dh1v1h-1z", x, y)
			}
		}
	}
	b.WriteString(`"/></svg>`)
	return b.String(), nil
}

func loadFactors(ctx context.Context, q querier, userID string) ([]Factor, error) {
	rows, err := q.Query(ctx, `select id::text, coalesce(friendly_name, ''), factor_type::text, status::text, created_at, updated_at
		from auth.mfa_factors where user_id = $1::uuid order by created_at, id`, userID)
	if err != nil {
		return nil, fmt.Errorf("load factors: %w", err)
	}
	fs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Factor, error) {
		var f Factor
		err := r.Scan(&f.ID, &f.FriendlyName, &f.FactorType, &f.Status, &f.CreatedAt, &f.UpdatedAt)
		return f, err
	})
	if err != nil {
		return nil, fmt.Errorf("load factors: %w", err)
	}
	return fs, nil
}

// EnrollTOTP adds an unverified TOTP factor to the user.
func (s *Service) EnrollTOTP(ctx context.Context, userID, friendlyName, issuer string) (*Enrollment, error) {
	u, err := userByID(ctx, s.db, userID, false)
	if err != nil {
		return nil, err
	}
	if u == nil {
		return nil, fail(CodeUserNotFound, "User not found")
	}
	if issuer == "" {
		issuer = s.cfg.Issuer
	}
	if len(friendlyName) > 255 || len(issuer) > 255 {
		return nil, fail(CodeValidationFailed, "friendly_name and issuer are limited to 255 characters")
	}
	secret := make([]byte, 20)
	_, _ = rand.Read(secret)
	account := u.Email
	if account == "" {
		account = u.ID
	}
	e := &Enrollment{ID: newUUID(), Type: methodTOTP, FriendlyName: friendlyName}
	e.TOTP.Secret = b32.EncodeToString(secret)
	e.TOTP.URI = (&url.URL{Scheme: "otpauth", Host: "totp", Path: "/" + issuer + ":" + account,
		RawQuery: url.Values{"secret": {e.TOTP.Secret}, "issuer": {issuer}, "algorithm": {"SHA1"},
			"digits": {"6"}, "period": {"30"}}.Encode()}).String()
	if e.TOTP.QRCode, err = qrSVG(e.TOTP.URI); err != nil {
		return nil, err
	}
	now := s.now()
	_, err = s.db.Exec(ctx, `insert into auth.mfa_factors (id, user_id, friendly_name, factor_type, status, created_at, updated_at, secret)
		values ($1::uuid, $2::uuid, nullif($3, ''), 'totp', 'unverified', $4, $4, $5)`, e.ID, userID, friendlyName, now, e.TOTP.Secret)
	if isUniqueViolation(err) {
		return nil, fail(CodeMFAFactorNameConflict, "A factor with the friendly name %q for this user already exists", friendlyName)
	}
	if err != nil {
		return nil, fmt.Errorf("insert factor: %w", err)
	}
	return e, nil
}

// factorSecret returns the user's factor's secret, or mfa_factor_not_found.
func factorSecret(ctx context.Context, q querier, userID, factorID string) ([]byte, error) {
	if !validUUID(factorID) {
		return nil, fail(CodeMFAFactorNotFound, "Factor not found")
	}
	var secret string
	err := q.QueryRow(ctx, `select coalesce(secret, '') from auth.mfa_factors where id = $1::uuid and user_id = $2::uuid`,
		factorID, userID).Scan(&secret)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fail(CodeMFAFactorNotFound, "Factor not found")
	}
	if err != nil {
		return nil, fmt.Errorf("load factor: %w", err)
	}
	raw, err := b32.DecodeString(strings.ToUpper(secret))
	if err != nil {
		return nil, fmt.Errorf("factor secret: %w", err)
	}
	return raw, nil
}

// ChallengeFactor opens a challenge of the user's factor.
func (s *Service) ChallengeFactor(ctx context.Context, userID, factorID string, meta RequestMeta) (*Challenge, error) {
	if _, err := factorSecret(ctx, s.db, userID, factorID); err != nil {
		return nil, err
	}
	ip := "0.0.0.0"
	if p := meta.ip(); p != nil {
		ip = *p
	}
	now := s.now()
	c := &Challenge{ID: newUUID(), Type: methodTOTP, ExpiresAt: now.Add(challengeLife).Unix()}
	if _, err := s.db.Exec(ctx, `insert into auth.mfa_challenges (id, factor_id, created_at, ip_address) values ($1::uuid, $2::uuid, $3, $4::inet)`,
		c.ID, factorID, now, ip); err != nil {
		return nil, fmt.Errorf("insert challenge: %w", err)
	}
	if _, err := s.db.Exec(ctx, `update auth.mfa_factors set last_challenged_at = $2 where id = $1::uuid`, factorID, now); err != nil {
		return nil, fmt.Errorf("update factor: %w", err)
	}
	return c, nil
}

// VerifyFactor checks a code against a challenge of the factor. On
// success the factor is verified, the session reaches aal2 with totp in
// its amr, and new tokens of the session are returned.
func (s *Service) VerifyFactor(ctx context.Context, userID, sessionID, factorID, challengeID, code string) (*Session, error) {
	if !validUUID(sessionID) {
		return nil, fail(CodeSessionNotFound, "Session not found")
	}
	var out *Session
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		secret, err := factorSecret(ctx, tx, userID, factorID)
		if err != nil {
			return err
		}
		if !validUUID(challengeID) {
			return fail(CodeMFAChallengeExpired, "Challenge not found")
		}
		var created time.Time
		var verified *time.Time
		err = tx.QueryRow(ctx, `select created_at, verified_at from auth.mfa_challenges where id = $1::uuid and factor_id = $2::uuid for update`,
			challengeID, factorID).Scan(&created, &verified)
		if errors.Is(err, pgx.ErrNoRows) {
			return fail(CodeMFAChallengeExpired, "Challenge not found")
		}
		if err != nil {
			return fmt.Errorf("load challenge: %w", err)
		}
		now := s.now()
		if verified != nil || now.Sub(created) > challengeLife {
			return fail(CodeMFAChallengeExpired, "MFA challenge %s has expired, verify against another challenge or create a new challenge.", challengeID)
		}
		if !totpValid(secret, strings.TrimSpace(code), now) {
			return fail(CodeMFAVerificationFailed, "Invalid TOTP code entered")
		}
		if _, err := tx.Exec(ctx, `update auth.mfa_challenges set verified_at = $2 where id = $1::uuid`, challengeID, now); err != nil {
			return fmt.Errorf("verify challenge: %w", err)
		}
		if _, err := tx.Exec(ctx, `update auth.mfa_factors set status = 'verified', updated_at = $2 where id = $1::uuid`, factorID, now); err != nil {
			return fmt.Errorf("verify factor: %w", err)
		}
		var sess sessionRow
		err = tx.QueryRow(ctx, `update auth.sessions set aal = 'aal2', factor_id = $3::uuid, updated_at = $4
			where id = $1::uuid and user_id = $2::uuid returning id::text, user_id::text, not_after`,
			sessionID, userID, factorID, now).Scan(&sess.id, &sess.userID, &sess.notAfter)
		if errors.Is(err, pgx.ErrNoRows) {
			return fail(CodeSessionNotFound, "Session not found")
		}
		if err != nil {
			return fmt.Errorf("upgrade session: %w", err)
		}
		sess.aal = "aal2"
		if _, err := tx.Exec(ctx, `insert into auth.mfa_amr_claims (session_id, created_at, updated_at, authentication_method, id)
			values ($1::uuid, $2, $2, $3, $4::uuid)
			on conflict (session_id, authentication_method) do update set updated_at = excluded.updated_at, created_at = excluded.created_at`,
			sessionID, now, methodTOTP, newUUID()); err != nil {
			return fmt.Errorf("record amr: %w", err)
		}
		// The session's tokens so far are aal1: the new pair replaces them.
		if _, err := tx.Exec(ctx, `update auth.refresh_tokens set revoked = true, updated_at = $2 where session_id = $1::uuid and not coalesce(revoked, false)`,
			sessionID, now); err != nil {
			return fmt.Errorf("revoke refresh tokens: %w", err)
		}
		refresh, err := insertRefreshToken(ctx, tx, userID, sessionID, "", now)
		if err != nil {
			return err
		}
		u, err := userByID(ctx, tx, userID, false)
		if err != nil {
			return err
		}
		out, err = s.issue(ctx, tx, u, sess, refresh, methodTOTP)
		return err
	})
	return out, err
}

// UnenrollFactor removes the user's factor. A verified factor may be
// removed only from an aal2 session; sessions that reached aal2 with it
// fall back to aal1.
func (s *Service) UnenrollFactor(ctx context.Context, userID, sessionID, factorID string) error {
	return pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		if _, err := factorSecret(ctx, tx, userID, factorID); err != nil {
			return err
		}
		var status, aal string
		if err := tx.QueryRow(ctx, `select status::text from auth.mfa_factors where id = $1::uuid`, factorID).Scan(&status); err != nil {
			return fmt.Errorf("load factor: %w", err)
		}
		if validUUID(sessionID) {
			_ = tx.QueryRow(ctx, `select coalesce(aal::text, 'aal1') from auth.sessions where id = $1::uuid`, sessionID).Scan(&aal)
		}
		if status == "verified" && aal != "aal2" {
			return fail(CodeInsufficientAAL, "AAL2 required to unenroll verified factor")
		}
		if _, err := tx.Exec(ctx, `update auth.sessions set aal = 'aal1', factor_id = null where factor_id = $1::uuid`, factorID); err != nil {
			return fmt.Errorf("downgrade sessions: %w", err)
		}
		if _, err := tx.Exec(ctx, `delete from auth.mfa_factors where id = $1::uuid`, factorID); err != nil {
			return fmt.Errorf("delete factor: %w", err)
		}
		return nil
	})
}
