package auth

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Revoker makes a session's access tokens refused on every node until
// the time given (when they have all expired).
type Revoker interface {
	Revoke(ctx context.Context, until time.Time, sessionIDs ...string) error
}

// Service is the user side of auth: sign-up, sign-in, sessions, refresh
// rotation, the user's own updates and the admin's. It runs its SQL on
// the pool as the server's own database user (the auth tables are not
// granted to the request roles), every value a parameter.
type Service struct {
	cfg     Config
	db      *pgxpool.Pool
	hash    *hasher
	revoker Revoker
	oidc    *oidcProvider
	now     func() time.Time
}

// NewService returns the service on db. revoker, when not nil, is told of
// every ended session.
func NewService(cfg Config, db *pgxpool.Pool, revoker Revoker) (*Service, error) {
	cfg = cfg.withDefaults()
	if len(cfg.JWTSecret) < MinSecretLength {
		return nil, fmt.Errorf("JWT secret must be at least %d characters", MinSecretLength)
	}
	h, err := newHasher(cfg.BcryptCost, cfg.HashWorkers)
	if err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, db: db, hash: h, revoker: revoker, now: time.Now}
	if cfg.OIDC != nil {
		oc := *cfg.OIDC
		if oc.Name == "" {
			oc.Name = "oidc"
		}
		s.oidc = &oidcProvider{cfg: oc, client: &http.Client{Timeout: 10 * time.Second}}
	}
	return s, nil
}

// Config is the service's configuration with defaults filled in.
func (s *Service) Config() Config { return s.cfg }

// RequestMeta is what a sign-in records of the request, and what a flow
// that mails a link carries to it: where to land, and for PKCE the
// challenge (method "s256" or "plain").
type RequestMeta struct {
	UserAgent string
	IP        string

	RedirectTo          string
	CodeChallenge       string
	CodeChallengeMethod string
}

func (m RequestMeta) ip() *string {
	if net.ParseIP(m.IP) == nil {
		return nil
	}
	return &m.IP
}

// maxPasswordBytes is bcrypt's limit: it ignores what follows.
const maxPasswordBytes = 72

func (s *Service) checkPassword(p string) error {
	if !utf8.ValidString(p) {
		return fail(CodeValidationFailed, "Password is not valid UTF-8")
	}
	if len(p) > maxPasswordBytes {
		return fail(CodeValidationFailed, "Password cannot be longer than %d characters", maxPasswordBytes)
	}
	if utf8.RuneCountInString(p) < s.cfg.MinPasswordLength {
		return &Error{Code: CodeWeakPassword, Message: fmt.Sprintf("Password should be at least %d characters.", s.cfg.MinPasswordLength),
			Reasons: []string{"length"}}
	}
	return nil
}

