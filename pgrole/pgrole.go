// Package pgrole runs SQL as a request's database role, the one way every
// surface does it: the role, the request's JWT claims where auth.uid(),
// auth.jwt() and row-level policies read them (request.jwt.claims,
// request.jwt.claim.sub, request.jwt.claim.role), and any further
// settings are made with set_config(..., true), local to one
// transaction. They hold for the statements after them in it and end
// with it, committed or rolled back, so nothing is left on a pooled
// connection for its next use.
//
// SET ROLE does not apply what a role has set of its own (ALTER ROLE anon
// SET statement_timeout = '3s'); Roles reads those settings and As made
// from it makes them too, in the same statement, so a request runs under
// its role's statement timeout as if it had logged in as the role.
//
// It knows nothing of HTTP or of how tokens are verified: it takes the
// role name and the claims as plain values, so the auth package and every
// HTTP surface may use it. Functions are qualified with pg_catalog, so a
// search_path cannot redirect them.
package pgrole

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// As is who a statement runs as.
type As struct {
	// Role is the database role; it must not be empty.
	Role string
	// Claims are the JWT claims as a JSON object; empty means {}.
	Claims []byte
	// ReadOnly makes the transaction read-only.
	ReadOnly bool
	// Settings are further settings local to the transaction, by name
	// (realtime.topic, say).
	Settings map[string]string
	// RoleSettings are the role's own settings (see Roles), made before
	// Settings, which win over them.
	RoleSettings []Setting
}

// ErrNoRole is an As without a role, refused rather than run as the
// pool's own user.
var ErrNoRole = errors.New("pgrole: no role to run as")

// ClaimsSQL is the select list that makes the claims in the SQL
// expression claims (a parameter such as "$1") the request's, as the
// statement of As does: for a statement that sets them itself, such as
// the body of a function called once for each of several claims.
func ClaimsSQL(claims string) string {
	return "pg_catalog.set_config('request.jwt.claims', " + claims + ", true),\n" +
		"  pg_catalog.set_config('request.jwt.claim.sub', coalesce(" + claims + "::jsonb ->> 'sub', ''), true)"
}

// statement is the one select that makes a the transaction's, and its
// arguments. Its text depends only on which settings are made, so a
// connection that prepares it keeps few shapes.
func (a As) statement() (string, []any) {
	claims := string(a.Claims)
	if len(strings.TrimSpace(claims)) == 0 {
		claims = "{}"
	}
	var b strings.Builder
	b.WriteString("select pg_catalog.set_config('role', $1, true),\n  ")
	b.WriteString(ClaimsSQL("$2"))
	b.WriteString(",\n  pg_catalog.set_config('request.jwt.claim.role', $1, true)")
	if a.ReadOnly {
		b.WriteString(",\n  pg_catalog.set_config('transaction_read_only', 'on', true)")
	}
	args := []any{a.Role, claims}
	for _, rs := range a.RoleSettings {
		fmt.Fprintf(&b, ",\n  pg_catalog.set_config($%d, $%d, true)", len(args)+1, len(args)+2)
		args = append(args, rs.Name, rs.Value)
	}
	names := make([]string, 0, len(a.Settings))
	for name := range a.Settings {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		fmt.Fprintf(&b, ",\n  pg_catalog.set_config($%d, $%d, true)", len(args)+1, len(args)+2)
		args = append(args, name, a.Settings[name])
	}
	return b.String(), args
}

// Queue queues the statement that makes a the transaction's, for a
// pipeline: queued first in a batch sent with one Sync, which PostgreSQL
// runs as one implicit transaction, it holds for the batch's statements
// after it, all in one round trip. Its result is one row to read (or
// Exec) before the others'. An empty Role queues a statement that fails.
func (a As) Queue(b *pgx.Batch) {
	if a.Role == "" {
		b.Queue("select pg_catalog.set_config('role', '', true)")
		return
	}
	sql, args := a.statement()
	b.Queue(sql, args...)
}

// Set makes a the role and settings of the open transaction tx, for the
// rest of it.
func (a As) Set(ctx context.Context, tx pgx.Tx) error {
	if a.Role == "" {
		return ErrNoRole
	}
	sql, args := a.statement()
	if _, err := tx.Exec(ctx, sql, append([]any{pgx.QueryExecModeExec}, args...)...); err != nil {
		return fmt.Errorf("switch to role %s: %w", a.Role, err)
	}
	return nil
}

// Beginner starts transactions: a pool, a connection or a transaction
// (which begins a savepoint).
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Tx runs fn in a transaction on db as a, and commits when fn succeeds;
// when it fails, or the commit does, the transaction is rolled back.
func Tx(ctx context.Context, db Beginner, a As, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if err := a.Set(ctx, tx); err != nil {
			return err
		}
		return fn(tx)
	})
}
