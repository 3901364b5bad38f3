// Package migrations holds Fluxbase's versioned SQL, embedded in the binary,
// and applies it with goose under a PostgreSQL session advisory lock, so any
// number of nodes (or `fluxbase migrate` processes) starting at once apply
// each migration exactly once. Applied versions are recorded in
// fluxbase.schema_migrations.
//
// It owns the schema Fluxbase itself needs (roles, the auth helpers, and the
// tables of later features), not the application's tables.
//
// Naming a migration: a new file in sql/ is named YYYYMMDDHHMMSS_name.sql,
// its UTC creation time (`date -u +%Y%m%d%H%M%S`) then a lower-case name,
// never the next number in a sequence: features developed side by side would
// each take the same next number. Only the first three files keep their
// sequential versions (00001–00003), which deployed databases have recorded.
// The migrator refuses any other name. Branches may land in either order,
// so a migration older than the newest applied one is applied too, once,
// rather than refused (goose's out-of-order mode).
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"time"

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
// A pending migration older than the newest applied one (a branch that
// landed late) is applied before the newer pending ones.
func Up(ctx context.Context, databaseURL string) ([]Result, error) {
	fsys, err := embedded()
	if err != nil {
		return nil, err
	}
	return up(ctx, databaseURL, fsys)
}

// up is Up with the migrations of fsys.
func up(ctx context.Context, databaseURL string, fsys fs.FS) ([]Result, error) {
	db, err := sql.Open("pgx", databaseURL)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	defer db.Close()
	if err := ensureSchema(ctx, db); err != nil {
		return nil, err
	}
	p, err := provider(db, fsys)
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
// Equal versions do not mean nothing is pending: an older migration that
// landed late may still be; Up applies it.
func Version(ctx context.Context, databaseURL string) (current, latest int64, err error) {
	fsys, err := embedded()
	if err != nil {
		return 0, 0, err
	}
	db, err := sql.Open("pgx", databaseURL)
	if err != nil {
		return 0, 0, fmt.Errorf("open database: %w", err)
	}
	defer db.Close()
	if err := ensureSchema(ctx, db); err != nil {
		return 0, 0, err
	}
	p, err := provider(db, fsys)
	if err != nil {
		return 0, 0, err
	}
	return p.GetVersions(ctx)
}

// embedded is the directory of the embedded migrations.
func embedded() (fs.FS, error) { return fs.Sub(files, "sql") }

func provider(db *sql.DB, fsys fs.FS) (*goose.Provider, error) {
	if err := checkNames(fsys); err != nil {
		return nil, err
	}
	// Retry the lock every second for up to ten minutes: a waiting node
	// starts as soon as the one migrating is done.
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(lockID), lock.WithLockTimeout(1, 600))
	if err != nil {
		return nil, err
	}
	return goose.NewProvider(goose.DialectPostgres, db, fsys,
		goose.WithSessionLocker(locker),
		goose.WithTableName(Table),
		goose.WithDisableGlobalRegistry(true),
		// Timestamped migrations of branches that landed in either order.
		goose.WithAllowOutofOrder(true),
	)
}

// legacyVersions are the sequential versions of the first migrations, kept
// because deployed databases have them recorded.
var legacyVersions = map[string]bool{"00001": true, "00002": true, "00003": true}

// migrationName is a version, an underscore, a lower-case name and .sql.
var migrationName = regexp.MustCompile(`^([0-9]+)_[a-z0-9][a-z0-9_]*\.sql$`)

// timestampLayout is a new migration's version: its UTC creation time.
const timestampLayout = "20060102150405"

// checkNames refuses every file of fsys that is not named as a migration
// must be: one of the legacy versions, or a UTC timestamp YYYYMMDDHHMMSS,
// then _name.sql. Goose would take a new sequential number (a collision
// waiting for the next branch) and silently skip a name without a version.
func checkNames(fsys fs.FS) error {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	var bad []error
	for _, e := range entries {
		if err := checkName(e.Name()); err != nil {
			bad = append(bad, err)
		}
	}
	return errors.Join(bad...)
}

func checkName(name string) error {
	m := migrationName.FindStringSubmatch(name)
	if m != nil && legacyVersions[m[1]] {
		return nil
	}
	if m != nil && len(m[1]) == len(timestampLayout) {
		if ts, err := time.Parse(timestampLayout, m[1]); err == nil && ts.Year() >= 2000 {
			return nil
		}
	}
	return fmt.Errorf("migrations: %q: name a migration YYYYMMDDHHMMSS_name.sql, its UTC creation time "+
		"and a lower-case name (only 00001–00003 keep sequential versions)", name)
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