// SignUp creates a user with an email address and password. Under
// Autoconfirm the address is confirmed and a session returned; a repeat
// of a registered address is then refused with user_already_exists.
// Otherwise the bare user is returned, and a repeat gets an unsaved
// look-alike with no identities, so sign-up does not reveal who is
// registered.
func (s *Service) SignUp(ctx context.Context, email, password string, data map[string]any, meta RequestMeta) (*User, *Session, error) {
	if s.cfg.DisableSignup {
		return nil, nil, fail(CodeSignupDisabled, "Signups not allowed for this instance")
	}
	email, err := NormalizeEmail(email)
	if err != nil {
		return nil, nil, err
	}
	if err := s.checkPassword(password); err != nil {
		return nil, nil, err
	}
	hash, err := s.hash.hash(ctx, password)
	if err != nil {
		return nil, nil, err
	}
	if data == nil {
		data = map[string]any{}
	}
	var u *User
	var sess *Session
	err = pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		existing, err := userByEmail(ctx, tx, email)
		if err != nil {
			return err
		}
		now := s.now()
		if existing != nil {
			if s.cfg.Autoconfirm {
				return fail(CodeUserAlreadyExists, "User already registered")
			}
			u = &User{ID: newUUID(), Aud: RoleAuthenticated, Role: RoleAuthenticated, Email: email,
				AppMetadata: emailAppMeta(nil), UserMetadata: data, Identities: []Identity{}, CreatedAt: now, UpdatedAt: now}
			return nil
		}
		id := newUUID()
		if err := insertUser(ctx, tx, newUser{id: id, email: email, hash: hash, role: RoleAuthenticated,
			emailConfirmed: s.cfg.Autoconfirm, appMeta: emailAppMeta(nil), userMeta: data}, now); err != nil {
			if e, ok := AsError(err); ok && e.Code == CodeEmailExists {
				return fail(CodeUserAlreadyExists, "User already registered")
			}
			return err
		}
		if s.cfg.Autoconfirm {
			if _, err := tx.Exec(ctx, `update auth.users set last_sign_in_at = $2 where id = $1::uuid`, id, now); err != nil {
				return fmt.Errorf("sign in: %w", err)
			}
		}
		if u, err = userByID(ctx, tx, id, false); err != nil {
			return err
		}
		switch {
		case s.cfg.Autoconfirm:
			sess, err = s.startSession(ctx, tx, u, methodPassword, meta)
		case s.cfg.Mailer != nil:
			if err = s.sendToken(ctx, tx, u, "confirmation_token", OTPSignup, meta); err == nil {
				u, err = userByID(ctx, tx, id, false)
			}
		}
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return u, sess, nil
}

// SignUpAnonymous creates an anonymous user and signs it in.
func (s *Service) SignUpAnonymous(ctx context.Context, data map[string]any, meta RequestMeta) (*Session, error) {
	if !s.cfg.AnonymousUsers {
		return nil, fail(CodeAnonymousDisabled, "Anonymous sign-ins are disabled")
	}
	if s.cfg.DisableSignup {
		return nil, fail(CodeSignupDisabled, "Signups not allowed for this instance")
	}
	if data == nil {
		data = map[string]any{}
	}
	var sess *Session
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		id, now := newUUID(), s.now()
		if err := insertUser(ctx, tx, newUser{id: id, role: RoleAuthenticated, appMeta: map[string]any{},
			userMeta: data, anonymous: true}, now); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `update auth.users set last_sign_in_at = $2 where id = $1::uuid`, id, now); err != nil {
			return fmt.Errorf("sign in: %w", err)
		}
		u, err := userByID(ctx, tx, id, false)
		if err != nil {
			return err
		}
		sess, err = s.startSession(ctx, tx, u, methodAnonymous, meta)
		return err
	})
	return sess, err
}

// PasswordGrant signs a user in with email and password. An unknown
// address and a wrong password answer alike, invalid_credentials, after
// the same bcrypt work, so the answer tells nothing of who is registered.
func (s *Service) PasswordGrant(ctx context.Context, email, password string, meta RequestMeta) (*Session, error) {
	var u *User
	if norm, err := NormalizeEmail(email); err == nil {
		if u, err = userByEmail(ctx, s.db, norm); err != nil {
			return nil, err
		}
	}
	hash := ""
	if u != nil {
		hash = u.encryptedPassword
	}
	ok, err := s.hash.compare(ctx, hash, password)
	if err != nil {
		return nil, err
	}
	if !ok || u == nil {
		return nil, errInvalidCredentials
	}
	now := s.now()
	if u.banned(now) {
		return nil, fail(CodeUserBanned, "User is banned")
	}
	if u.EmailConfirmedAt == nil && !s.cfg.Autoconfirm {
		return nil, fail(CodeEmailNotConfirmed, "Email not confirmed")
	}
	var sess *Session
	err = pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `update auth.users set last_sign_in_at = $2, updated_at = $2 where id = $1::uuid`, u.ID, now); err != nil {
			return fmt.Errorf("sign in: %w", err)
		}
		if _, err := tx.Exec(ctx, `update auth.identities set last_sign_in_at = $2 where user_id = $1::uuid and provider = 'email'`, u.ID, now); err != nil {
			return fmt.Errorf("sign in: %w", err)
		}
		fresh, err := userByID(ctx, tx, u.ID, false)
		if err != nil {
			return err
		}
		if fresh == nil {
			return errInvalidCredentials // deleted meanwhile
		}
		sess, err = s.startSession(ctx, tx, fresh, methodPassword, meta)
		return err
	})
	return sess, err
}

