package replication

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
)

// This file is the management stage: the publication (what is replicated),
// the slot (where the stream resumes), REPLICA IDENTITY FULL, and the
// holder's periodic chores — heartbeats, lag, reconciliation.

// qname is a schema-qualified table name.
type qname struct{ schema, name string }

func (q qname) sql() string { return pgx.Identifier{q.schema, q.name}.Sanitize() }

// tableSpec is Config.Tables parsed.
type tableSpec struct {
	defaults bool     // every table of public, plus storage.objects once it exists
	schemas  []string // schema.* entries
	tables   []qname
}

// parseTables reads Config.Tables: "table", "schema.table" or "schema.*".
// Names are taken exactly as written (no case folding), like quoted SQL
// identifiers.
func parseTables(list []string) (tableSpec, error) {
	var spec tableSpec
	for _, raw := range list {
		entry := strings.TrimSpace(raw)
		if entry == "" {
			continue
		}
		parts := strings.Split(entry, ".")
		for _, p := range parts {
			if p == "" {
				return spec, fmt.Errorf("replication: table %q: empty name", raw)
			}
		}
		switch {
		case len(parts) == 1 && parts[0] != "*":
			spec.tables = append(spec.tables, qname{"public", parts[0]})
		case len(parts) == 2 && parts[1] == "*":
			spec.schemas = append(spec.schemas, parts[0])
		case len(parts) == 2 && parts[0] != "*":
			spec.tables = append(spec.tables, qname{parts[0], parts[1]})
		default:
			return spec, fmt.Errorf("replication: table %q: want table, schema.table or schema.*", raw)
		}
	}
	if len(spec.schemas) == 0 && len(spec.tables) == 0 {
		spec.defaults = true
		spec.schemas = []string{"public"}
		spec.tables = []qname{{"storage", "objects"}}
	}
	return spec, nil
}

var (
	errSlotMissing        = errors.New("replication slot does not exist")
	errPublicationMissing = errors.New("publication does not exist")
)

// existing narrows spec to the schemas and tables that exist now: a
// publication can only name those. Later reconciliation adds the rest as
// they appear.
func existing(ctx context.Context, q querier, spec tableSpec) (schemas []string, tables []qname, missing []string, err error) {
	for _, s := range spec.schemas {
		var ok bool
		if err := q.QueryRow(ctx, "select exists(select 1 from pg_catalog.pg_namespace where nspname = $1)", s).Scan(&ok); err != nil {
			return nil, nil, nil, fmt.Errorf("look up schema %s: %w", s, err)
		}
		if ok {
			schemas = append(schemas, s)
		} else {
			missing = append(missing, s+".*")
		}
	}
	for _, t := range spec.tables {
		var ok bool
		err := q.QueryRow(ctx, `select exists(select 1 from pg_catalog.pg_class c
			join pg_catalog.pg_namespace n on n.oid = c.relnamespace
			where n.nspname = $1 and c.relname = $2 and c.relkind in ('r', 'p'))`, t.schema, t.name).Scan(&ok)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("look up table %s: %w", t.sql(), err)
		}
		if ok && !slices.Contains(schemas, t.schema) {
			tables = append(tables, t)
		} else if !ok && !spec.defaults {
			missing = append(missing, t.schema+"."+t.name)
		}
	}
	return schemas, tables, missing, nil
}

// ensurePublication creates the publication or brings it in line with
// spec. A publication an operator made FOR ALL TABLES is left alone.
// It returns the configured schemas and tables that do not exist yet.
func ensurePublication(ctx context.Context, q querier, name string, spec tableSpec, log *zap.Logger) (missing []string, err error) {
	schemas, tables, missing, err := existing(ctx, q, spec)
	if err != nil {
		return nil, err
	}
	target := publicationTargets(schemas, tables)
	ident := pgx.Identifier{name}.Sanitize()

	var oid uint32
	var all bool
	err = q.QueryRow(ctx, "select oid, puballtables from pg_catalog.pg_publication where pubname = $1", name).Scan(&oid, &all)
	if errors.Is(err, pgx.ErrNoRows) {
		sql := "create publication " + ident
		if target != "" {
			sql += " for " + target
		}
		if _, err := q.Exec(ctx, sql); err != nil && pgCode(err) != "42710" { // another node made it first
			return missing, fmt.Errorf("create publication %s: %w", name, err)
		}
		log.Info("publication created", zap.String("publication", name), zap.String("for", target))
		return missing, nil
	}
	if err != nil {
		return missing, fmt.Errorf("look up publication %s: %w", name, err)
	}
	if all {
		return missing, nil
	}
	curSchemas, curTables, err := publicationContents(ctx, q, oid)
	if err != nil {
		return missing, fmt.Errorf("read publication %s: %w", name, err)
	}
	if target == publicationTargets(curSchemas, curTables) || target == "" {
		return missing, nil
	}
	if _, err := q.Exec(ctx, "alter publication "+ident+" set "+target); err != nil {
		return missing, fmt.Errorf("alter publication %s: %w", name, err)
	}
	log.Info("publication updated", zap.String("publication", name), zap.String("for", target))
	return missing, nil
}

