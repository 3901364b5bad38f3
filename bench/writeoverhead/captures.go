package writeoverhead

import (
	"context"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fluxbase/fluxbase/bench/cdc"
	"github.com/fluxbase/fluxbase/bench/harness"
)

func log10(v float64) float64 { return math.Log10(v) }
func pow10(v float64) float64 { return math.Pow(10, v) }

// off captures nothing.
type off struct{}

func (off) Name() string                        { return "off" }
func (off) Start(context.Context, string) error { return nil }
func (off) Stop() (string, error)               { return "", nil }

// Notify is the LISTEN/NOTIFY baseline: an AFTER INSERT trigger sends the
// row as JSON with pg_notify, and one connection LISTENs and counts.
type Notify struct {
	conn     *pgx.Conn
	received atomic.Int64
	cancel   context.CancelFunc
	done     chan struct{}
}

// Channel is the notification channel.
const Channel = "fluxbench_changes"

// Name is the capture's name.
func (*Notify) Name() string { return "notify" }

// Start installs the trigger and starts listening.
func (n *Notify) Start(ctx context.Context, dbURL string) error {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return fmt.Errorf("connect listener: %w", err)
	}
	n.conn = conn
	for _, sql := range []string{
		`create or replace function fluxbench_notify() returns trigger language plpgsql as $$
		begin
			perform pg_notify('` + Channel + `', json_build_object('table', TG_TABLE_NAME, 'type', TG_OP, 'record', row_to_json(NEW))::text);
			return null;
		end $$`,
		`create trigger fluxbench_notify after insert on public.` + Table + ` for each row execute function fluxbench_notify()`,
		`listen ` + Channel,
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("install notify trigger: %w", err)
		}
	}
	lctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	n.done = make(chan struct{})
	go func() {
		defer close(n.done)
		for {
			if _, err := conn.WaitForNotification(lctx); err != nil {
				return
			}
			n.received.Add(1)
		}
	}()
	return nil
}

// Stop stops listening and reports how many notifications arrived.
func (n *Notify) Stop() (string, error) {
	if n.conn == nil {
		return "", nil
	}
	// Let notifications in flight arrive before counting.
	time.Sleep(500 * time.Millisecond)
	if n.cancel != nil {
		n.cancel()
		<-n.done
	}
	n.conn.Close(context.Background())
	return fmt.Sprintf("%d notifications received (warm-up included)", n.received.Load()), nil
}

// RecvLogical streams a pgoutput slot with pg_recvlogical to /dev/null
// while the writers run.
type RecvLogical struct {
	dbURL string
	cmd   *harness.Process
}

// Name is the capture's name.
func (*RecvLogical) Name() string { return "recvlogical" }

// Start creates the publication and slot and starts pg_recvlogical.
func (r *RecvLogical) Start(ctx context.Context, dbURL string) error {
	bin, err := harness.PGBin("pg_recvlogical")
	if err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, sql := range []string{
		`create publication fluxbench_writes for table public.` + Table,
		`select pg_create_logical_replication_slot('fluxbench_writes', 'pgoutput')`,
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("create publication and slot: %w", err)
		}
	}
	r.dbURL = dbURL
	r.cmd, err = harness.Start(bin, nil, "-d", dbURL, "--slot", "fluxbench_writes", "--start",
		"-o", "proto_version=1", "-o", "publication_names=fluxbench_writes", "-f", "/dev/null", "-s", "1", "-F", "1")
	if err != nil {
		return err
	}
	// Wait until the slot is streamed.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var active bool
		if err := conn.QueryRow(ctx, `select active from pg_replication_slots where slot_name = 'fluxbench_writes'`).Scan(&active); err != nil {
			return fmt.Errorf("read slot: %w", err)
		}
		if active {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pg_recvlogical did not start streaming: %s", r.cmd.Stderr())
		}
		select {
		case <-r.cmd.Exited():
			return fmt.Errorf("pg_recvlogical exited: %s", r.cmd.Stderr())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop reports how far behind the slot was, then stops pg_recvlogical.
func (r *RecvLogical) Stop() (string, error) {
	if r.cmd == nil {
		return "", nil
	}
	note := ""
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if conn, err := pgx.Connect(ctx, r.dbURL); err == nil {
		var lag *int64
		_ = conn.QueryRow(ctx, `select (pg_current_wal_lsn() - r.sent_lsn)::bigint from pg_stat_replication r
			join pg_replication_slots s on s.active_pid = r.pid where s.slot_name = 'fluxbench_writes'`).Scan(&lag)
		if lag != nil {
			note = fmt.Sprintf("decoder %d bytes behind at the end", *lag)
		}
		conn.Close(ctx)
	}
	// pg_recvlogical exits with a failure status on SIGTERM: not an error.
	_ = r.cmd.Stop(5 * time.Second)
	return note, nil
}

// Fluxbase runs Fluxbase nodes that replicate the table while the writers
// run.
type Fluxbase struct {
	Env     *harness.Env
	Nodes   int
	cluster *harness.Cluster
}

// Name is the capture's name.
func (*Fluxbase) Name() string { return "fluxbase" }

// Start starts the nodes and waits until one streams the slot.
func (f *Fluxbase) Start(ctx context.Context, dbURL string) error {
	c, err := f.Env.Fluxbase(ctx, dbURL, max(f.Nodes, 1))
	if err != nil {
		return err
	}
	f.cluster = c
	return cdc.WaitSlot(ctx, dbURL, 10*time.Second)
}

// Stop stops the nodes.
func (f *Fluxbase) Stop() (string, error) {
	if f.cluster != nil {
		f.cluster.Stop()
	}
	return "", nil
}