// LogoutScope says which of a user's sessions a sign-out ends.
type LogoutScope string

// The scopes of POST /logout.
const (
	ScopeGlobal LogoutScope = "global"
	ScopeLocal  LogoutScope = "local"
	ScopeOthers LogoutScope = "others"
)

// Logout ends the user's sessions in scope, relative to sessionID (the
// token's), and revokes their access tokens on every node.
func (s *Service) Logout(ctx context.Context, userID, sessionID string, scope LogoutScope) error {
	if !validUUID(userID) {
		return nil
	}
	switch scope {
	case ScopeGlobal:
		return s.endSessions(ctx, `user_id = $1::uuid`, userID)
	case ScopeOthers:
		if !validUUID(sessionID) {
			return s.endSessions(ctx, `user_id = $1::uuid`, userID)
		}
		return s.endSessions(ctx, `user_id = $1::uuid and id <> $2::uuid`, userID, sessionID)
	default:
		if !validUUID(sessionID) {
			return nil
		}
		return s.endSessions(ctx, `user_id = $1::uuid and id = $2::uuid`, userID, sessionID)
	}
}

// User returns the user of a token: user_not_found when it is gone,
// session_not_found when the token's session has ended.
func (s *Service) User(ctx context.Context, userID, sessionID string) (*User, error) {
	u, err := userByID(ctx, s.db, userID, false)
	if err != nil {
		return nil, err
	}
	if u == nil {
		return nil, fail(CodeUserNotFound, "User from sub claim in JWT does not exist")
	}
	if sessionID != "" {
		var one int
		err := s.db.QueryRow(ctx, `select 1 from auth.sessions where id = $1::uuid and user_id = $2::uuid`, sessionID, userID).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) || !validUUID(sessionID) {
			return nil, fail(CodeSessionNotFound, "Session from session_id claim in JWT does not exist")
		}
		if err != nil {
			return nil, fmt.Errorf("load session: %w", err)
		}
	}
	return u, nil
}

// UserUpdate is what PUT /user changes; nil fields stay as they are.
type UserUpdate struct {
	Email    *string
	Password *string
	Phone    *string
	// Data merges into user_metadata; a key with a nil value is removed.
	Data map[string]any
}

// UpdateUser changes the user's own fields. A new password ends every
// other session of the user. A new address is taken at once under
// Autoconfirm (GoTrue does the same), otherwise recorded as new_email
// for a confirmation.
func (s *Service) UpdateUser(ctx context.Context, userID, sessionID string, upd UserUpdate) (*User, error) {
	if _, err := s.User(ctx, userID, sessionID); err != nil {
		return nil, err
	}
	var hash string
	if upd.Password != nil {
		if err := s.checkPassword(*upd.Password); err != nil {
			return nil, err
		}
		var err error
		if hash, err = s.hash.hash(ctx, *upd.Password); err != nil {
			return nil, err
		}
	}
	var email string
	if upd.Email != nil {
		var err error
		if email, err = NormalizeEmail(*upd.Email); err != nil {
			return nil, err
		}
	}
	if upd.Phone != nil && *upd.Phone != "" {
		return nil, fail(CodePhoneProviderMissing, "Phone logins are disabled")
	}
	return s.mutateUser(ctx, userID, func(tx pgx.Tx, u *User, now time.Time) ([]string, error) {
		if upd.Data != nil {
			if _, err := tx.Exec(ctx, `update auth.users set raw_user_meta_data = $2, updated_at = $3 where id = $1::uuid`,
				userID, mergeMeta(u.UserMetadata, upd.Data), now); err != nil {
				return nil, fmt.Errorf("update user: %w", err)
			}
		}
		var ended []string
		if upd.Password != nil {
			if u.encryptedPassword != "" {
				same, err := s.hash.compare(ctx, u.encryptedPassword, *upd.Password)
				if err != nil {
					return nil, err
				}
				if same {
					return nil, fail(CodeSamePassword, "New password should be different from the old password.")
				}
			}
			if _, err := tx.Exec(ctx, `update auth.users set encrypted_password = $2, updated_at = $3 where id = $1::uuid`, userID, hash, now); err != nil {
				return nil, fmt.Errorf("update password: %w", err)
			}
			where, args := `user_id = $1::uuid`, []any{userID}
			if validUUID(sessionID) {
				where, args = `user_id = $1::uuid and id <> $2::uuid`, []any{userID, sessionID}
			}
			var err error
			if ended, err = deleteSessions(ctx, tx, where, args...); err != nil {
				return nil, err
			}
		}
		if upd.Email != nil && email != u.Email {
			if err := s.changeEmail(ctx, tx, u, email, now); err != nil {
				return nil, err
			}
		}
		return ended, nil
	})
}

