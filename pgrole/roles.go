package pgrole

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// Setting is one run-time setting: a name and its value as PostgreSQL
// reads it (set_config's text).
type Setting struct{ Name, Value string }

// Querier runs a query: a pool, a connection or a transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Roles is what each role has set of its own with ALTER ROLE ... SET (for
// every database, or for the current one, which wins), such as the
// statement_timeout of anon and authenticated. PostgreSQL applies those
// settings when a session logs in as the role, never on SET ROLE, so a
// server that switches roles must apply them itself, as PostgREST does:
// As made by Roles sets them local to the transaction, in the same
// statement as the role. Only settings any user may change (context
// "user") are kept: the others would make set_config fail for every
// request of the role.
//
// The settings are read once by LoadRoles and again by Refresh (Run calls
// it on a timer); a nil *Roles has none.
type Roles struct {
	db     Querier
	byRole atomic.Pointer[map[string][]Setting]
}

// rolesSQL lists the roles' own settings, those for every database first
// so that the current database's come after them and win.
const rolesSQL = `select r.rolname::text, pg_catalog.split_part(c, '=', 1), pg_catalog.substr(c, pg_catalog.strpos(c, '=') + 1)
from pg_catalog.pg_db_role_setting s
join pg_catalog.pg_roles r on r.oid = s.setrole
cross join lateral pg_catalog.unnest(s.setconfig) c
join pg_catalog.pg_settings p on p.name = pg_catalog.split_part(c, '=', 1) and p.context = 'user'
where s.setdatabase = 0 or s.setdatabase = (select d.oid from pg_catalog.pg_database d where d.datname = pg_catalog.current_database())
order by s.setdatabase <> 0, r.rolname`

// LoadRoles reads the roles' settings from db.
func LoadRoles(ctx context.Context, db Querier) (*Roles, error) {
	r := &Roles{db: db}
	if err := r.Refresh(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// Refresh reads the roles' settings again; until it returns, As uses the
// ones read before.
func (r *Roles) Refresh(ctx context.Context) error {
	rows, err := r.db.Query(ctx, rolesSQL, pgx.QueryExecModeExec)
	if err != nil {
		return fmt.Errorf("read role settings: %w", err)
	}
	byName := map[string]map[string]int{}
	byRole := map[string][]Setting{}
	var role string
	var s Setting
	_, err = pgx.ForEachRow(rows, []any{&role, &s.Name, &s.Value}, func() error {
		if i, ok := byName[role][s.Name]; ok {
			byRole[role][i] = s // the current database's
			return nil
		}
		if byName[role] == nil {
			byName[role] = map[string]int{}
		}
		byName[role][s.Name] = len(byRole[role])
		byRole[role] = append(byRole[role], s)
		return nil
	})
	if err != nil {
		return fmt.Errorf("read role settings: %w", err)
	}
	r.byRole.Store(&byRole)
	return nil
}

// Run refreshes the settings every interval until ctx ends; a refresh
// that fails keeps the settings read before, and is reported to failed
// when it is not nil.
func (r *Roles) Run(ctx context.Context, every time.Duration, failed func(error)) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := r.Refresh(ctx); err != nil && ctx.Err() == nil && failed != nil {
				failed(err)
			}
		}
	}
}

// Of is the settings of role, which the caller must not change.
func (r *Roles) Of(role string) []Setting {
	if r == nil {
		return nil
	}
	m := r.byRole.Load()
	if m == nil {
		return nil
	}
	return (*m)[role]
}

// As is who a request of role with claims runs as, with the role's own
// settings.
func (r *Roles) As(role string, claims []byte) As {
	return As{Role: role, Claims: claims, RoleSettings: r.Of(role)}
}
