package deploy

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

// loadCompose loads compose.yaml as docker compose would, validated
// against the Compose specification's schema (unknown fields fail).
func loadCompose(t *testing.T) *types.Project {
	t.Helper()
	dir, _ := filepath.Abs(".")
	p, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  dir,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(dir, "compose.yaml")}},
		Environment: types.Mapping{"FLUXBASE_JWT_SECRET": strings.Repeat("s", 40)},
	}, func(o *loader.Options) { o.SetProjectName("fluxbase", true) })
	if err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	return p
}

func env(s types.ServiceConfig, name string) string {
	if v := s.Environment[name]; v != nil {
		return *v
	}
	return ""
}

func duration(t *testing.T, what, v string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return d
}

// TestCompose checks compose.yaml's invariants: three Fluxbase nodes
// routed to each other, PostgreSQL with logical WAL and room for their
// pools, an S3 server they use, nginx in front with this folder's
// nginx.conf, and a stop grace that fits the drain.
func TestCompose(t *testing.T) {
	t.Parallel()
	p := loadCompose(t)
	var nodes []types.ServiceConfig
	for _, s := range p.Services {
		if s.Image == "fluxbase:latest" {
			nodes = append(nodes, s)
		}
	}
	if len(nodes) != 3 {
		t.Fatalf("%d Fluxbase nodes, want 3", len(nodes))
	}
	var want []string
	for _, n := range nodes {
		if n.Hostname != n.Name {
			t.Errorf("%s: hostname %q, want the service name (routes and nginx name it)", n.Name, n.Hostname)
		}
		port := env(n, "FLUXBASE_CLUSTER_PORT")
		if port == "" {
			port = "6222"
		}
		want = append(want, "nats://"+n.Name+":"+port)
	}
	slices.Sort(want)
	names := map[string]bool{}
	for _, n := range nodes {
		names[env(n, "FLUXBASE_NODE_NAME")] = true
		routes := strings.Split(env(n, "FLUXBASE_CLUSTER_ROUTES"), ",")
		slices.Sort(routes)
		if !slices.Equal(routes, want) {
			t.Errorf("%s: routes %v, want every node's: %v", n.Name, routes, want)
		}
		if s3 := env(n, "FLUXBASE_STORAGE_S3_ENDPOINT"); env(n, "FLUXBASE_STORAGE_PROVIDER") != "s3" || !hasService(p, strings.Split(s3, ":")[0]) {
			t.Errorf("%s: storage %q at %q, want s3 on a service of the file", n.Name, env(n, "FLUXBASE_STORAGE_PROVIDER"), s3)
		}
		if len(n.Volumes) != 1 || n.Volumes[0].Target != env(n, "FLUXBASE_DATA_DIR") {
			t.Errorf("%s: its data directory %q is not its own volume", n.Name, env(n, "FLUXBASE_DATA_DIR"))
		}
		grace := time.Duration(*n.StopGracePeriod)
		need := duration(t, "FLUXBASE_DRAIN_DELAY", env(n, "FLUXBASE_DRAIN_DELAY")) +
			duration(t, "FLUXBASE_SHUTDOWN_TIMEOUT", env(n, "FLUXBASE_SHUTDOWN_TIMEOUT")) + 10*time.Second
		if grace < need {
			t.Errorf("%s: stop_grace_period %v is shorter than the drain and the shutdown timeout, %v", n.Name, grace, need)
		}
	}
	if len(names) != 3 {
		t.Errorf("node names %v are not three distinct names", names)
	}

	pg, err := p.GetService("postgres")
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{}
	for i, a := range pg.Command {
		if a == "-c" && i+1 < len(pg.Command) {
			k, v, _ := strings.Cut(pg.Command[i+1], "=")
			settings[k] = v
		}
	}
	if settings["wal_level"] != "logical" {
		t.Errorf("postgres: wal_level %q, want logical", settings["wal_level"])
	}
	// Pool sizing: every node's pool and its replication connections
	// within max_connections less the superusers' reserve.
	maxConns, _ := strconv.Atoi(settings["max_connections"])
	pool, _ := strconv.Atoi(env(nodes[0], "FLUXBASE_DATABASE_MAX_CONNECTIONS"))
	if pool == 0 || len(nodes)*(pool+replicationConns) > maxConns-3 {
		t.Errorf("%d nodes × (pool %d + %d) do not fit max_connections %d − 3", len(nodes), pool, replicationConns, maxConns)
	}
	u, err := url.Parse(env(nodes[0], "DATABASE_URL"))
	if err != nil || u.Hostname() != "postgres" {
		t.Errorf("DATABASE_URL %q does not name the postgres service", env(nodes[0], "DATABASE_URL"))
	}

	nginx, err := p.GetService("nginx")
	if err != nil {
		t.Fatal(err)
	}
	mounted := false
	for _, v := range nginx.Volumes {
		if v.Source == filepath.Join(p.WorkingDir, "nginx.conf") && v.Target == "/etc/nginx/nginx.conf" {
			mounted = true
		}
	}
	if !mounted {
		t.Errorf("nginx does not mount this folder's nginx.conf: %+v", nginx.Volumes)
	}
	conf, _ := os.ReadFile("nginx.conf")
	var servers []string
	for _, m := range regexp.MustCompile(`(?m)^\s*server (\S+?):8080\b`).FindAllStringSubmatch(string(conf), -1) {
		servers = append(servers, m[1])
	}
	var nodeNames []string
	for _, n := range nodes {
		nodeNames = append(nodeNames, n.Name)
	}
	slices.Sort(servers)
	slices.Sort(nodeNames)
	if !slices.Equal(servers, nodeNames) {
		t.Errorf("nginx.conf's upstream %v, want the nodes %v", servers, nodeNames)
	}
}

// replicationConns is what a node opens besides its pool: the replication
// reader's side pool (3) and its replication connection.
const replicationConns = 4

func hasService(p *types.Project, name string) bool {
	_, err := p.GetService(name)
	return err == nil
}
