package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/smtp"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Mailer sends one mail. SMTPMailer is the real one.
type Mailer interface {
	Send(ctx context.Context, to, subject, body string) error
}

// SMTPMailer sends through an SMTP server (FLUXBASE_SMTP_*), with
// STARTTLS when the server offers it and PLAIN auth when a user is set.
type SMTPMailer struct {
	Host, User, Pass, From string
	Port                   int
}

// Send sends a plain-text mail.
func (m *SMTPMailer) Send(ctx context.Context, to, subject, body string) error {
	if strings.ContainsAny(to+subject, "\r\n") {
		return errors.New("mail: header values may not contain line breaks")
	}
	addr := net.JoinHostPort(m.Host, strconv.Itoa(m.Port))
	var a smtp.Auth
	if m.User != "" {
		a = smtp.PlainAuth("", m.User, m.Pass, m.Host)
	}
	msg := "From: " + m.From + "\r\nTo: " + to + "\r\nSubject: " + subject +
		"\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + strings.ReplaceAll(body, "\n", "\r\n")
	done := make(chan error, 1)
	go func() { done <- smtp.SendMail(addr, a, m.From, []string{to}, []byte(msg)) }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("mail to %s: %w", to, err)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// OTP types of POST /verify, as auth-js names them.
const (
	OTPSignup    = "signup"
	OTPInvite    = "invite"
	OTPMagicLink = "magiclink"
	OTPRecovery  = "recovery"
	OTPEmail     = "email"
)

// Error codes of the mail flows.
const (
	CodeOTPExpired  ErrorCode = "otp_expired"
	CodeOTPDisabled ErrorCode = "otp_disabled"
)

// otpLife is how long a mailed code or link stays good (GoTrue's
// default).
const otpLife = time.Hour

// tokenHash is how a mailed one-time token is stored: hex SHA-224 of the
// address and the code, as GoTrue stores it, so a leaked table holds no
// usable code.
func tokenHash(email, otp string) string {
	sum := sha256.Sum224([]byte(email + otp))
	return hex.EncodeToString(sum[:])
}

func newOTP() string {
	n, _ := rand.Int(rand.Reader, big.NewInt(1_000_000))
	return fmt.Sprintf("%06d", n.Int64())
}

// sendToken records a one-time token of tokenType for u and mails the
// code and a link carrying its hash.
func (s *Service) sendToken(ctx context.Context, tx pgx.Tx, u *User, tokenType, otpType string, meta RequestMeta) error {
	if s.cfg.Mailer == nil {
		return fail(CodeProviderDisabled, "Email sending is not configured")
	}
	if err := s.mailAllowed(ctx, u.Email); err != nil {
		return err
	}
	lt, err := s.makeToken(ctx, tx, u, tokenType, otpType, meta)
	if err != nil {
		return err
	}
	subject, what := "Confirm your signup", "confirm your address"
	switch otpType {
	case OTPRecovery:
		subject, what = "Reset your password", "reset your password"
	case OTPMagicLink:
		subject, what = "Your magic link", "sign in"
	case OTPInvite:
		subject, what = "You have been invited", "accept the invitation"
	}
	body := fmt.Sprintf("Follow this link to %s:\n\n%s\n\nOr enter the code: %s\n\nThe link and the code work once, for an hour.\n", what, lt.ActionLink, lt.OTP)
	return s.cfg.Mailer.Send(ctx, u.Email, subject, body)
}

// linkToken is a stored one-time token: its code, hash and link.
type linkToken struct {
	OTP, Hash, ActionLink, RedirectTo string
}

// makeToken records a one-time token of tokenType for u (only its hash)
// and builds its link.
func (s *Service) makeToken(ctx context.Context, tx pgx.Tx, u *User, tokenType, otpType string, meta RequestMeta) (*linkToken, error) {
	otp := newOTP()
	hash := tokenHash(u.Email, otp)
	now := s.now()
	inLink := hash
	if meta.CodeChallenge != "" {
		if err := s.startFlow(ctx, tx, u.ID, otpType, meta, now); err != nil {
			return nil, err
		}
		inLink = pkcePrefix + hash
	}
	if _, err := tx.Exec(ctx, `insert into auth.one_time_tokens (id, user_id, token_type, token_hash, relates_to, created_at, updated_at)
		values ($1::uuid, $2::uuid, $3::auth.one_time_token_type, $4, $5, $6 at time zone 'utc', $6 at time zone 'utc')
		on conflict (user_id, token_type) do update set token_hash = excluded.token_hash, relates_to = excluded.relates_to,
		created_at = excluded.created_at, updated_at = excluded.updated_at`,
		newUUID(), u.ID, tokenType, hash, u.Email, now); err != nil {
		return nil, fmt.Errorf("store one-time token: %w", err)
	}
	column, sentAt := "confirmation_token", "confirmation_sent_at"
	if tokenType == "recovery_token" {
		column, sentAt = "recovery_token", "recovery_sent_at"
	}
	if _, err := tx.Exec(ctx, `update auth.users set `+column+` = $2, `+sentAt+` = $3 where id = $1::uuid`, u.ID, hash, now); err != nil {
		return nil, fmt.Errorf("record token: %w", err)
	}
	redirect := s.redirect(meta.RedirectTo)
	link := s.cfg.ExternalURL + "/auth/v1/verify?" + url.Values{"token": {inLink}, "type": {otpType}, "redirect_to": {redirect}}.Encode()
	return &linkToken{OTP: otp, Hash: hash, ActionLink: link, RedirectTo: redirect}, nil
}

// Resend mails a new confirmation to a registered, unconfirmed address;
// it answers the same for any other address.
func (s *Service) Resend(ctx context.Context, otpType, email string, meta RequestMeta) error {
	if otpType != OTPSignup {
		return fail(CodeValidationFailed, "Only the signup type can be resent")
	}
	norm, err := s.mailable(email)
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		u, err := userByEmail(ctx, tx, norm)
		if err != nil || u == nil || u.EmailConfirmedAt != nil {
			return err
		}
		return s.sendToken(ctx, tx, u, "confirmation_token", OTPSignup, meta)
	})
}