// publicationTargets is the FOR/SET clause, in a canonical order so two
// equal sets compare equal.
func publicationTargets(schemas []string, tables []qname) string {
	schemas = slices.Sorted(slices.Values(schemas))
	names := make([]string, 0, len(tables))
	for _, t := range tables {
		names = append(names, t.sql())
	}
	slices.Sort(names)
	var parts []string
	if len(schemas) > 0 {
		quoted := make([]string, len(schemas))
		for i, s := range schemas {
			quoted[i] = pgx.Identifier{s}.Sanitize()
		}
		parts = append(parts, "tables in schema "+strings.Join(quoted, ", "))
	}
	if len(names) > 0 {
		parts = append(parts, "table "+strings.Join(names, ", "))
	}
	return strings.Join(parts, ", ")
}

func publicationContents(ctx context.Context, q querier, oid uint32) ([]string, []qname, error) {
	rows, err := q.Query(ctx, `select n.nspname from pg_catalog.pg_publication_namespace pn
		join pg_catalog.pg_namespace n on n.oid = pn.pnnspid where pn.pnpubid = $1`, oid)
	if err != nil {
		return nil, nil, err
	}
	schemas, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, nil, err
	}
	rows, err = q.Query(ctx, `select n.nspname, c.relname from pg_catalog.pg_publication_rel pr
		join pg_catalog.pg_class c on c.oid = pr.prrelid
		join pg_catalog.pg_namespace n on n.oid = c.relnamespace where pr.prpubid = $1`, oid)
	if err != nil {
		return nil, nil, err
	}
	tables, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (qname, error) {
		var t qname
		err := r.Scan(&t.schema, &t.name)
		return t, err
	})
	return schemas, tables, err
}

// ensureSlot creates the logical slot unless it exists, and refuses a slot
// of the same name that another plugin or database owns.
func ensureSlot(ctx context.Context, q querier, name string) error {
	var plugin, db *string
	err := q.QueryRow(ctx, `select plugin, database::text from pg_catalog.pg_replication_slots where slot_name = $1`, name).Scan(&plugin, &db)
	if errors.Is(err, pgx.ErrNoRows) {
		// Creating the slot waits for transactions running now to end: the
		// slot starts from a consistent snapshot.
		_, err := q.Exec(ctx, "select pg_catalog.pg_create_logical_replication_slot($1, 'pgoutput')", name)
		if err != nil && pgCode(err) != "42710" {
			return fmt.Errorf("create replication slot %s: %w", name, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up replication slot %s: %w", name, err)
	}
	var current string
	if err := q.QueryRow(ctx, "select current_database()").Scan(&current); err != nil {
		return fmt.Errorf("current database: %w", err)
	}
	switch {
	case plugin == nil:
		return fmt.Errorf("%w: replication slot %s is a physical slot", errPermanent, name)
	case *plugin != "pgoutput":
		return fmt.Errorf("%w: replication slot %s uses plugin %s, not pgoutput", errPermanent, name, *plugin)
	case db == nil || *db != current:
		return fmt.Errorf("%w: replication slot %s belongs to another database", errPermanent, name)
	}
	return nil
}

// ensureReplicaIdentityFull sets REPLICA IDENTITY FULL on published tables
// that lack it. ALTER TABLE takes an exclusive lock, so it waits at most
// two seconds for it and tries again at the next reconciliation instead of
// queueing every query of the table behind a long transaction.
func ensureReplicaIdentityFull(ctx context.Context, db querier, publication string, log *zap.Logger) error {
	rows, err := db.Query(ctx, `select n.nspname, c.relname
		from pg_catalog.pg_publication_tables pt
		join pg_catalog.pg_namespace n on n.nspname = pt.schemaname
		join pg_catalog.pg_class c on c.relnamespace = n.oid and c.relname = pt.tablename
		where pt.pubname = $1 and c.relreplident <> 'f'`, publication)
	if err != nil {
		return fmt.Errorf("list published tables: %w", err)
	}
	tables, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (qname, error) {
		var t qname
		err := r.Scan(&t.schema, &t.name)
		return t, err
	})
	if err != nil {
		return fmt.Errorf("list published tables: %w", err)
	}
	for _, t := range tables {
		err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "set local lock_timeout = '2s'"); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "alter table "+t.sql()+" replica identity full")
			return err
		})
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			log.Warn("could not set replica identity full; retrying later", zap.String("table", t.schema+"."+t.name), zap.Error(err))
			continue
		}
		log.Info("replica identity set to full", zap.String("table", t.schema+"."+t.name))
	}
	return nil
}

// identityTrigger is the event trigger that gives a table REPLICA
// IDENTITY FULL in the statement that creates it, when the publication
// already covers it (FOR TABLES IN SCHEMA), so even its first update
// carries the old row; reconciliation covers the rest (tables added to a
// listed publication, and databases where Fluxbase may not create event
// triggers, which needs a superuser).
const identityTrigger = "fluxbase_replica_identity_full"

