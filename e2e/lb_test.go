package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fluxbase/fluxbase/auth"
	"github.com/fluxbase/fluxbase/deploy"
	"github.com/fluxbase/fluxbase/internal/pgcluster"
)

// loadBalancer starts one load balancer on listen in front of nodes, from
// the configuration in deploy/, and returns its process.
type loadBalancer struct {
	name  string
	start func(t *testing.T, bin, listen string, nodes []string) *exec.Cmd
}

var loadBalancers = []loadBalancer{
	{"nginx", func(t *testing.T, bin, listen string, nodes []string) *exec.Cmd {
		conf, err := deploy.NginxConfig(listen, nodes)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		file := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		return exec.Command(bin, "-p", dir, "-c", file, "-g", deploy.NginxGlobals(dir))
	}},
	{"haproxy", func(t *testing.T, bin, listen string, nodes []string) *exec.Cmd {
		conf, err := deploy.HAProxyConfig(listen, nodes)
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(t.TempDir(), "haproxy.cfg")
		if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		return exec.Command(bin, "-db", "-f", file)
	}},
}

// TestLoadBalancers puts three `fluxbase serve` nodes behind nginx and
// then HAProxy, each configured by deploy/'s file, and runs supabase-js
// through them (node/lb.test.mjs): its websocket and its REST calls land
// on different nodes with no stickiness, and when the websocket's node is
// drained the client reconnects through the balancer to another node and
// carries on. The drained node is started again before the next balancer.
func TestLoadBalancers(t *testing.T) {
	t.Parallel()
	nodeBin, dir := nodeTests(t)
	bins := map[string]string{}
	for _, lb := range loadBalancers {
		if bins[lb.name] = deploy.FindBinary(lb.name); bins[lb.name] == "" {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is not installed; .ci/run installs it from Debian's packages", lb.name)
			}
			t.Skipf("%s is not installed (apt-get install %s, or run .ci/run)", lb.name, lb.name)
		}
	}
	dbURL, _ := migratedDB(t, `create table public.lb_items (id serial primary key, title text not null)`)
	nodes := startServeCluster(t, buildFluxbase(t), dbURL, []string{"a", "b", "c"},
		"FLUXBASE_DRAIN_DELAY=2s", "FLUXBASE_SHUTDOWN_TIMEOUT=20s")
	var addrs []string
	for _, n := range nodes {
		waitHTTP(t, n.url+"/ready", 2*time.Minute)
		addrs = append(addrs, strings.TrimPrefix(n.url, "http://"))
	}
	anon, _ := auth.APIKey(jwtSecret, auth.RoleAnon)

	for _, lb := range loadBalancers {
		t.Run(lb.name, func(t *testing.T) {
			port, err := pgcluster.FreePort()
			if err != nil {
				t.Fatal(err)
			}
			listen := "127.0.0.1:" + strconv.Itoa(port)
			cmd := lb.start(t, bins[lb.name], listen, addrs)
			var logs syncBuffer
			cmd.Stdout, cmd.Stderr = &logs, &logs
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan struct{})
			go func() { _ = cmd.Wait(); close(exited) }()
			defer func() {
				stopProcess(cmd.Process, exited, os.Interrupt, 15*time.Second)
				if t.Failed() {
					t.Logf("%s log:\n%s", lb.name, logs.String())
				}
			}()
			waitHTTP(t, "http://"+listen+"/ready", time.Minute)

			var pids []string
			for _, n := range nodes {
				pids = append(pids, n.name+"="+strconv.Itoa(n.cmd.Process.Pid))
			}
			runNodeScripts(t, nodeBin, dir, []string{"lb.test.mjs"},
				"LB_URL=http://"+listen, "ANON_KEY="+anon, "NODE_PIDS="+strings.Join(pids, ","))

			// The script drained one node: it exits cleanly, and starts
			// again for the next balancer.
			drained := waitExited(t, nodes)
			if !drained.cmd.ProcessState.Success() {
				t.Fatalf("the drained node %s exited with %v", drained.name, drained.cmd.ProcessState)
			}
			drained.start(t)
			for _, n := range nodes {
				waitHTTP(t, n.url+"/ready", 2*time.Minute)
			}
		})
	}
}

// waitExited waits for one of nodes to exit and returns it.
func waitExited(t *testing.T, nodes []*serveNode) *serveNode {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		for _, n := range nodes {
			select {
			case <-n.done:
				return n
			default:
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("no node exited after the drain")
	return nil
}