// Invite creates a user for the admin and mails it an invitation link;
// 422 email_exists when the address is registered.
func (s *Service) Invite(ctx context.Context, email string, data map[string]any, meta RequestMeta) (*User, error) {
	norm, err := s.mailable(email)
	if err != nil {
		return nil, err
	}
	if data == nil {
		data = map[string]any{}
	}
	var u *User
	err = pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		id, now := newUUID(), s.now()
		if err := insertUser(ctx, tx, newUser{id: id, email: norm, role: RoleAuthenticated, appMeta: emailAppMeta(nil), userMeta: data}, now); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `update auth.users set invited_at = $2 where id = $1::uuid`, id, now); err != nil {
			return fmt.Errorf("invite: %w", err)
		}
		if u, err = userByID(ctx, tx, id, false); err != nil {
			return err
		}
		if err := s.sendToken(ctx, tx, u, "confirmation_token", OTPInvite, meta); err != nil {
			return err
		}
		u, err = userByID(ctx, tx, id, false)
		return err
	})
	return u, err
}

// GeneratedLink is what the admin's generate_link answers: the user and
// the link, code and hash it would have mailed.
type GeneratedLink struct {
	*User
	ActionLink       string `json:"action_link"`
	EmailOTP         string `json:"email_otp"`
	HashedToken      string `json:"hashed_token"`
	VerificationType string `json:"verification_type"`
	RedirectTo       string `json:"redirect_to"`
}

