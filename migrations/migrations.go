// Package migrations holds Fluxbase's versioned SQL, embedded in the binary,
// and applies it with goose under a PostgreSQL session advisory lock, so any
// number of nodes (or `fluxbase migrate` processes) starting at once apply
// each migration exactly once. Applied versions are recorded in
// fluxbase.schema_migrations.
//
// It owns the schema Fluxbase itself needs (roles, the auth helpers, and the
// tables of later features), not the application's tables.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx" for goose
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

//go:embed sql/*.sql
var files embed.FS

// Table records the applied versions.
const Table = "fluxbase.schema_migrations"

// lockID is the advisory lock key migrations hold ("fluxbase" in ASCII).
const lockID = 0x666c7578626173

// Result is one applied migration.
type Result struct {
	Version int64
	Source  string
}

// Up applies every pending migration to the database at databaseURL and
// returns what it applied (nothing when the schema is current). Callers that
// lose the race for the lock wait for the winner, then find nothing to do.
func Up(ctx context.Context, databaseURL string) ([]Result, error) {
	db, err := sql.Open("pgx", databaseURL)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	defer db.Close()
	if err := ensureSchema(ctx, db); err != nil {
		return nil, err
	}
	p, err := provider(db)
	if err != nil {
		return nil, err
	}
	results, err := p.Up(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	out := make([]Result, 0, len(results))
	for _, r := range results {
		out = append(out, Result{Version: r.Source.Version, Source: r.Source.Path})
	}
	return out, nil
}

// Version returns the newest applied version and the newest embedded one.
func Version(ctx context.Context, databaseURL string) (current, latest int64, err error) {
	db, err := sql.Open("pgx", databaseURL)
	if err != nil {
		return 0, 0, fmt.Errorf("open database: %w", err)
	}
	defer db.Close()
	if err := ensureSchema(ctx, db); err != nil {
		return 0, 0, err
	}
	p, err := provider(db)
	if err != nil {
		return 0, 0, err
	}
	return p.GetVersions(ctx)
}

func provider(db *sql.DB) (*goose.Provider, error) {
	sub, err := fs.Sub(files, "sql")
	if err != nil {
		return nil, err
	}
	// Retry the lock every second for up to ten minutes: a waiting node
	// starts as soon as the one migrating is done.
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(lockID), lock.WithLockTimeout(1, 600))
	if err != nil {
		return nil, err
	}
	return goose.NewProvider(goose.DialectPostgres, db, sub,
		goose.WithSessionLocker(locker),
		goose.WithTableName(Table),
		goose.WithDisableGlobalRegistry(true),
	)
}

// ensureSchema creates the schema of the bookkeeping table, which goose needs
// before it takes its lock. Two nodes may race here; the loser sees the
// schema exist.
func ensureSchema(ctx context.Context, db *sql.DB) error {
	_, err := db.ExecContext(ctx, "create schema if not exists fluxbase")
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		return nil
	}
	if err != nil {
		return fmt.Errorf("create schema fluxbase: %w", err)
	}
	return nil
}
