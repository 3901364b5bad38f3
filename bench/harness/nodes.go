package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/fluxbase/fluxbase/auth"
	"github.com/fluxbase/fluxbase/bench/procstat"
	"github.com/fluxbase/fluxbase/internal/pgcluster"
)

// Node is one Fluxbase node, started here or given by URL.
type Node struct {
	Name string
	URL  string // http://host:port
	proc *Process
}

// PID is the node's process id, or 0 when it runs elsewhere.
func (n *Node) PID() int {
	if n.proc == nil {
		return 0
	}
	return n.proc.PID()
}

// Usage samples the node: /proc when local, /metrics otherwise.
func (n *Node) Usage() procstat.Source {
	if n.proc != nil {
		return procstat.PID(n.proc.PID())
	}
	return procstat.Metrics{URL: strings.TrimRight(n.URL, "/") + "/metrics"}
}

// Cluster is a set of Fluxbase nodes sharing one database.
type Cluster struct {
	Nodes      []*Node
	AnonKey    string
	ServiceKey string
	// JWTSecret is the secret the nodes verify tokens with, for signing
	// users' tokens; empty for nodes given by URL.
	JWTSecret string
	Version   string
}

// Usage samples every node as one.
func (c *Cluster) Usage() procstat.Source {
	g := make(procstat.Group, len(c.Nodes))
	for i, n := range c.Nodes {
		g[i] = n.Usage()
	}
	return g
}

// Stop stops the nodes started here.
func (c *Cluster) Stop() {
	for _, n := range c.Nodes {
		if n.proc != nil {
			_ = n.proc.Stop(20 * time.Second)
		}
	}
}

// Migrate applies Fluxbase's migrations to dbURL with `fluxbase migrate`,
// so its roles exist before a scenario grants them anything.
func (e *Env) Migrate(ctx context.Context, dbURL string) error {
	if len(e.FluxbaseURLs) > 0 {
		return nil // the running nodes have done it
	}
	bin, err := e.Binary(ctx)
	if err != nil {
		return err
	}
	secret, err := e.secret()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, bin, "migrate")
	cmd.Env = append(baseEnv(), "DATABASE_URL="+dbURL, "FLUXBASE_JWT_SECRET="+secret)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("fluxbase migrate: %w\n%s", err, out)
	}
	return nil
}

// Fluxbase returns n nodes on dbURL: the given FluxbaseURLs, or nodes
// started from the binary on free ports, clustered with NATS routes when
// n > 1. The nodes are stopped by Close (or the Cluster's Stop).
func (e *Env) Fluxbase(ctx context.Context, dbURL string, n int) (*Cluster, error) {
	if len(e.FluxbaseURLs) > 0 {
		c := &Cluster{AnonKey: e.APIKey}
		for i, u := range e.FluxbaseURLs {
			c.Nodes = append(c.Nodes, &Node{Name: fmt.Sprintf("node%d", i+1), URL: strings.TrimRight(u, "/")})
		}
		return c, nil
	}
	if n < 1 {
		n = 1
	}
	bin, err := e.Binary(ctx)
	if err != nil {
		return nil, err
	}
	dir, err := e.dir()
	if err != nil {
		return nil, err
	}
	secretHex, err := e.secret()
	if err != nil {
		return nil, err
	}
	c := &Cluster{Version: Version(ctx, bin), JWTSecret: secretHex}
	if c.AnonKey, err = auth.APIKey(secretHex, auth.RoleAnon); err != nil {
		return nil, err
	}
	if c.ServiceKey, err = auth.APIKey(secretHex, auth.RoleServiceRole); err != nil {
		return nil, err
	}

	httpPorts := make([]int, n)
	routePorts := make([]int, n)
	var routes []string
	for i := range n {
		if httpPorts[i], err = pgcluster.FreePort(); err != nil {
			return nil, err
		}
		if routePorts[i], err = pgcluster.FreePort(); err != nil {
			return nil, err
		}
		routes = append(routes, "nats://127.0.0.1:"+strconv.Itoa(routePorts[i]))
	}
	for i := range n {
		name := fmt.Sprintf("fluxbench-%d", i+1)
		env := append(baseEnv(),
			"DATABASE_URL="+dbURL,
			"FLUXBASE_HTTP_ADDR=127.0.0.1:"+strconv.Itoa(httpPorts[i]),
			"FLUXBASE_JWT_SECRET="+secretHex,
			"FLUXBASE_DATA_DIR="+filepath.Join(dir, name),
			"FLUXBASE_NODE_NAME="+name,
			"FLUXBASE_NATS_PORT=-1",
			"FLUXBASE_CLUSTER_PORT="+strconv.Itoa(routePorts[i]),
			// fanout's broadcast mode publishes from one websocket client
			// at the rate measured, far past a client's default rate.
			"FLUXBASE_REALTIME_MAX_EVENTS_PER_SECOND=1000000",
		)
		if n > 1 {
			env = append(env, "FLUXBASE_CLUSTER_ROUTES="+strings.Join(routes, ","))
		}
		e.logf("starting Fluxbase node %s on 127.0.0.1:%d", name, httpPorts[i])
		p, err := Start(bin, env, "serve")
		if err != nil {
			c.Stop()
			return nil, err
		}
		// The node logs JSON lines on stderr; stdout is drained by Stop.
		go func() {
			for range p.Lines() {
			}
		}()
		c.Nodes = append(c.Nodes, &Node{Name: name, URL: "http://127.0.0.1:" + strconv.Itoa(httpPorts[i]), proc: p})
	}
	e.onClose(c.Stop)
	for _, node := range c.Nodes {
		if err := waitHealthy(ctx, node, 90*time.Second); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// secret is the JWT secret of every node this Env starts, made on first
// use.
func (e *Env) secret() (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.jwtSecret == "" {
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return "", fmt.Errorf("make a JWT secret: %w", err)
		}
		e.jwtSecret = hex.EncodeToString(b)
	}
	return e.jwtSecret, nil
}

// baseEnv is a minimal environment for child processes.
func baseEnv() []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "TMPDIR", "GOCACHE", "GOPATH", "FLUXBASE_PG_BIN"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

func waitHealthy(ctx context.Context, n *Node, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.URL+"/health", nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-n.proc.Exited():
			return fmt.Errorf("fluxbase node %s exited during start-up: %s", n.Name, lastLines(n.proc.Stderr(), 5))
		case <-ctx.Done():
			return fmt.Errorf("fluxbase node %s not healthy within %s: %s", n.Name, limit, lastLines(n.proc.Stderr(), 5))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
