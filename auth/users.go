package auth

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// User is a user as GoTrue shows it: the JSON of GET /user, of the admin
// API and of a session's user. Times a user has not reached are left
// out, as GoTrue leaves them out.
type User struct {
	ID                 string         `json:"id"`
	Aud                string         `json:"aud"`
	Role               string         `json:"role"`
	Email              string         `json:"email"`
	EmailConfirmedAt   *time.Time     `json:"email_confirmed_at,omitempty"`
	Phone              string         `json:"phone"`
	PhoneConfirmedAt   *time.Time     `json:"phone_confirmed_at,omitempty"`
	ConfirmationSentAt *time.Time     `json:"confirmation_sent_at,omitempty"`
	ConfirmedAt        *time.Time     `json:"confirmed_at,omitempty"`
	RecoverySentAt     *time.Time     `json:"recovery_sent_at,omitempty"`
	NewEmail           string         `json:"new_email,omitempty"`
	InvitedAt          *time.Time     `json:"invited_at,omitempty"`
	LastSignInAt       *time.Time     `json:"last_sign_in_at,omitempty"`
	AppMetadata        map[string]any `json:"app_metadata"`
	UserMetadata       map[string]any `json:"user_metadata"`
	Identities         []Identity     `json:"identities"`
	Factors            []Factor       `json:"factors,omitempty"`
	CreatedAt          time.Time      `json:"created_at"`
	UpdatedAt          time.Time      `json:"updated_at"`
	BannedUntil        *time.Time     `json:"banned_until,omitempty"`
	IsAnonymous        bool           `json:"is_anonymous"`

	encryptedPassword string
}

// Identity links a user to a provider: for "email" its id is the user's.
type Identity struct {
	IdentityID   string         `json:"identity_id"`
	ID           string         `json:"id"`
	UserID       string         `json:"user_id"`
	IdentityData map[string]any `json:"identity_data"`
	Provider     string         `json:"provider"`
	Email        string         `json:"email,omitempty"`
	LastSignInAt *time.Time     `json:"last_sign_in_at,omitempty"`
	CreatedAt    time.Time      `json:"created_at"`
	UpdatedAt    time.Time      `json:"updated_at"`
}

// banned reports whether the user is banned at now.
func (u *User) banned(now time.Time) bool { return u.BannedUntil != nil && u.BannedUntil.After(now) }

// querier is what both a pool and a transaction offer.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

const userColumns = `id::text, coalesce(aud, ''), coalesce(role, ''), coalesce(email, ''),
	coalesce(encrypted_password, ''), email_confirmed_at, coalesce(phone, ''), phone_confirmed_at,
	confirmation_sent_at, confirmed_at, recovery_sent_at, coalesce(email_change, ''), invited_at,
	last_sign_in_at, coalesce(raw_app_meta_data, '{}'), coalesce(raw_user_meta_data, '{}'),
	coalesce(created_at, now()), coalesce(updated_at, now()), banned_until, is_anonymous`

func scanUser(row pgx.Row) (*User, error) {
	u := &User{}
	err := row.Scan(&u.ID, &u.Aud, &u.Role, &u.Email, &u.encryptedPassword, &u.EmailConfirmedAt,
		&u.Phone, &u.PhoneConfirmedAt, &u.ConfirmationSentAt, &u.ConfirmedAt, &u.RecoverySentAt,
		&u.NewEmail, &u.InvitedAt, &u.LastSignInAt, &u.AppMetadata, &u.UserMetadata,
		&u.CreatedAt, &u.UpdatedAt, &u.BannedUntil, &u.IsAnonymous)
	if err != nil {
		return nil, err
	}
	if u.AppMetadata == nil {
		u.AppMetadata = map[string]any{}
	}
	if u.UserMetadata == nil {
		u.UserMetadata = map[string]any{}
	}
	u.Identities = []Identity{}
	return u, nil
}

// userBy loads one user and its identities; nil when there is none.
// forUpdate locks the user's row for the transaction.
func userBy(ctx context.Context, q querier, where string, arg any, forUpdate bool) (*User, error) {
	sql := `select ` + userColumns + ` from auth.users where ` + where
	if forUpdate {
		sql += ` for update`
	}
	u, err := scanUser(q.QueryRow(ctx, sql, arg))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load user: %w", err)
	}
	if err := loadIdentities(ctx, q, u); err != nil {
		return nil, err
	}
	if u.Factors, err = loadFactors(ctx, q, u.ID); err != nil {
		return nil, err
	}
	return u, nil
}

func userByID(ctx context.Context, q querier, id string, forUpdate bool) (*User, error) {
	if !validUUID(id) {
		return nil, nil
	}
	return userBy(ctx, q, `id = $1::uuid`, id, forUpdate)
}

