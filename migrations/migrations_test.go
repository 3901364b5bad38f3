package migrations_test

import (
	"context"
	"io/fs"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

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
	versions := fileVersions(t, migrations.Embedded())
	if current != latest || latest != versions[len(versions)-1] {
		t.Fatalf("version %d of %d after migrating, want %d", current, latest, versions[len(versions)-1])
	}
	if len(applied) != len(versions) {
		t.Errorf("applied versions %v, want %v", slices.Sorted(maps.Keys(applied)), versions)
	}
	for _, v := range versions {
		if applied[v] != 1 {
			t.Errorf("migration %d applied %d times", v, applied[v])
		}
	}
	if got := recorded(t, url); !slices.Equal(got, versions) {
		t.Fatalf("bookkeeping table records %v, want %v", got, versions)
	}
}

// fileVersions lists the versions of the migration files in fsys, in order.
func fileVersions(t *testing.T, fsys fs.FS) []int64 {
	t.Helper()
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		t.Fatal(err)
	}
	var out []int64
	for _, e := range entries {
		prefix, _, _ := strings.Cut(e.Name(), "_")
		v, err := strconv.ParseInt(prefix, 10, 64)
		if err != nil {
			t.Fatalf("migration %s: %v", e.Name(), err)
		}
		out = append(out, v)
	}
	slices.Sort(out)
	return out
}

// recorded lists the versions the bookkeeping table holds, in order, one
// entry per row.
func recorded(t *testing.T, url string) []int64 {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, "select version_id from "+migrations.Table+" where version_id > 0 order by version_id")
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// The embedded migrations keep the naming rule; names that break it (the
// next sequential number above all) are refused, by the check and by the
// migrator before it applies anything.
func TestMigrationNames(t *testing.T) {
	t.Parallel()
	if err := migrations.CheckNames(migrations.Embedded()); err != nil {
		t.Fatal(err)
	}
	if n := len(fileVersions(t, migrations.Embedded())); n < 3 {
		t.Fatalf("%d embedded migrations", n)
	}
	for name, ok := range map[string]bool{
		"00001_roles.sql":                    true,
		"00003_anything.sql":                 true,
		"20261202153000_storage_buckets.sql": true,
		"20261231235959_x2.sql":              true,
		"00004_x.sql":                        false, // the next number: two branches would both take it
		"00000_x.sql":                        false,
		"0001_roles.sql":                     false,
		"4_x.sql":                            false,
		"202612021530_x.sql":                 false, // minutes, not seconds
		"202612021530000_x.sql":              false,
		"20261302153000_x.sql":               false, // month 13
		"20261202253000_x.sql":               false, // hour 25
		"00010101000000_x.sql":               false, // not a creation time
		"20261202153000.sql":                 false,
		"20261202153000_.sql":                false,
		"20261202153000_Storage.sql":         false,
		"20261202153000-storage.sql":         false,
		"20261202153000_storage.SQL":         false,
		"20261202153000_storage.go":          false,
		"storage.sql":                        false, // goose would skip it silently
		"README.md":                          false,
	} {
		if err := migrations.CheckName(name); (err == nil) != ok {
			t.Errorf("%s: %v, want accepted %v", name, err, ok)
		}
	}

	fsys := legacy(t)
	fsys["00004_x.sql"] = &fstest.MapFile{Data: []byte("-- +goose Up\ncreate table public.x (id int);\n")}
	url := pgtest.NewDB(t)
	_, err := migrations.UpFS(context.Background(), url, fsys)
	if err == nil || !strings.Contains(err.Error(), `"00004_x.sql"`) {
		t.Fatalf("migrating with 00004_x.sql: %v", err)
	}
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var table *string
	if err := conn.QueryRow(context.Background(), "select to_regclass($1)::text", migrations.Table).Scan(&table); err != nil || table != nil {
		t.Fatalf("bookkeeping table %v, %v: want none, nothing applied", table, err)
	}
}

// legacy is a directory holding the embedded legacy migrations (00001-00003).
func legacy(t *testing.T) fstest.MapFS {
	t.Helper()
	out := fstest.MapFS{}
	for _, name := range []string{"00001", "00002", "00003"} {
		matches, err := fs.Glob(migrations.Embedded(), name+"_*.sql")
		if err != nil || len(matches) != 1 {
			t.Fatalf("legacy migration %s: %v, %v", name, matches, err)
		}
		b, err := fs.ReadFile(migrations.Embedded(), matches[0])
		if err != nil {
			t.Fatal(err)
		}
		out[matches[0]] = &fstest.MapFile{Data: b}
	}
	return out
}

// Two branches add timestamped migrations; the one with the newer stamp
// lands and is applied first. When the older one lands, Up applies it
// instead of refusing it, and both end applied once.
func TestUpOutOfOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.NewDB(t)
	const older, newer = 20261202090000, 20261202100000
	migration := func(table string) *fstest.MapFile {
		return &fstest.MapFile{Data: []byte("-- +goose Up\ncreate table public." + table + " (id int);\n\n-- +goose Down\ndrop table public." + table + ";\n")}
	}
	fsys := legacy(t)
	fsys["20261202100000_newer_feature.sql"] = migration("newer_feature")

	res, err := migrations.UpFS(ctx, url, fsys)
	if err != nil {
		t.Fatal(err)
	}
	if got := resultVersions(res); !slices.Equal(got, []int64{1, 2, 3, newer}) {
		t.Fatalf("first run applied %v", got)
	}

	fsys["20261202090000_older_feature.sql"] = migration("older_feature")
	res, err = migrations.UpFS(ctx, url, fsys)
	if err != nil {
		t.Fatalf("applying the older migration after the newer: %v", err)
	}
	if got := resultVersions(res); !slices.Equal(got, []int64{older}) {
		t.Fatalf("second run applied %v, want [%d]", got, older)
	}
	if res, err := migrations.UpFS(ctx, url, fsys); err != nil || len(res) != 0 {
		t.Fatalf("third run applied %v, %v; want nothing", resultVersions(res), err)
	}
	if got := recorded(t, url); !slices.Equal(got, []int64{1, 2, 3, older, newer}) {
		t.Fatalf("bookkeeping table records %v", got)
	}

	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, table := range []string{"public.older_feature", "public.newer_feature"} {
		var got *string
		if err := conn.QueryRow(ctx, "select to_regclass($1)::text", table).Scan(&got); err != nil || got == nil {
			t.Errorf("table %s: %v, %v", table, got, err)
		}
	}
}

func resultVersions(rs []migrations.Result) []int64 {
	out := make([]int64, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.Version)
	}
	return out
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