// ensureIdentityTrigger creates (on) or drops (off) identityTrigger.
func ensureIdentityTrigger(ctx context.Context, db querier, publication string, on bool) error {
	if !on {
		_, err := db.Exec(ctx, "drop event trigger if exists "+identityTrigger)
		return err
	}
	pub := "'" + strings.ReplaceAll(publication, "'", "''") + "'" // a string literal in the function's body
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		body := `create or replace function fluxbase.replica_identity_full() returns event_trigger
language plpgsql as $fn$
declare
  cmd record;
begin
  for cmd in select * from pg_catalog.pg_event_trigger_ddl_commands() where object_type = 'table' loop
    if exists (select 1 from pg_catalog.pg_publication_tables pt
               join pg_catalog.pg_class c on c.relname = pt.tablename
               join pg_catalog.pg_namespace n on n.oid = c.relnamespace and n.nspname = pt.schemaname
               where pt.pubname = ` + pub + ` and c.oid = cmd.objid and c.relreplident <> 'f') then
      execute 'alter table ' || cmd.object_identity || ' replica identity full';
    end if;
  end loop;
end $fn$`
		for _, q := range []string{
			"create schema if not exists fluxbase",
			body,
			"drop event trigger if exists " + identityTrigger,
			"create event trigger " + identityTrigger + " on ddl_command_end when tag in ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO') execute function fluxbase.replica_identity_full()",
		} {
			if _, err := tx.Exec(ctx, q); err != nil {
				return err
			}
		}
		return nil
	})
}

// maintain runs the holder's chores until ctx ends: heartbeats, lag
// measurement and reconciliation. recheck asks for a reconciliation now (a
// Relation message showed a table without REPLICA IDENTITY FULL).
func (r *Replicator) maintain(ctx context.Context, db querier, recheck <-chan struct{}) {
	heartbeat := newTicker(r.cfg.HeartbeatInterval)
	defer heartbeat.Stop()
	lag := time.NewTicker(r.cfg.LagInterval)
	defer lag.Stop()
	reconcile := time.NewTicker(r.cfg.ReconcileInterval)
	defer reconcile.Stop()
	var warned time.Time

	doReconcile := func() {
		if err := r.ensurePublication(ctx, db); err != nil && ctx.Err() == nil {
			r.log.Warn("reconcile publication", zap.Error(err))
		}
		if r.cfg.ReplicaIdentityFull {
			if err := ensureReplicaIdentityFull(ctx, db, r.cfg.PublicationName, r.log); err != nil && ctx.Err() == nil {
				r.log.Warn("reconcile replica identity", zap.Error(err))
			}
		}
	}
	measure := func() {
		var bytes int64
		err := db.QueryRow(ctx, `select coalesce(pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), confirmed_flush_lsn), 0)::int8
			from pg_catalog.pg_replication_slots where slot_name = $1`, r.cfg.SlotName).Scan(&bytes)
		if err != nil {
			if ctx.Err() == nil {
				r.log.Warn("measure replication lag", zap.Error(err))
			}
			return
		}
		r.metrics.lag.Set(float64(bytes))
		if r.cfg.LagWarnBytes > 0 && bytes > r.cfg.LagWarnBytes && time.Since(warned) > time.Minute {
			warned = time.Now()
			r.log.Warn("replication slot lags behind the WAL", zap.String("slot", r.cfg.SlotName),
				zap.Int64("lag_bytes", bytes), zap.Int64("warn_bytes", r.cfg.LagWarnBytes))
		}
	}

	doReconcile()
	measure()
	for {
		select {
		case <-ctx.Done():
			return
		case <-heartbeat.C:
			// Non-transactional, so it is decoded at once and, with nothing
			// else in flight, lets the slot confirm its position.
			if _, err := db.Exec(ctx, "select pg_catalog.pg_logical_emit_message(false, 'fluxbase.heartbeat', '')"); err != nil && ctx.Err() == nil {
				r.log.Warn("write heartbeat", zap.Error(err))
			}
		case <-lag.C:
			measure()
		case <-reconcile.C:
			doReconcile()
		case <-recheck:
			doReconcile()
		}
	}
}

// ensurePublication reconciles the publication, warning about missing
// tables when the set of them changes rather than at every check.
func (r *Replicator) ensurePublication(ctx context.Context, db querier) error {
	missing, err := ensurePublication(ctx, db, r.cfg.PublicationName, r.tables, r.log)
	key := strings.Join(missing, ",")
	r.mu.Lock()
	changed := key != r.missing
	r.missing = key
	r.mu.Unlock()
	if changed && len(missing) > 0 {
		r.log.Warn("tables to replicate do not exist yet; they are added once they do", zap.Strings("tables", missing))
	}
	return err
}

// newTicker is a ticker that never fires for a non-positive interval.
func newTicker(d time.Duration) *time.Ticker {
	if d <= 0 {
		t := time.NewTicker(time.Hour)
		t.Stop()
		return t
	}
	return time.NewTicker(d)
}
