package pgrole_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/fluxbase/fluxbase/pgrole"
)

// A role's own settings (ALTER ROLE ... SET) hold in a request's
// transaction as if it had logged in as the role: the current database's
// over those for every database, read again by Refresh, and only those any
// user may change. After the transaction the connection has none of them.
func TestRolesApplyTheirSettings(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := onePool(t)
	var db string
	if err := pool.QueryRow(ctx, "select current_database()").Scan(&db); err != nil {
		t.Fatal(err)
	}
	// Roles belong to the cluster: this test's role is its own.
	role := "settings_" + db
	for _, sql := range []string{
		fmt.Sprintf("create role %s nologin", role),
		fmt.Sprintf("grant %s to current_user", role),
		fmt.Sprintf("alter role %s set statement_timeout = '7s'", role),
		fmt.Sprintf("alter role %s set work_mem = '5MB'", role),
		fmt.Sprintf("alter role %s in database %s set work_mem = '6MB'", role, db),
		fmt.Sprintf("alter role %s set log_min_duration_statement = '1s'", role), // a superuser's setting: not applied
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), fmt.Sprintf("drop role if exists %s", role))
	})
	roles, err := pgrole.LoadRoles(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	show := func(as pgrole.As) (timeout, workMem, logMin string) {
		t.Helper()
		err := pgrole.Tx(ctx, pool, as, func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, "select current_setting('statement_timeout'), current_setting('work_mem'), current_setting('log_min_duration_statement')").Scan(&timeout, &workMem, &logMin)
		})
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	var defTimeout, defWorkMem, defLogMin string
	if err := pool.QueryRow(ctx, "select current_setting('statement_timeout'), current_setting('work_mem'), current_setting('log_min_duration_statement')").Scan(&defTimeout, &defWorkMem, &defLogMin); err != nil {
		t.Fatal(err)
	}
	if timeout, workMem, logMin := show(roles.As(role, nil)); timeout != "7s" || workMem != "6MB" || logMin != defLogMin {
		t.Errorf("in the transaction: statement_timeout %s, work_mem %s, log_min_duration_statement %s", timeout, workMem, logMin)
	}
	// Batched, as REST's reads are: the settings hold for the statements
	// queued after the role's.
	b := &pgx.Batch{}
	roles.As(role, nil).Queue(b)
	b.Queue("select current_setting('statement_timeout')")
	br := pool.SendBatch(ctx, b)
	var batched string
	if _, err := br.Exec(); err != nil {
		t.Fatal(err)
	}
	if err := br.QueryRow().Scan(&batched); err != nil || batched != "7s" {
		t.Errorf("batched: statement_timeout %q, %v", batched, err)
	}
	if err := br.Close(); err != nil {
		t.Fatal(err)
	}
	if timeout, workMem, _ := show(pgrole.As{Role: role}); timeout != defTimeout || workMem != defWorkMem {
		t.Errorf("without the roles' settings: statement_timeout %s, work_mem %s", timeout, workMem)
	}
	if _, err := pool.Exec(ctx, fmt.Sprintf("alter role %s set statement_timeout = '9s'", role)); err != nil {
		t.Fatal(err)
	}
	if timeout, _, _ := show(roles.As(role, nil)); timeout != "7s" {
		t.Errorf("before Refresh: statement_timeout %s", timeout)
	}
	if err := roles.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if timeout, _, _ := show(roles.As(role, nil)); timeout != "9s" {
		t.Errorf("after Refresh: statement_timeout %s", timeout)
	}
	checkClean(t, pool)
	var nilRoles *pgrole.Roles
	if as := nilRoles.As(role, nil); len(as.RoleSettings) != 0 || as.Role != role {
		t.Errorf("nil Roles: %+v", as)
	}
}

// The migrations give anon and authenticated Supabase's statement
// timeouts, and service_role none.
func TestMigratedRoleTimeouts(t *testing.T) {
	t.Parallel()
	roles, err := pgrole.LoadRoles(context.Background(), onePool(t))
	if err != nil {
		t.Fatal(err)
	}
	timeout := func(role string) string {
		for _, s := range roles.Of(role) {
			if s.Name == "statement_timeout" {
				return s.Value
			}
		}
		return ""
	}
	if a, u, s := timeout("anon"), timeout("authenticated"), timeout("service_role"); a != "3s" || u != "8s" || s != "" {
		t.Errorf("statement_timeout: anon %q, authenticated %q, service_role %q", a, u, s)
	}
}
