// Package deploy holds Fluxbase's deployment files — compose.yaml, the
// Kubernetes manifests, nginx.conf, haproxy.cfg, the Prometheus alert
// rules and the Dockerfile — and the tests that validate them. Its Go
// code derives the load balancers' configurations for other nodes'
// addresses, so the tests that run nginx and HAProxy in front of real
// nodes run these very files. No binary imports it.
package deploy

import (
	"embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

//go:embed nginx.conf haproxy.cfg
var files embed.FS

var (
	nginxServer   = regexp.MustCompile(`^(\s*)server fluxbase-\d+:8080( [^;]*)?;$`)
	nginxListen   = regexp.MustCompile(`^(\s*)listen 8080;$`)
	haproxyServer = regexp.MustCompile(`^(\s*)server fluxbase-\d+ fluxbase-\d+:8080(.*)$`)
	haproxyBind   = regexp.MustCompile(`^(\s*)bind :8080$`)
)

// NginxConfig is nginx.conf listening on listen (host:port) with nodes
// (host:port each) as its upstream servers, every other line as shipped.
func NginxConfig(listen string, nodes []string) (string, error) {
	return derive("nginx.conf", nginxListen, nginxServer,
		func(indent string) string { return indent + "listen " + listen + ";" },
		func(indent, params string, i int) string { return indent + "server " + nodes[i] + params + ";" }, len(nodes))
}

// HAProxyConfig is haproxy.cfg bound to listen (host:port) with nodes
// (host:port each) as its servers, every other line as shipped.
func HAProxyConfig(listen string, nodes []string) (string, error) {
	return derive("haproxy.cfg", haproxyBind, haproxyServer,
		func(indent string) string { return indent + "bind " + listen },
		func(indent, params string, i int) string {
			return fmt.Sprintf("%sserver fluxbase-%d %s%s", indent, i+1, nodes[i], params)
		}, len(nodes))
}

// derive rewrites file's one listen line and its server lines: the first
// server line becomes n lines (with its parameters), the others go.
func derive(file string, listenRe, serverRe *regexp.Regexp, listen func(indent string) string,
	server func(indent, params string, i int) string, n int) (string, error) {
	b, err := files.ReadFile(file)
	if err != nil {
		return "", err
	}
	var out []string
	listens, servers := 0, 0
	for _, line := range strings.Split(string(b), "\n") {
		if m := listenRe.FindStringSubmatch(line); m != nil {
			listens++
			out = append(out, listen(m[1]))
			continue
		}
		if m := serverRe.FindStringSubmatch(line); m != nil {
			if servers++; servers == 1 {
				for i := range n {
					out = append(out, server(m[1], m[2], i))
				}
			}
			continue
		}
		out = append(out, line)
	}
	if listens != 1 || servers == 0 {
		return "", fmt.Errorf("%s: want one listening line and server lines, found %d and %d", file, listens, servers)
	}
	return strings.Join(out, "\n"), nil
}

// NginxGlobals is nginx's -g argument for running a derived nginx.conf
// from dir in the foreground: its pid file in dir, its errors on stderr.
func NginxGlobals(dir string) string {
	return "daemon off; pid " + dir + "/nginx.pid; error_log stderr;"
}

// FindBinary is the path of a load balancer's binary (Debian installs
// nginx and haproxy in /usr/sbin, which a user's PATH may lack), or "".
func FindBinary(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}