func userByEmail(ctx context.Context, q querier, email string) (*User, error) {
	return userBy(ctx, q, `lower(email) = $1 and is_sso_user = false`, email, false)
}

func loadIdentities(ctx context.Context, q querier, u *User) error {
	rows, err := q.Query(ctx, `select id::text, provider_id, user_id::text, identity_data, provider,
		coalesce(email, ''), last_sign_in_at, coalesce(created_at, now()), coalesce(updated_at, now())
		from auth.identities where user_id = $1::uuid order by created_at, id`, u.ID)
	if err != nil {
		return fmt.Errorf("load identities: %w", err)
	}
	ids, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Identity, error) {
		var i Identity
		err := r.Scan(&i.IdentityID, &i.ID, &i.UserID, &i.IdentityData, &i.Provider, &i.Email,
			&i.LastSignInAt, &i.CreatedAt, &i.UpdatedAt)
		return i, err
	})
	if err != nil {
		return fmt.Errorf("load identities: %w", err)
	}
	u.Identities = ids
	return nil
}

// instanceID is the instance every Supabase row carries.
const instanceID = "00000000-0000-0000-0000-000000000000"

// newUser is a user row to insert.
type newUser struct {
	id, email, phone, hash, role string
	emailConfirmed, phoneConfirm bool
	appMeta, userMeta            map[string]any
	anonymous                    bool
	bannedUntil                  *time.Time
}

// insertUser writes a user and, for an address, its email identity.
func insertUser(ctx context.Context, q querier, n newUser, now time.Time) error {
	var emailConfirmedAt, phoneConfirmedAt *time.Time
	if n.emailConfirmed && n.email != "" {
		emailConfirmedAt = &now
	}
	if n.phoneConfirm && n.phone != "" {
		phoneConfirmedAt = &now
	}
	_, err := q.Exec(ctx, `insert into auth.users (instance_id, id, aud, role, email, encrypted_password,
		email_confirmed_at, phone, phone_confirmed_at, raw_app_meta_data, raw_user_meta_data, created_at, updated_at,
		is_anonymous, banned_until, confirmation_token, recovery_token, email_change_token_new, email_change, is_super_admin)
		values ($1::uuid, $2::uuid, 'authenticated', $3, nullif($4, ''), $5, $6, nullif($7, ''), $8, $9, $10, $11, $11,
		$12, $13, '', '', '', '', false)`,
		instanceID, n.id, n.role, n.email, n.hash, emailConfirmedAt, n.phone, phoneConfirmedAt,
		n.appMeta, n.userMeta, now, n.anonymous, n.bannedUntil)
	if isUniqueViolation(err) {
		return fail(CodeEmailExists, "A user with this email address has already been registered")
	}
	if err != nil {
		return fmt.Errorf("insert user: %w", err)
	}
	if n.email == "" {
		return nil
	}
	data := map[string]any{"sub": n.id, "email": n.email, "email_verified": n.emailConfirmed, "phone_verified": false}
	_, err = q.Exec(ctx, `insert into auth.identities (provider_id, user_id, identity_data, provider, last_sign_in_at, created_at, updated_at)
		values ($1, $2::uuid, $3, 'email', $4, $4, $4)`, n.id, n.id, data, now)
	if err != nil {
		return fmt.Errorf("insert identity: %w", err)
	}
	return nil
}

// isUniqueViolation maps the driver's unique_violation, once, here.
func isUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// emailAppMeta is the app_metadata of a user who signs in with email.
func emailAppMeta(extra map[string]any) map[string]any {
	m := map[string]any{}
	for k, v := range extra {
		m[k] = v
	}
	m["provider"] = "email"
	m["providers"] = []string{"email"}
	return m
}

// NormalizeEmail trims and lower-cases an address, as GoTrue stores it,
// and refuses what is not one plain address: invalid UTF-8, control or
// format characters (zero-width joiners, direction marks), spaces, a
// display name, more than 255 bytes.
func NormalizeEmail(s string) (string, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	bad := fail(CodeEmailAddressInvalid, "Unable to validate email address: invalid format")
	if s == "" || len(s) > 255 || !utf8.ValidString(s) {
		return "", bad
	}
	for _, r := range s {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || unicode.IsSpace(r) || r == utf8.RuneError {
			return "", bad
		}
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s || a.Name != "" {
		return "", bad
	}
	local, domain, _ := strings.Cut(s, "@")
	if local == "" || !strings.Contains(domain, ".") || strings.HasPrefix(domain, ".") || strings.HasSuffix(domain, ".") {
		return "", bad
	}
	return s, nil
}

// newUUID returns a random (version 4) UUID.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func validUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// randomToken returns n random bytes, base64url without padding.
func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
