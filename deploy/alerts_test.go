package deploy

import (
	"bufio"
	"bytes"
	"context"
	"net/http"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/promql/parser"
	"gopkg.in/yaml.v3"

	"github.com/fluxbase/fluxbase/auth"
	"github.com/fluxbase/fluxbase/internal/pgtest"
	"github.com/fluxbase/fluxbase/node"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// ruleFile is Prometheus's rule file format, the fields alerts.yaml uses.
type ruleFile struct {
	Groups []struct {
		Name     string `yaml:"name"`
		Interval string `yaml:"interval"`
		Rules    []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// alertMetrics decodes alerts.yaml strictly (unknown fields fail), parses
// every expression as PromQL, checks each rule's shape, and returns the
// metrics the expressions read.
func alertMetrics(t *testing.T) map[string][]string {
	t.Helper()
	b, err := os.ReadFile("prometheus/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var rf ruleFile
	if err := dec.Decode(&rf); err != nil {
		t.Fatalf("alerts.yaml: %v", err)
	}
	metrics := map[string][]string{} // metric → alerts reading it
	seen := map[string]bool{}
	for _, g := range rf.Groups {
		if g.Name == "" || len(g.Rules) == 0 {
			t.Errorf("group %q: a name and rules", g.Name)
		}
		for _, r := range g.Rules {
			if r.Alert == "" || seen[r.Alert] {
				t.Errorf("group %s: alert %q is unnamed or named twice", g.Name, r.Alert)
			}
			seen[r.Alert] = true
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("%s: severity %q", r.Alert, s)
			}
			if r.Annotations["summary"] == "" {
				t.Errorf("%s: no summary", r.Alert)
			}
			if _, err := time.ParseDuration(r.For); err != nil {
				t.Errorf("%s: for %q: %v", r.Alert, r.For, err)
			}
			expr, err := parser.ParseExpr(r.Expr)
			if err != nil {
				t.Errorf("%s: %v", r.Alert, err)
				continue
			}
			if expr.Type() != parser.ValueTypeVector {
				t.Errorf("%s: the expression is a %s, not a vector", r.Alert, expr.Type())
			}
			parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
				if vs, ok := n.(*parser.VectorSelector); ok {
					metrics[vs.Name] = append(metrics[vs.Name], r.Alert)
				}
				return nil
			})
		}
	}
	return metrics
}

// TestAlertRules parses the alert rules and checks that they cover the
// scaling thresholds and Fluxbase's own failure modes, and that every
// metric they read is on a running node's /metrics.
func TestAlertRules(t *testing.T) {
	t.Parallel()
	metrics := alertMetrics(t)
	for _, want := range []string{
		"process_cpu_seconds_total",                         // CPU
		"process_resident_memory_bytes",                     // memory
		"http_request_duration_seconds_bucket",              // p95
		"http_requests_total",                               // error rate
		"fluxbase_database_pool_acquired_connections",       // DB connections
		"fluxbase_replication_lag_bytes",                    // slot lag, retained WAL
		"fluxbase_replication_holder",                       // no holder
		"fluxbase_broker_jetstream_leader",                  // JetStream quorum
		"fluxbase_realtime_slow_consumer_disconnects_total", // slow consumers
	} {
		if len(metrics[want]) == 0 {
			t.Errorf("no alert reads %s", want)
		}
	}

	served := nodeMetrics(t)
	var missing []string
	for m, alerts := range metrics {
		if !served[m] {
			missing = append(missing, m+" (read by "+strings.Join(alerts, ", ")+")")
		}
	}
	sort.Strings(missing)
	for _, m := range missing {
		t.Errorf("a node serves no metric %s", m)
	}
	// The adapter's rule for the autoscaler reads this one too.
	if !served["http_requests_total"] {
		t.Error("a node serves no http_requests_total")
	}
}

// nodeMetrics runs a node on a fresh database, makes one request of each
// kind its metrics count, and returns the metric names on its /metrics.
func nodeMetrics(t *testing.T) map[string]bool {
	t.Helper()
	secret := strings.Repeat("k", 40)
	var cfg node.Config
	cfg.Name = "alerts"
	cfg.DataDir = t.TempDir()
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Auth = auth.Config{JWTSecret: secret}
	cfg.Database.URL = pgtest.NewDB(t)
	cfg.Replication.SlotName = "deploy_alerts"
	ctx, cancel := context.WithCancel(context.Background())
	n, err := node.New(ctx, cfg, nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("node: %v", err)
		}
	})
	// Ready: the replication metrics are set, the hub reads the log.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := http.Get(n.URL() + "/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the node did not become ready")
		}
		time.Sleep(100 * time.Millisecond)
	}
	resp, err := http.Get(n.URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	names := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	return names
}
