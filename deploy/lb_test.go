package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// lookLB finds a load balancer's binary. Outside CI a missing one skips
// the test; in CI (CI set, as .ci/run does) it fails it, since .ci/run
// installs them.
func lookLB(t *testing.T, name string) string {
	t.Helper()
	if p := FindBinary(name); p != "" {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is not installed; .ci/run installs it from Debian's packages", name)
	}
	t.Skipf("%s is not installed (apt-get install %s, or run .ci/run)", name, name)
	return ""
}

var loopbackNodes = []string{"127.0.0.1:18081", "127.0.0.1:18082", "127.0.0.1:18083"}

// TestNginxConfig checks nginx.conf with nginx itself (nginx -t), pointed
// at loopback nodes, and its rules: no stickiness, websockets upgraded,
// retries to the next node, passive failure detection.
func TestNginxConfig(t *testing.T) {
	t.Parallel()
	conf, err := NginxConfig("127.0.0.1:18080", loopbackNodes)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range loopbackNodes {
		if !strings.Contains(conf, "server "+n+" max_fails=") {
			t.Errorf("derived nginx.conf lacks %s:\n%s", n, conf)
		}
	}
	checkNoStickiness(t, "nginx.conf", conf, `(?m)^\s*(ip_hash|hash|sticky)\b`)
	for _, want := range []string{
		`proxy_set_header Upgrade $http_upgrade;`,
		`proxy_set_header Connection $connection_upgrade;`,
		`proxy_next_upstream error timeout http_502 http_503 http_504;`,
		`max_fails=2 fail_timeout=10s`,
		`location /realtime/v1/websocket`,
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("nginx.conf lacks %q", want)
		}
	}
	if regexp.MustCompile(`(?m)^\s*proxy_next_upstream\b[^;]*non_idempotent`).MatchString(conf) {
		t.Error("nginx.conf retries requests that change data (non_idempotent)")
	}
	nginx := lookLB(t, "nginx")
	dir := t.TempDir()
	file := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(nginx, "-t", "-p", dir, "-c", file, "-g", NginxGlobals(dir)).CombinedOutput()
	if err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
}

// TestHAProxyConfig checks haproxy.cfg with HAProxy itself (haproxy -c,
// warnings fail), pointed at loopback nodes, and its rules: no
// stickiness, health checks on /ready, retries only where safe.
func TestHAProxyConfig(t *testing.T) {
	t.Parallel()
	conf, err := HAProxyConfig("127.0.0.1:18080", loopbackNodes)
	if err != nil {
		t.Fatal(err)
	}
	checkNoStickiness(t, "haproxy.cfg", conf, `(?m)^\s*(cookie|stick|stick-table|balance\s+(source|hdr|uri|url_param))\b`)
	for _, want := range []string{
		"balance roundrobin",
		"option httpchk GET /ready",
		"http-check expect status 200",
		"retry-on conn-failure",
		"http-request disable-l7-retry unless idempotent",
		"option redispatch",
		"timeout tunnel",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("haproxy.cfg lacks %q", want)
		}
	}
	if n := len(regexp.MustCompile(`(?m)^\s*server fluxbase-\d 127\.0\.0\.1:1808\d$`).FindAllString(conf, -1)); n != len(loopbackNodes) {
		t.Errorf("derived haproxy.cfg has %d servers, want %d:\n%s", n, len(loopbackNodes), conf)
	}
	haproxy := lookLB(t, "haproxy")
	file := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(haproxy, "-c", "-dW", "-f", file).CombinedOutput()
	if err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
}

func checkNoStickiness(t *testing.T, file, conf, pattern string) {
	t.Helper()
	if m := regexp.MustCompile(pattern).FindString(conf); m != "" {
		t.Errorf("%s pins clients to nodes (%q): Fluxbase needs no stickiness", file, strings.TrimSpace(m))
	}
}

// Deriving fails loudly when the shipped file's shape changes.
func TestDeriveNeedsServers(t *testing.T) {
	t.Parallel()
	if _, err := derive("nginx.conf", nginxListen, regexp.MustCompile(`^no such line$`), func(string) string { return "" },
		func(string, string, int) string { return "" }, 1); err == nil {
		t.Fatal("a file without server lines was derived")
	}
}