// GenerateLink makes a signup, invite, magiclink or recovery link for
// the admin without sending mail; signup and invite create the user.
func (s *Service) GenerateLink(ctx context.Context, linkType, email, password string, data map[string]any, meta RequestMeta) (*GeneratedLink, error) {
	norm, err := NormalizeEmail(email)
	if err != nil {
		return nil, err
	}
	var hash string
	if linkType == OTPSignup {
		if err := s.checkPassword(password); err != nil {
			return nil, err
		}
		if hash, err = s.hash.hash(ctx, password); err != nil {
			return nil, err
		}
	}
	if data == nil {
		data = map[string]any{}
	}
	var out *GeneratedLink
	err = pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		u, err := userByEmail(ctx, tx, norm)
		if err != nil {
			return err
		}
		tokenType := "confirmation_token"
		switch linkType {
		case OTPSignup, OTPInvite:
			if u != nil {
				return fail(CodeEmailExists, "A user with this email address has already been registered")
			}
			id := newUUID()
			if err := insertUser(ctx, tx, newUser{id: id, email: norm, hash: hash, role: RoleAuthenticated, appMeta: emailAppMeta(nil), userMeta: data}, s.now()); err != nil {
				return err
			}
			if linkType == OTPInvite {
				if _, err := tx.Exec(ctx, `update auth.users set invited_at = $2 where id = $1::uuid`, id, s.now()); err != nil {
					return fmt.Errorf("invite: %w", err)
				}
			}
			if u, err = userByID(ctx, tx, id, false); err != nil {
				return err
			}
		case OTPMagicLink, OTPRecovery:
			if u == nil {
				return fail(CodeUserNotFound, "User with this email not found")
			}
			tokenType = "recovery_token"
		default:
			return fail(CodeValidationFailed, "Invalid link type: %.20q", linkType)
		}
		lt, err := s.makeToken(ctx, tx, u, tokenType, linkType, meta)
		if err != nil {
			return err
		}
		if u, err = userByID(ctx, tx, u.ID, false); err != nil {
			return err
		}
		out = &GeneratedLink{User: u, ActionLink: lt.ActionLink, EmailOTP: lt.OTP, HashedToken: lt.Hash,
			VerificationType: linkType, RedirectTo: lt.RedirectTo}
		return nil
	})
	return out, err
}

// RedirectTarget is where a mail link's browser is sent: to when it is
// on the site, else the site ("" without a site).
func (s *Service) RedirectTarget(to string) string { return s.redirect(to) }

// Recover mails a recovery code and link to a registered address. It
// answers the same for an unknown address, so it tells nothing of who
// is registered.
func (s *Service) Recover(ctx context.Context, email string, meta RequestMeta) error {
	norm, err := s.mailable(email)
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		u, err := userByEmail(ctx, tx, norm)
		if err != nil || u == nil {
			return err
		}
		return s.sendToken(ctx, tx, u, "recovery_token", OTPRecovery, meta)
	})
}

// SendOTP mails a sign-in code and magic link; an unknown address gets a
// new user (and a confirmation code) unless createUser is false, which
// GoTrue answers with otp_disabled.
func (s *Service) SendOTP(ctx context.Context, email string, createUser bool, data map[string]any, meta RequestMeta) error {
	norm, err := s.mailable(email)
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		u, err := userByEmail(ctx, tx, norm)
		if err != nil {
			return err
		}
		if u != nil && u.EmailConfirmedAt != nil {
			return s.sendToken(ctx, tx, u, "recovery_token", OTPMagicLink, meta)
		}
		if u == nil {
			if !createUser || s.cfg.DisableSignup {
				return fail(CodeOTPDisabled, "Signups not allowed for otp")
			}
			if data == nil {
				data = map[string]any{}
			}
			id := newUUID()
			if err := insertUser(ctx, tx, newUser{id: id, email: norm, role: RoleAuthenticated, appMeta: emailAppMeta(nil), userMeta: data}, s.now()); err != nil {
				return err
			}
			if u, err = userByID(ctx, tx, id, false); err != nil {
				return err
			}
		}
		return s.sendToken(ctx, tx, u, "confirmation_token", OTPSignup, meta)
	})
}

// Verified is what redeeming a code or link gives: a session, or under
// PKCE (a link made for a request with a code challenge) the auth code
// to exchange for one.
type Verified struct {
	Session  *Session
	Type     string
	AuthCode string
}