// mutateUser runs fn in a transaction on the user's locked row, then
// returns the user as it is after, and once the transaction has
// committed revokes the sessions fn ended.
func (s *Service) mutateUser(ctx context.Context, id string, fn func(tx pgx.Tx, u *User, now time.Time) (ended []string, err error)) (*User, error) {
	var ended []string
	var out *User
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		u, err := userByID(ctx, tx, id, true)
		if err != nil {
			return err
		}
		if u == nil {
			return fail(CodeUserNotFound, "User not found")
		}
		if ended, err = fn(tx, u, s.now()); err != nil {
			return err
		}
		out, err = userByID(ctx, tx, id, false)
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := s.revoke(ctx, ended); err != nil {
		return nil, err
	}
	return out, nil
}

// mergeMeta applies patch to meta as GoTrue does: a nil value removes
// its key, any other sets it.
func mergeMeta(meta, patch map[string]any) map[string]any {
	if meta == nil {
		meta = map[string]any{}
	}
	for k, v := range patch {
		if v == nil {
			delete(meta, k)
		} else {
			meta[k] = v
		}
	}
	return meta
}

// changeEmail gives u a new address, or records it for confirmation.
func (s *Service) changeEmail(ctx context.Context, tx pgx.Tx, u *User, email string, now time.Time) error {
	taken, err := userByEmail(ctx, tx, email)
	if err != nil {
		return err
	}
	if taken != nil && taken.ID != u.ID {
		return fail(CodeEmailExists, "A user with this email address has already been registered")
	}
	if !s.cfg.Autoconfirm {
		_, err := tx.Exec(ctx, `update auth.users set email_change = $2, updated_at = $3 where id = $1::uuid`, u.ID, email, now)
		if err != nil {
			return fmt.Errorf("update email: %w", err)
		}
		return nil
	}
	_, err = tx.Exec(ctx, `update auth.users set email = $2, email_confirmed_at = coalesce(email_confirmed_at, $3),
		email_change = '', is_anonymous = false, updated_at = $3,
		raw_app_meta_data = coalesce(raw_app_meta_data, '{}') || '{"provider":"email","providers":["email"]}'
		where id = $1::uuid`, u.ID, email, now)
	if isUniqueViolation(err) {
		return fail(CodeEmailExists, "A user with this email address has already been registered")
	}
	if err != nil {
		return fmt.Errorf("update email: %w", err)
	}
	data := map[string]any{"sub": u.ID, "email": email, "email_verified": true, "phone_verified": false}
	_, err = tx.Exec(ctx, `insert into auth.identities (provider_id, user_id, identity_data, provider, created_at, updated_at)
		values ($1, $2::uuid, $3, 'email', $4, $4)
		on conflict (provider_id, provider) do update set identity_data = excluded.identity_data, updated_at = excluded.updated_at`,
		u.ID, u.ID, data, now)
	if err != nil {
		return fmt.Errorf("update identity: %w", err)
	}
	return nil
}
