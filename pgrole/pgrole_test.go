package pgrole_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fluxbase/fluxbase/internal/apitest"
	"github.com/fluxbase/fluxbase/pgrole"
)

// seen is what a statement sees of who it runs as.
type seen struct {
	role, user, claims, sub, claimRole, topic, readOnly string
}

const seenSQL = `select current_role::text, coalesce(auth.uid()::text, ''),
  coalesce(current_setting('request.jwt.claims', true), ''),
  coalesce(current_setting('request.jwt.claim.sub', true), ''),
  coalesce(current_setting('request.jwt.claim.role', true), ''),
  coalesce(current_setting('realtime.topic', true), ''),
  current_setting('transaction_read_only')`

func scanSeen(row pgx.Row) (seen, error) {
	var s seen
	err := row.Scan(&s.role, &s.user, &s.claims, &s.sub, &s.claimRole, &s.topic, &s.readOnly)
	return s, err
}

// onePool is a pool of one connection, so every use after the first
// gets the connection the first used.
func onePool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	base := apitest.NewDB(t, "")
	cfg := base.Config()
	cfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

const user = "11111111-1111-1111-1111-111111111111"

var claims = []byte(`{"role":"authenticated","sub":"` + user + `"}`)

// checkClean fails when the pooled connection still carries anything of
// a request.
func checkClean(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	after, err := scanSeen(pool.QueryRow(context.Background(), seenSQL))
	if err != nil {
		t.Fatal(err)
	}
	if after.role != "postgres" || after.claims != "" || after.sub != "" || after.claimRole != "" || after.topic != "" || after.readOnly != "off" {
		t.Fatalf("the next use of the connection sees %+v", after)
	}
}

// Inside Tx the role, the claims and the settings are the request's;
// after its commit, or its rollback, the connection has none of them.
func TestTx(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := onePool(t)
	as := pgrole.As{Role: "authenticated", Claims: claims, Settings: map[string]string{"realtime.topic": "room:1"}}
	var in seen
	err := pgrole.Tx(ctx, pool, as, func(tx pgx.Tx) error {
		var err error
		in, err = scanSeen(tx.QueryRow(ctx, seenSQL))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	want := seen{role: "authenticated", user: user, claims: string(claims), sub: user, claimRole: "authenticated", topic: "room:1", readOnly: "off"}
	if in != want {
		t.Fatalf("inside: %+v, want %+v", in, want)
	}
	checkClean(t, pool)

	boom := errors.New("boom")
	err = pgrole.Tx(ctx, pool, pgrole.As{Role: "anon", ReadOnly: true}, func(tx pgx.Tx) error {
		s, err := scanSeen(tx.QueryRow(ctx, seenSQL))
		if err != nil {
			return err
		}
		if s.role != "anon" || s.claims != "{}" || s.sub != "" || s.readOnly != "on" {
			t.Errorf("anon, read-only, no claims: %+v", s)
		}
		if _, err := tx.Exec(ctx, "create table nope (id int)"); err == nil {
			t.Error("a read-only transaction created a table")
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Tx returned %v, want fn's error", err)
	}
	checkClean(t, pool)
}

// pipeline sends as and then seenSQL as one pipeline, and returns what
// the second saw.
func pipeline(ctx context.Context, pool *pgxpool.Pool, as pgrole.As) (seen, error) {
	b := &pgx.Batch{}
	as.Queue(b)
	b.Queue(seenSQL)
	br := pool.SendBatch(ctx, b)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return seen{}, err
	}
	s, err := scanSeen(br.QueryRow())
	if err != nil {
		return seen{}, err
	}
	return s, br.Close()
}

// The role holds for the statements queued after it in one pipeline,
// and ends with the pipeline's implicit transaction.
func TestQueue(t *testing.T) {
	t.Parallel()
	pool := onePool(t)
	in, err := pipeline(context.Background(), pool, pgrole.As{Role: "authenticated", Claims: claims, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if in.role != "authenticated" || in.user != user || in.readOnly != "on" {
		t.Fatalf("inside the pipeline: %+v", in)
	}
	checkClean(t, pool)
}

// A missing role is refused, never run as the pool's own user.
func TestNoRole(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := onePool(t)
	err := pgrole.Tx(ctx, pool, pgrole.As{}, func(pgx.Tx) error {
		t.Error("fn ran without a role")
		return nil
	})
	if !errors.Is(err, pgrole.ErrNoRole) {
		t.Fatalf("Tx without a role: %v", err)
	}
	if s, err := pipeline(ctx, pool, pgrole.As{}); err == nil {
		t.Fatalf("a pipeline without a role ran, as %+v", s)
	}
	checkClean(t, pool)
}