// Verify redeems a mailed code (with the address) or a link's token hash
// (without it) of otpType, once, within its life: the address is
// confirmed and a session started. A wrong, used or expired token gets
// otp_expired.
func (s *Service) Verify(ctx context.Context, otpType, email, token, hash string, meta RequestMeta) (*Verified, error) {
	hash, pkce := strings.CutPrefix(hash, pkcePrefix)
	var types []string
	switch otpType {
	case OTPSignup, OTPInvite:
		types = []string{"confirmation_token"}
	case OTPMagicLink, OTPRecovery:
		types = []string{"recovery_token"}
	case OTPEmail:
		types = []string{"confirmation_token", "recovery_token"}
	default:
		return nil, fail(CodeValidationFailed, "Verify requires a verification type")
	}
	if hash == "" {
		norm, err := NormalizeEmail(email)
		if err != nil {
			return nil, err
		}
		hash = tokenHash(norm, strings.TrimSpace(token))
	}
	expired := fail(CodeOTPExpired, "Email link is invalid or has expired")
	out := &Verified{Type: otpType}
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		var userID, tokenType string
		var created time.Time
		err := tx.QueryRow(ctx, `delete from auth.one_time_tokens where token_hash = $1 and token_type::text = any($2)
			returning user_id::text, token_type::text, created_at`, hash, types).Scan(&userID, &tokenType, &created)
		if errors.Is(err, pgx.ErrNoRows) {
			return expired
		}
		if err != nil {
			return fmt.Errorf("redeem token: %w", err)
		}
		now := s.now()
		// created_at is UTC without a zone, read back as UTC.
		if now.Sub(created) > otpLife {
			return expired
		}
		u, err := userByID(ctx, tx, userID, true)
		if err != nil {
			return err
		}
		if u == nil {
			return expired
		}
		if u.banned(now) {
			return fail(CodeUserBanned, "User is banned")
		}
		column := "confirmation_token"
		if tokenType == "recovery_token" {
			column = "recovery_token"
		}
		if _, err := tx.Exec(ctx, `update auth.users set `+column+` = '', email_confirmed_at = coalesce(email_confirmed_at, $2),
			last_sign_in_at = $2, updated_at = $2 where id = $1::uuid`, userID, now); err != nil {
			return fmt.Errorf("confirm user: %w", err)
		}
		if _, err := tx.Exec(ctx, `update auth.identities set identity_data = identity_data || '{"email_verified": true}',
			last_sign_in_at = $2 where user_id = $1::uuid and provider = 'email'`, userID, now); err != nil {
			return fmt.Errorf("confirm identity: %w", err)
		}
		if u, err = userByID(ctx, tx, userID, false); err != nil {
			return err
		}
		if pkce {
			out.AuthCode, err = issueAuthCode(ctx, tx, userID, now)
			return err
		}
		method := "otp"
		if otpType == OTPRecovery {
			method = "recovery"
		}
		out.Session, err = s.startSession(ctx, tx, u, method, meta)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// redirect is where a mail link lands: the requested URL when it is on
// the site, else the site; without a site, nowhere (no open redirect).
func (s *Service) redirect(to string) string {
	site := strings.TrimSuffix(s.cfg.SiteURL, "/")
	switch {
	case site == "":
		return ""
	case to == site || strings.HasPrefix(to, site+"/") || strings.HasPrefix(to, site+"?") || strings.HasPrefix(to, site+"#"):
		return to
	}
	return site
}

// mailable normalizes an address a flow is about to mail, and refuses
// the flow when no mailer is configured.
func (s *Service) mailable(email string) (string, error) {
	norm, err := NormalizeEmail(email)
	if err != nil {
		return "", err
	}
	if s.cfg.Mailer == nil {
		return "", fail(CodeProviderDisabled, "Email sending is not configured")
	}
	return norm, nil
}

// mailAllowed counts one mail to addr against the shared limits: one per
// address per MailInterval, MailPerHour in all. The counters failing
// lets the mail go.
func (s *Service) mailAllowed(ctx context.Context, addr string) error {
	l := s.cfg.MailLimiter
	if l == nil {
		return nil
	}
	refuse := func(retry time.Duration) error {
		return &Error{Code: CodeOverEmailRateLimit, Message: "email rate limit exceeded", RetryAfter: retry}
	}
	if s.cfg.MailInterval > 0 {
		if ok, retry, err := l.Allow(ctx, "mail_address", addr, 1, s.cfg.MailInterval); err == nil && !ok {
			return refuse(retry)
		}
	}
	if s.cfg.MailPerHour > 0 {
		if ok, retry, err := l.Allow(ctx, "mail_hour", "all", s.cfg.MailPerHour, time.Hour); err == nil && !ok {
			return refuse(retry)
		}
	}
	return nil
}
