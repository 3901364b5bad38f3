package node

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
)

// replicationConns is what a node opens besides its pool: the replication
// reader's side pool (up to 3) and, on the holder, the replication
// connection.
const replicationConns = 4

// connBudget is the connection arithmetic of a cluster on one server
// (README, "Pool sizing"): every node's pool and replication connections
// within max_connections less the reserved ones.
type connBudget struct {
	nodes, perNode    int
	maxConns, reserve int
}

func (b connBudget) need() int      { return b.nodes * b.perNode }
func (b connBudget) available() int { return b.maxConns - b.reserve }
func (b connBudget) fits() bool     { return b.need() <= b.available() }

// clusterNodes counts the cluster's nodes from its routes (every node's,
// a node's own included); a node without routes is alone.
func clusterNodes(routes []string) int {
	seen := map[string]bool{}
	for _, r := range routes {
		seen[r] = true
	}
	return max(len(seen), 1)
}

// checkConnBudget warns when the server's max_connections cannot hold the
// pools of every node of the cluster, all of the same configuration as
// this one: past it, connections fail under load on whichever node asks
// last. A failing query only skips the check.
func checkConnBudget(ctx context.Context, pool *pgxpool.Pool, nodes int, log *zap.Logger) (connBudget, error) {
	b := connBudget{nodes: nodes, perNode: int(pool.Config().MaxConns) + replicationConns}
	var reserved int
	err := pool.QueryRow(ctx, `select current_setting('max_connections')::int,
		current_setting('superuser_reserved_connections')::int + coalesce(current_setting('reserved_connections', true), '0')::int`).
		Scan(&b.maxConns, &reserved)
	if err != nil {
		return b, fmt.Errorf("read max_connections: %w", err)
	}
	b.reserve = reserved
	if !b.fits() {
		log.Warn("the database's max_connections cannot hold the pools of the cluster's nodes; lower FLUXBASE_DATABASE_MAX_CONNECTIONS or raise max_connections (README, \"Pool sizing\")",
			zap.Int("nodes", b.nodes), zap.Int("connections_per_node", b.perNode), zap.Int("needed", b.need()),
			zap.Int("max_connections", b.maxConns), zap.Int("reserved", b.reserve), zap.Int("available", b.available()))
	}
	return b, nil
}
