package cdc

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/fluxbase/fluxbase/bench"
	"github.com/fluxbase/fluxbase/bench/harness"
)

// RecvLogical drains with pg_recvlogical into /dev/null.
type RecvLogical struct{}

// RecvLogicalSlot is the slot it creates.
const RecvLogicalSlot = "fluxbench_recvlogical"

// Name is the target's name.
func (*RecvLogical) Name() string { return "pg_recvlogical" }

// Slot is the slot it drains.
func (*RecvLogical) Slot() string { return RecvLogicalSlot }

// Prepare creates a pgoutput slot.
func (*RecvLogical) Prepare(ctx context.Context, dbURL string) error {
	if _, err := harness.PGBin("pg_recvlogical"); err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, _ = conn.Exec(ctx, `select pg_drop_replication_slot($1) from pg_replication_slots where slot_name = $1`, RecvLogicalSlot)
	if _, err := conn.Exec(ctx, `select pg_create_logical_replication_slot($1, 'pgoutput')`, RecvLogicalSlot); err != nil {
		return fmt.Errorf("create slot: %w", err)
	}
	return nil
}

// Drain runs pg_recvlogical until it reaches end.
func (*RecvLogical) Drain(ctx context.Context, dbURL string, end pglogrepl.LSN) error {
	bin, err := harness.PGBin("pg_recvlogical")
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, bin, "-d", dbURL, "--slot", RecvLogicalSlot, "--start",
		"-o", "proto_version=1", "-o", "publication_names="+Publication,
		"-f", "/dev/null", "--endpos", end.String(), "--no-loop")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_recvlogical: %w: %s", err, out)
	}
	return nil
}

// Close drops nothing: the database is dropped by the next run.
func (*RecvLogical) Close() {}

// FluxbaseSlot is the slot Fluxbase nodes replicate from (replication's
// default slot name).
const FluxbaseSlot = "fluxbase"

// Fluxbase drains with Fluxbase nodes: started once so they create their
// slot, stopped while the backlog is written, then started again.
type Fluxbase struct {
	Env   *harness.Env
	Nodes int

	cluster *harness.Cluster
}

// Name is the target's name.
func (*Fluxbase) Name() string { return "fluxbase" }

// Slot is the nodes' slot.
func (*Fluxbase) Slot() string { return FluxbaseSlot }

// Prepare starts the nodes, waits for their slot and stops them.
func (f *Fluxbase) Prepare(ctx context.Context, dbURL string) error {
	if len(f.Env.FluxbaseURLs) > 0 {
		return errors.New("draining needs nodes fluxbench can stop and start: run without -url")
	}
	c, err := f.Env.Fluxbase(ctx, dbURL, max(f.Nodes, 1))
	if err != nil {
		return err
	}
	defer c.Stop()
	if _, err := waitSlot(ctx, dbURL, 10*time.Second); err != nil {
		return err
	}
	return nil
}

// Drain starts the nodes and waits until their slot confirms end.
func (f *Fluxbase) Drain(ctx context.Context, dbURL string, end pglogrepl.LSN) error {
	c, err := f.Env.Fluxbase(ctx, dbURL, max(f.Nodes, 1))
	if err != nil {
		return err
	}
	f.cluster = c
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for {
		var pos *string
		if err := conn.QueryRow(ctx, `select confirmed_flush_lsn::text from pg_replication_slots where slot_name = $1`, FluxbaseSlot).Scan(&pos); err != nil {
			return fmt.Errorf("read slot position: %w", err)
		}
		if pos != nil {
			if lsn, err := pglogrepl.ParseLSN(*pos); err == nil && lsn >= end {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for the slot to reach %s: %w", end, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Close stops the nodes.
func (f *Fluxbase) Close() {
	if f.cluster != nil {
		f.cluster.Stop()
	}
}

// waitSlot waits for Fluxbase's slot to exist; its absence means the node
// does not replicate yet.
func waitSlot(ctx context.Context, dbURL string, limit time.Duration) (bool, error) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return false, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	deadline := time.Now().Add(limit)
	for {
		var active bool
		err := conn.QueryRow(ctx, `select active from pg_replication_slots where slot_name = $1`, FluxbaseSlot).Scan(&active)
		if err == nil {
			return active, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return false, fmt.Errorf("look for the replication slot: %w", err)
		}
		if time.Now().After(deadline) {
			return false, bench.NotAvailable("Fluxbase side not available yet: the node created no replication slot %q within %s: the node does not replicate yet", FluxbaseSlot, limit.Round(time.Second))
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// WaitSlot is waitSlot for other scenarios: it returns once Fluxbase's slot
// is streamed by a node, or ErrNotAvailable.
func WaitSlot(ctx context.Context, dbURL string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		active, err := waitSlot(ctx, dbURL, time.Until(deadline))
		if err != nil || active {
			return err
		}
		if time.Now().After(deadline) {
			return bench.NotAvailable("Fluxbase side not available yet: no node streams the slot %q", FluxbaseSlot)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
