package auth_test

import (
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"regexp"
	"testing"
	"time"

	"github.com/fluxbase/fluxbase/auth"
	"github.com/fluxbase/fluxbase/broker"
	"github.com/fluxbase/fluxbase/internal/mailpit"
)

var (
	codeInMail = regexp.MustCompile(`code: (\d{6})`)
	linkInMail = regexp.MustCompile(`(http\S+/auth/v1/verify\?\S+)`)
)

func mailed(t *testing.T, m mailpit.Message) (code string, link *url.URL) {
	t.Helper()
	c, l := codeInMail.FindStringSubmatch(m.Text), linkInMail.FindStringSubmatch(m.Text)
	if c == nil || l == nil {
		t.Fatalf("no code or link in %q", m.Text)
	}
	u, err := url.Parse(l[1])
	if err != nil {
		t.Fatal(err)
	}
	return c[1], u
}

// Confirmation, recovery and magic links through a real SMTP server:
// each code works once, is stored only as its hash, and an unknown
// address learns nothing.
func TestMailFlows(t *testing.T) {
	t.Parallel()
	mp := mailpit.Start(t)
	s, db, _ := service(t, func(c *auth.Config) {
		c.Autoconfirm = false
		c.SiteURL = "https://app.example.com"
		c.Mailer = &auth.SMTPMailer{Host: "127.0.0.1", Port: mp.SMTPPort, From: "auth@example.com"}
	})
	const email = "mia@example.com"
	if _, sess, err := s.SignUp(ctx, email, "secret-pass", nil, auth.RequestMeta{}); err != nil || sess != nil {
		t.Fatalf("signup: %v %v", sess, err)
	}
	m := mp.Last(t, email)
	code, link := mailed(t, m)
	if m.Subject != "Confirm your signup" || link.Query().Get("type") != "signup" || link.Query().Get("redirect_to") != "https://app.example.com" {
		t.Fatalf("mail %q, link %s", m.Subject, link)
	}
	var stored string
	if err := db.QueryRow(ctx, `select token_hash from auth.one_time_tokens where relates_to = $1`, email).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum224([]byte(email + code))
	if stored != hex.EncodeToString(sum[:]) || stored != link.Query().Get("token") {
		t.Fatalf("stored %s: not the hash of the code", stored)
	}
	_, err := s.PasswordGrant(ctx, email, "secret-pass", auth.RequestMeta{})
	wantCode(t, err, auth.CodeEmailNotConfirmed)
	_, err = s.Verify(ctx, auth.OTPSignup, email, "000000", "", auth.RequestMeta{})
	wantCode(t, err, auth.CodeOTPExpired)
	v, err := s.Verify(ctx, auth.OTPSignup, email, code, "", auth.RequestMeta{})
	if err != nil || v.Session.User.EmailConfirmedAt == nil {
		t.Fatalf("verify: %+v %v", v, err)
	}
	_, err = s.Verify(ctx, auth.OTPSignup, email, code, "", auth.RequestMeta{})
	wantCode(t, err, auth.CodeOTPExpired)
	if _, err := s.PasswordGrant(ctx, email, "secret-pass", auth.RequestMeta{}); err != nil {
		t.Fatal(err)
	}

	// Recovery: the same answer for an unknown address, and no mail.
	if err := s.Recover(ctx, "nobody@example.com", auth.RequestMeta{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Recover(ctx, email, auth.RequestMeta{RedirectTo: "https://evil.example.net"}); err != nil {
		t.Fatal(err)
	}
	m = mp.Last(t, email)
	_, link = mailed(t, m)
	if m.Subject != "Reset your password" || link.Query().Get("redirect_to") != "https://app.example.com" {
		t.Fatalf("recovery mail %q, link %s", m.Subject, link)
	}
	if mp.Count(t, "nobody@example.com") != 0 {
		t.Fatal("mail sent to an unknown address")
	}
	v, err = s.Verify(ctx, auth.OTPRecovery, "", "", link.Query().Get("token"), auth.RequestMeta{})
	if err != nil || v.Type != auth.OTPRecovery || v.Session.User.Email != email {
		t.Fatalf("recovery link: %+v %v", v, err)
	}

	// Magic link / OTP: an existing user gets a code; an unknown one is
	// refused without create_user, created with it.
	wantCode(t, s.SendOTP(ctx, "new@example.com", false, nil, auth.RequestMeta{}), auth.CodeOTPDisabled)
	if err := s.SendOTP(ctx, email, true, nil, auth.RequestMeta{}); err != nil {
		t.Fatal(err)
	}
	code, _ = mailed(t, mp.Last(t, email))
	if _, err := s.Verify(ctx, auth.OTPEmail, email, code, "", auth.RequestMeta{}); err != nil {
		t.Fatalf("email otp: %v", err)
	}
	if err := s.SendOTP(ctx, "new@example.com", true, map[string]any{"k": "v"}, auth.RequestMeta{}); err != nil {
		t.Fatal(err)
	}
	code, _ = mailed(t, mp.Last(t, "new@example.com"))
	if _, err := db.Exec(ctx, `update auth.one_time_tokens set created_at = created_at - interval '2 hours' where relates_to = 'new@example.com'`); err != nil {
		t.Fatal(err)
	}
	_, err = s.Verify(ctx, auth.OTPEmail, "new@example.com", code, "", auth.RequestMeta{})
	wantCode(t, err, auth.CodeOTPExpired)

	// Resend: a new code for the unconfirmed address, nothing for others.
	if err := s.Resend(ctx, auth.OTPSignup, "new@example.com", auth.RequestMeta{}); err != nil {
		t.Fatal(err)
	}
	code, _ = mailed(t, mp.Last(t, "new@example.com"))
	if _, err := s.Verify(ctx, auth.OTPSignup, "new@example.com", code, "", auth.RequestMeta{}); err != nil {
		t.Fatalf("resent code: %v", err)
	}
	before := mp.Count(t, email)
	if err := s.Resend(ctx, auth.OTPSignup, email, auth.RequestMeta{}); err != nil || mp.Count(t, email) != before {
		t.Fatalf("resend to a confirmed address: %v", err)
	}

	// Invite mails a link; generate_link mails nothing and answers it.
	invited, err := s.Invite(ctx, "guest@example.com", nil, auth.RequestMeta{})
	if err != nil || invited.InvitedAt == nil {
		t.Fatalf("invite: %+v %v", invited, err)
	}
	if m := mp.Last(t, "guest@example.com"); m.Subject != "You have been invited" {
		t.Fatalf("invite mail %q", m.Subject)
	}
	gl, err := s.GenerateLink(ctx, auth.OTPRecovery, email, "", nil, auth.RequestMeta{})
	if err != nil || gl.ID == "" || gl.EmailOTP == "" || gl.VerificationType != "recovery" || mp.Count(t, email) != before {
		t.Fatalf("generate_link: %+v %v", gl, err)
	}
	if v, err := s.Verify(ctx, auth.OTPRecovery, "", "", gl.HashedToken, auth.RequestMeta{}); err != nil || v.Session == nil {
		t.Fatalf("the generated link: %v", err)
	}
	_, err = s.GenerateLink(ctx, auth.OTPSignup, email, "secret-pass", nil, auth.RequestMeta{})
	wantCode(t, err, auth.CodeEmailExists)
}

// Mail is bounded through the shared counters: one per address per
// interval, answered with over_email_send_rate_limit and when to retry.
func TestMailRateLimit(t *testing.T) {
	t.Parallel()
	mp := mailpit.Start(t)
	kv := auth.BucketForTest(t, broker.RateLimitBucket)
	s, _, _ := service(t, func(c *auth.Config) {
		c.Mailer = &auth.SMTPMailer{Host: "127.0.0.1", Port: mp.SMTPPort, From: "auth@example.com"}
		c.MailLimiter, c.MailInterval, c.MailPerHour = auth.NewRateLimiter(kv), time.Hour, 2
	})
	for _, addr := range []string{"r1@example.com", "r2@example.com", "r3@example.com"} {
		if _, _, err := s.SignUp(ctx, addr, "secret-pass", nil, auth.RequestMeta{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Recover(ctx, "r1@example.com", auth.RequestMeta{}); err != nil {
		t.Fatal(err)
	}
	err := s.Recover(ctx, "r1@example.com", auth.RequestMeta{})
	wantCode(t, err, auth.CodeOverEmailRateLimit)
	if e, _ := auth.AsError(err); e.RetryAfter <= 0 {
		t.Fatal("no retry time")
	}
	if err := s.Recover(ctx, "r2@example.com", auth.RequestMeta{}); err != nil {
		t.Fatal(err)
	}
	// The third mail of the hour, to another address, passes the hourly
	// bound of two no more.
	wantCode(t, s.Recover(ctx, "r3@example.com", auth.RequestMeta{}), auth.CodeOverEmailRateLimit)
	if mp.Count(t, "r1@example.com") != 1 || mp.Count(t, "r3@example.com") != 0 {
		t.Fatal("a refused mail was sent")
	}
}
