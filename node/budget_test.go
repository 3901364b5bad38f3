package node

import (
	"context"
	"os"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/fluxbase/fluxbase/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func TestClusterNodes(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		routes []string
		want   int
	}{
		{nil, 1},
		{[]string{"nats://a:6222"}, 1},
		{[]string{"nats://a:6222", "nats://b:6222", "nats://c:6222"}, 3},
		{[]string{"nats://a:6222", "nats://a:6222", "nats://b:6222"}, 2},
	} {
		if got := clusterNodes(tt.routes); got != tt.want {
			t.Errorf("clusterNodes(%v) = %d, want %d", tt.routes, got, tt.want)
		}
	}
}

// A node warns at start when the server cannot hold every node's pool,
// and stays quiet when it can; the figures are the server's own.
func TestConnBudgetWarns(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := pgtest.NewDB(t)
	for _, tt := range []struct {
		name      string
		poolSize  int32
		nodes     int
		wantWarns bool
	}{
		{"fits", 10, 3, false},
		{"too many nodes", 60, 4, true},
		{"too big a pool", 500, 1, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pool, err := newPool(ctx, DatabaseConfig{MaxConns: tt.poolSize}, dbURL)
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			core, logs := observer.New(zap.WarnLevel)
			b, err := checkConnBudget(ctx, pool, tt.nodes, zap.New(core))
			if err != nil {
				t.Fatal(err)
			}
			// internal/pgcluster runs with max_connections 200 and 3
			// reserved for superusers.
			if b.maxConns != 200 || b.reserve < 3 || b.perNode != int(tt.poolSize)+replicationConns {
				t.Fatalf("budget %+v", b)
			}
			if warned := logs.Len() == 1; warned != tt.wantWarns || b.fits() == tt.wantWarns {
				t.Fatalf("%d nodes × %d: warned %v (logs %v), fits %v", tt.nodes, b.perNode, warned, logs.All(), b.fits())
			}
			if tt.wantWarns && logs.All()[0].ContextMap()["needed"] != int64(b.need()) {
				t.Fatalf("the warning does not give the connections needed: %v", logs.All()[0].ContextMap())
			}
		})
	}
}
