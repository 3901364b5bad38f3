package migrations_test

import (
	"context"
	"os"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/fluxbase/fluxbase/internal/pgtest"
	"github.com/fluxbase/fluxbase/migrations"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// Five migrators race on one empty database: all succeed, and between them
// each migration is applied exactly once.
func TestUpConcurrent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.NewDB(t)

	const n = 5
	var wg sync.WaitGroup
	results := make([][]migrations.Result, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = migrations.Up(ctx, url)
		}()
	}
	wg.Wait()

	applied := map[int64]int{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("migrator %d: %v", i, errs[i])
		}
		for _, r := range results[i] {
			applied[r.Version]++
		}
	}
	current, latest, err := migrations.Version(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if current != latest || latest < 2 {
		t.Fatalf("version %d of %d after migrating", current, latest)
	}
	for v := int64(1); v <= latest; v++ {
		if applied[v] != 1 {
			t.Errorf("migration %d applied %d times", v, applied[v])
		}
	}

	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var rows int
	if err := conn.QueryRow(ctx, "select count(*) from "+migrations.Table+" where version_id > 0").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if int64(rows) != latest {
		t.Fatalf("bookkeeping table has %d rows, want %d", rows, latest)
	}
}

func TestAuthHelpersReadClaims(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.NewDB(t)
	if _, err := migrations.Up(ctx, url); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	const sub = "7d8f2a4e-0d1b-4c8e-9a55-3b1f6c2d9e10"
	if _, err := tx.Exec(ctx, `select set_config('request.jwt.claims', $1, true)`,
		`{"sub":"`+sub+`","role":"authenticated","email":"a@example.com"}`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `set local role authenticated`); err != nil {
		t.Fatal(err)
	}
	var uid, role, email, currentRole string
	if err := tx.QueryRow(ctx, `select auth.uid()::text, auth.role(), auth.jwt()->>'email', current_user`).
		Scan(&uid, &role, &email, &currentRole); err != nil {
		t.Fatal(err)
	}
	if uid != sub || role != "authenticated" || email != "a@example.com" || currentRole != "authenticated" {
		t.Fatalf("got uid=%s role=%s email=%s current_user=%s", uid, role, email, currentRole)
	}

	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	// Without claims the helpers answer NULL rather than failing.
	var nullUID *string
	if err := conn.QueryRow(ctx, `select auth.uid()::text`).Scan(&nullUID); err != nil || nullUID != nil {
		t.Fatalf("auth.uid() without claims = %v, %v; want NULL", nullUID, err)
	}

	var bypass bool
	if err := conn.QueryRow(ctx, `select rolbypassrls from pg_roles where rolname = 'service_role'`).Scan(&bypass); err != nil || !bypass {
		t.Fatalf("service_role bypassrls = %v, %v", bypass, err)
	}
}

// Roles belong to the whole cluster: databases of one cluster migrating at
// the same moment must not trip over each other's role changes.
func TestUpConcurrentDatabases(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const n = 4
	urls := make([]string, n)
	for i := range urls {
		urls[i] = pgtest.NewDB(t)
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = migrations.Up(ctx, urls[i])
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("database %d: %v", i, err)
		}
	}
}
