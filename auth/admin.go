package auth

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// AdminUser is what the admin API sets on a user; nil fields are left as
// they are (or at their defaults on create).
type AdminUser struct {
	Email        *string
	Phone        *string
	Password     *string
	PasswordHash *string
	EmailConfirm *bool
	PhoneConfirm *bool
	UserMetadata map[string]any
	AppMetadata  map[string]any
	Role         *string
	// BanDuration is a Go duration ("24h") or "none" to lift a ban.
	BanDuration *string
}

func (s *Service) adminRole(r *string) (string, error) {
	if r == nil || *r == "" {
		return RoleAuthenticated, nil
	}
	switch *r {
	case RoleAuthenticated, RoleAnon, RoleServiceRole:
		return *r, nil
	}
	return "", fail(CodeValidationFailed, "role must be authenticated, anon or service_role")
}

// banUntil parses a ban_duration: nil for "none", the end of the ban
// otherwise.
func (s *Service) banUntil(d string) (*time.Time, error) {
	if d == "none" {
		return nil, nil
	}
	dur, err := time.ParseDuration(d)
	if err != nil || dur < 0 {
		return nil, fail(CodeValidationFailed, "invalid format for ban duration: %s", d)
	}
	t := s.now().Add(dur)
	return &t, nil
}

// passwordHash is the hash to store for a's password or imported hash.
func (s *Service) passwordHash(ctx context.Context, a AdminUser) (string, error) {
	switch {
	case a.PasswordHash != nil && *a.PasswordHash != "":
		if !validHash(*a.PasswordHash) {
			return "", fail(CodeValidationFailed, "Invalid password hash format: only bcrypt hashes are accepted")
		}
		return *a.PasswordHash, nil
	case a.Password != nil:
		if err := s.checkPassword(*a.Password); err != nil {
			return "", err
		}
		return s.hash.hash(ctx, *a.Password)
	}
	return "", nil
}

// CreateUser creates a user for the admin, with no mail sent and no
// session. A password_hash (bcrypt, as another system made it) is stored
// as given, so the user signs in with the password it hashes.
func (s *Service) CreateUser(ctx context.Context, a AdminUser) (*User, error) {
	var email string
	if a.Email != nil && *a.Email != "" {
		var err error
		if email, err = NormalizeEmail(*a.Email); err != nil {
			return nil, err
		}
	}
	if a.Phone != nil && *a.Phone != "" {
		return nil, fail(CodePhoneProviderMissing, "Phone logins are disabled")
	}
	if email == "" {
		return nil, fail(CodeValidationFailed, "Unable to validate email address: an email address is required")
	}
	role, err := s.adminRole(a.Role)
	if err != nil {
		return nil, err
	}
	var banned *time.Time
	if a.BanDuration != nil {
		if banned, err = s.banUntil(*a.BanDuration); err != nil {
			return nil, err
		}
	}
	hash, err := s.passwordHash(ctx, a)
	if err != nil {
		return nil, err
	}
	userMeta := a.UserMetadata
	if userMeta == nil {
		userMeta = map[string]any{}
	}
	id := newUUID()
	var u *User
	err = pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		err := insertUser(ctx, tx, newUser{id: id, email: email, hash: hash, role: role,
			emailConfirmed: a.EmailConfirm != nil && *a.EmailConfirm, appMeta: emailAppMeta(a.AppMetadata),
			userMeta: userMeta, bannedUntil: banned}, s.now())
		if err != nil {
			return err
		}
		u, err = userByID(ctx, tx, id, false)
		return err
	})
	return u, err
}

// ListUsers returns a page of users, newest first, and how many there
// are in all. page counts from 1.
func (s *Service) ListUsers(ctx context.Context, page, perPage int) ([]*User, int, error) {
	var total int
	if err := s.db.QueryRow(ctx, `select count(*) from auth.users`).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count users: %w", err)
	}
	rows, err := s.db.Query(ctx, `select `+userColumns+` from auth.users order by created_at desc, id desc limit $1 offset $2`,
		perPage, (page-1)*perPage)
	if err != nil {
		return nil, 0, fmt.Errorf("list users: %w", err)
	}
	users, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*User, error) { return scanUser(r) })
	if err != nil {
		return nil, 0, fmt.Errorf("list users: %w", err)
	}
	for _, u := range users {
		if err := loadIdentities(ctx, s.db, u); err != nil {
			return nil, 0, err
		}
	}
	return users, total, nil
}

