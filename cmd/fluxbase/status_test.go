package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/fluxbase/fluxbase/node"
)

func TestStatusURL(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		env  map[string]string
		want string
		bad  string
	}{
		{env: map[string]string{}, want: "http://127.0.0.1:8080"},
		{env: map[string]string{"FLUXBASE_HTTP_ADDR": "0.0.0.0:9000"}, want: "http://127.0.0.1:9000"},
		{env: map[string]string{"FLUXBASE_HTTP_ADDR": "10.1.2.3:9000"}, want: "http://10.1.2.3:9000"},
		{env: map[string]string{"FLUXBASE_URL": "http://fluxbase-0.fluxbase-headless:8080/", "FLUXBASE_HTTP_ADDR": ":1"}, want: "http://fluxbase-0.fluxbase-headless:8080"},
		{env: map[string]string{"FLUXBASE_URL": "fluxbase:8080"}, bad: "FLUXBASE_URL"},
		{env: map[string]string{"FLUXBASE_HTTP_ADDR": "8080"}, bad: "FLUXBASE_HTTP_ADDR"},
	} {
		got, err := statusURL(func(k string) string { return tt.env[k] })
		if tt.bad != "" {
			if err == nil || !strings.HasPrefix(err.Error(), tt.bad) {
				t.Errorf("%v: err %v, want one naming %s", tt.env, err, tt.bad)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%v: %q, %v; want %q", tt.env, got, err, tt.want)
		}
	}
}

// Without the secret, status stops at once with a usage error naming it.
func TestStatusNeedsTheSecret(t *testing.T) {
	t.Parallel()
	var out, errs bytes.Buffer
	if code := status(func(string) string { return "" }, &out, &errs); code != exitUsage || !strings.Contains(errs.String(), "FLUXBASE_JWT_SECRET") {
		t.Fatalf("exit %d, stderr %q", code, errs.String())
	}
}

func TestPrintStatus(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	printStatus(&out, node.ClusterStatus{
		Nodes: []node.NodeStatus{
			{Name: "a", Version: "v1", Uptime: 90, Ready: true, Connections: 3, Channels: 5, SlotHolder: true},
			{Name: "b", Version: "v1", Uptime: 30, MetaLeader: true, Draining: true},
		},
		Missing: 1,
		JetStream: node.JetStreamStatus{Stream: "FLUXBASE_CHANGES", Messages: 7, Leader: "b", MetaLeader: "b",
			Replicas: []node.StreamReplica{{Name: "b", Current: true}, {Name: "a", Lag: 4}, {Name: "c", Offline: true}}},
		Replication: node.ReplicationStatus{Slot: "fluxbase", Holder: "a", Active: true, LagBytes: 120, RetainedBytes: 4096},
	})
	for _, want := range []string{"a     v1       1m30s", "slot holder", "jetstream meta leader, draining", "1 node(s) named by the routes did not answer",
		"7 messages, leader b", "replica a: behind by 4", "replica c: offline", "holder a, active yes, lag 120 bytes, retained WAL 4096 bytes"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, out.String())
		}
	}
}
