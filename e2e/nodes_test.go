package e2e

import (
	"context"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/fluxbase/fluxbase/auth"
	"github.com/fluxbase/fluxbase/broker"
	"github.com/fluxbase/fluxbase/internal/pgcluster"
	"github.com/fluxbase/fluxbase/node"
)

// nodeConfig is the configuration of one in-process node on dbURL, with
// the test's slot (slot names are cluster-wide and the tests' databases
// share one cluster), a standalone broker of its own, and the short
// intervals that keep the tests quick. The caller migrated the database.
func nodeConfig(t *testing.T, name, dbURL, slot string) node.Config {
	t.Helper()
	var cfg node.Config
	cfg.Name = name
	cfg.DataDir = t.TempDir()
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Auth = auth.Config{JWTSecret: jwtSecret, Autoconfirm: true, AnonymousUsers: true, RefreshReuseInterval: 10 * time.Second}
	cfg.Database.URL = dbURL
	cfg.Database.SkipMigrations = true
	cfg.Replication.SlotName = slot
	cfg.Replication.ReplicaIdentityFull = true
	cfg.Replication.StatusInterval = 200 * time.Millisecond
	cfg.Replication.StandbyRetry = 200 * time.Millisecond
	cfg.Realtime.PresenceInterval = time.Second
	cfg.Broker.ClusterHost = "127.0.0.1"
	return cfg
}

// clusterRoutes gives each broker a free loopback route port and returns
// the routes that join them into one cluster.
func clusterRoutes(t *testing.T, brokers ...*broker.Config) []string {
	t.Helper()
	var routes []string
	for _, b := range brokers {
		p, err := pgcluster.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		b.ClusterPort = p
		routes = append(routes, "nats://"+net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	}
	return routes
}

// runNodes builds the nodes at once (clustered brokers wait for each
// other) and runs them until the test ends.
func runNodes(t *testing.T, cfgs ...node.Config) []*node.Node {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	nodes := make([]*node.Node, len(cfgs))
	errs := make([]error, len(cfgs))
	var built sync.WaitGroup
	for i, cfg := range cfgs {
		built.Add(1)
		go func() {
			defer built.Done()
			nodes[i], errs[i] = node.New(ctx, cfg, testLogger(t).Named(cfg.Name))
		}()
	}
	built.Wait()
	var running sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		running.Wait()
	})
	for i, err := range errs {
		if err != nil {
			for _, n := range nodes {
				if n != nil {
					n.Close()
				}
			}
			t.Fatalf("node %s: %v", cfgs[i].Name, err)
		}
	}
	for _, n := range nodes {
		running.Add(1)
		go func() {
			defer running.Done()
			if err := n.Run(ctx); err != nil {
				t.Errorf("node: %v", err)
			}
		}()
	}
	return nodes
}