// GetUser returns the user with id, or user_not_found.
func (s *Service) GetUser(ctx context.Context, id string) (*User, error) {
	u, err := userByID(ctx, s.db, id, false)
	if err != nil {
		return nil, err
	}
	if u == nil {
		return nil, fail(CodeUserNotFound, "User not found")
	}
	return u, nil
}

// AdminUpdateUser changes a user for the admin. A ban or a new password
// ends every session of the user and revokes its access tokens on every
// node.
func (s *Service) AdminUpdateUser(ctx context.Context, id string, a AdminUser) (*User, error) {
	if _, err := s.GetUser(ctx, id); err != nil {
		return nil, err
	}
	var email string
	if a.Email != nil {
		var err error
		if email, err = NormalizeEmail(*a.Email); err != nil {
			return nil, err
		}
	}
	if a.Phone != nil && *a.Phone != "" {
		return nil, fail(CodePhoneProviderMissing, "Phone logins are disabled")
	}
	var role string
	if a.Role != nil {
		var err error
		if role, err = s.adminRole(a.Role); err != nil {
			return nil, err
		}
	}
	var banned *time.Time
	if a.BanDuration != nil {
		var err error
		if banned, err = s.banUntil(*a.BanDuration); err != nil {
			return nil, err
		}
	}
	hash, err := s.passwordHash(ctx, a)
	if err != nil {
		return nil, err
	}
	return s.mutateUser(ctx, id, func(tx pgx.Tx, u *User, now time.Time) ([]string, error) {
		exec := func(sql string, args ...any) error {
			if _, err := tx.Exec(ctx, sql, append([]any{id, now}, args...)...); err != nil {
				return fmt.Errorf("update user: %w", err)
			}
			return nil
		}
		if a.UserMetadata != nil {
			if err := exec(`update auth.users set raw_user_meta_data = $3, updated_at = $2 where id = $1::uuid`, mergeMeta(u.UserMetadata, a.UserMetadata)); err != nil {
				return nil, err
			}
		}
		if a.AppMetadata != nil {
			if err := exec(`update auth.users set raw_app_meta_data = $3, updated_at = $2 where id = $1::uuid`, mergeMeta(u.AppMetadata, a.AppMetadata)); err != nil {
				return nil, err
			}
		}
		if a.Role != nil {
			if err := exec(`update auth.users set role = $3, updated_at = $2 where id = $1::uuid`, role); err != nil {
				return nil, err
			}
		}
		if a.EmailConfirm != nil && *a.EmailConfirm {
			if err := exec(`update auth.users set email_confirmed_at = coalesce(email_confirmed_at, $2), updated_at = $2 where id = $1::uuid`); err != nil {
				return nil, err
			}
		}
		if a.Email != nil && email != u.Email {
			taken, err := userByEmail(ctx, tx, email)
			if err != nil {
				return nil, err
			}
			if taken != nil {
				return nil, fail(CodeEmailExists, "A user with this email address has already been registered")
			}
			if err := exec(`update auth.users set email = $3, updated_at = $2 where id = $1::uuid`, email); err != nil {
				return nil, err
			}
			if err := exec(`update auth.identities set identity_data = identity_data || jsonb_build_object('email', $3::text),
				updated_at = $2 where user_id = $1::uuid and provider = 'email'`, email); err != nil {
				return nil, err
			}
		}
		endAll := false
		if hash != "" {
			if err := exec(`update auth.users set encrypted_password = $3, updated_at = $2 where id = $1::uuid`, hash); err != nil {
				return nil, err
			}
			endAll = true
		}
		if a.BanDuration != nil {
			if err := exec(`update auth.users set banned_until = $3, updated_at = $2 where id = $1::uuid`, banned); err != nil {
				return nil, err
			}
			endAll = endAll || banned != nil
		}
		if !endAll {
			return nil, nil
		}
		return deleteSessions(ctx, tx, `user_id = $1::uuid`, id)
	})
}

// DeleteUser deletes a user with everything that belongs to it, and
// revokes the access tokens of its sessions on every node.
func (s *Service) DeleteUser(ctx context.Context, id string) error {
	if !validUUID(id) {
		return fail(CodeUserNotFound, "User not found")
	}
	var ended []string
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		var err error
		if ended, err = deleteSessions(ctx, tx, `user_id = $1::uuid`, id); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `delete from auth.users where id = $1::uuid`, id)
		if err != nil {
			return fmt.Errorf("delete user: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return fail(CodeUserNotFound, "User not found")
		}
		return nil
	})
	if err != nil {
		return err
	}
	return s.revoke(ctx, ended)
}
