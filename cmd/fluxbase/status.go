package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fluxbase/fluxbase/auth"
	"github.com/fluxbase/fluxbase/node"
)

// status prints GET /cluster of one node as tables: the nodes, the change
// stream's replicas and the slot. It signs a service key with
// FLUXBASE_JWT_SECRET, so it runs where the nodes' environment is (a
// container's shell, a Kubernetes exec).
func status(getenv func(string) string, stdout, stderr io.Writer) int {
	secret := getenv("FLUXBASE_JWT_SECRET")
	if len(secret) < auth.MinSecretLength {
		fmt.Fprintf(stderr, "fluxbase: FLUXBASE_JWT_SECRET is required: the cluster's secret, at least %d characters\n", auth.MinSecretLength)
		return exitUsage
	}
	base, err := statusURL(getenv)
	if err != nil {
		fmt.Fprintf(stderr, "fluxbase: %v\n", err)
		return exitUsage
	}
	key, err := auth.APIKey(secret, auth.RoleServiceRole)
	if err != nil {
		fmt.Fprintf(stderr, "fluxbase: %v\n", err)
		return exitFailure
	}
	req, err := http.NewRequest(http.MethodGet, base+"/cluster", nil)
	if err != nil {
		fmt.Fprintf(stderr, "fluxbase: FLUXBASE_URL: %v\n", err)
		return exitUsage
	}
	req.Header.Set("apikey", key)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "fluxbase: ask %s: %v\n", base, err)
		return exitFailure
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		fmt.Fprintf(stderr, "fluxbase: %s/cluster answered %s: %s\n", base, resp.Status, strings.TrimSpace(string(b)))
		return exitFailure
	}
	var cs node.ClusterStatus
	if err := json.NewDecoder(resp.Body).Decode(&cs); err != nil {
		fmt.Fprintf(stderr, "fluxbase: %s/cluster: %v\n", base, err)
		return exitFailure
	}
	printStatus(stdout, cs)
	return 0
}

// statusURL is FLUXBASE_URL, or this host's FLUXBASE_HTTP_ADDR.
func statusURL(getenv func(string) string) (string, error) {
	if u := strings.TrimRight(getenv("FLUXBASE_URL"), "/"); u != "" {
		if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
			return "", fmt.Errorf("FLUXBASE_URL=%q is invalid: want http://host:port", u)
		}
		return u, nil
	}
	addr := getenv("FLUXBASE_HTTP_ADDR")
	if addr == "" {
		addr = ":8080"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("FLUXBASE_HTTP_ADDR=%q is invalid: want host:port or :port", addr)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port), nil
}

func printStatus(w io.Writer, cs node.ClusterStatus) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tVERSION\tUPTIME\tREADY\tCONNECTIONS\tCHANNELS\tHTTP\tROLES")
	for _, n := range cs.Nodes {
		var roles []string
		if n.SlotHolder {
			roles = append(roles, "slot holder")
		}
		if n.MetaLeader {
			roles = append(roles, "jetstream meta leader")
		}
		if n.Draining {
			roles = append(roles, "draining")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", n.Name, n.Version,
			(time.Duration(n.Uptime) * time.Second).String(), yesNo(n.Ready), n.Connections, n.Channels, n.HTTPConnections, strings.Join(roles, ", "))
	}
	_ = tw.Flush()
	if cs.Missing > 0 {
		fmt.Fprintf(w, "%d node(s) named by the routes did not answer\n", cs.Missing)
	}
	js := cs.JetStream
	fmt.Fprintf(w, "\nchange stream %s: %d messages, leader %s, meta leader %s\n", js.Stream, js.Messages, orNone(js.Leader), orNone(js.MetaLeader))
	if js.Error != "" {
		fmt.Fprintf(w, "  error: %s\n", js.Error)
	}
	for _, r := range js.Replicas {
		state := "current"
		switch {
		case r.Offline:
			state = "offline"
		case !r.Current:
			state = fmt.Sprintf("behind by %d", r.Lag)
		}
		fmt.Fprintf(w, "  replica %s: %s\n", r.Name, state)
	}
	rp := cs.Replication
	fmt.Fprintf(w, "\nslot %s: holder %s, active %s, lag %d bytes, retained WAL %d bytes\n",
		rp.Slot, orNone(rp.Holder), yesNo(rp.Active), rp.LagBytes, rp.RetainedBytes)
	if rp.Error != "" {
		fmt.Fprintf(w, "  error: %s\n", rp.Error)
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
