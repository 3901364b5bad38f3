package node

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/fluxbase/fluxbase/api"
	"github.com/fluxbase/fluxbase/change"
)

// statusSubject is where every node answers for itself, over the cluster's
// NATS: GET /cluster asks them all.
const statusSubject = "fluxbase.cluster.status"

// NodeStatus is what one node reports of itself.
type NodeStatus struct {
	Name      string    `json:"name"`
	Version   string    `json:"version"`
	StartedAt time.Time `json:"started_at"`
	Uptime    float64   `json:"uptime_seconds"`
	Ready     bool      `json:"ready"`
	Draining  bool      `json:"draining"`
	// Connections and Channels are the node's realtime websockets and
	// joined channels; HTTPConnections its open HTTP client connections.
	Connections     int  `json:"connections"`
	Channels        int  `json:"channels"`
	HTTPConnections int  `json:"http_connections"`
	SlotHolder      bool `json:"slot_holder"`
	MetaLeader      bool `json:"jetstream_meta_leader"`
}

// ClusterStatus is GET /cluster's answer, which `fluxbase status` prints.
type ClusterStatus struct {
	Nodes []NodeStatus `json:"nodes"`
	// Missing counts the nodes FLUXBASE_CLUSTER_ROUTES names that did not
	// answer in time.
	Missing     int               `json:"missing"`
	JetStream   JetStreamStatus   `json:"jetstream"`
	Replication ReplicationStatus `json:"replication"`
}

// JetStreamStatus is the change stream's cluster state.
type JetStreamStatus struct {
	MetaLeader string          `json:"meta_leader"`
	Stream     string          `json:"stream"`
	Messages   uint64          `json:"messages"`
	Leader     string          `json:"leader"`
	Replicas   []StreamReplica `json:"replicas"`
	Error      string          `json:"error,omitempty"`
}

// StreamReplica is one copy of the change stream; the leader's is current
// by definition.
type StreamReplica struct {
	Name    string `json:"name"`
	Current bool   `json:"current"`
	Offline bool   `json:"offline"`
	Lag     uint64 `json:"lag"`
}

// ReplicationStatus is the slot as PostgreSQL sees it.
type ReplicationStatus struct {
	Slot   string `json:"slot"`
	Holder string `json:"holder"`
	Active bool   `json:"active"`
	// LagBytes is the WAL written since the slot's confirmed position;
	// RetainedBytes what PostgreSQL keeps for it (since its restart LSN).
	LagBytes      int64  `json:"lag_bytes"`
	RetainedBytes int64  `json:"retained_wal_bytes"`
	Error         string `json:"error,omitempty"`
}

// status is this node's NodeStatus now.
func (n *Node) status(ctx context.Context) NodeStatus {
	s := NodeStatus{
		Name: n.cfg.Name, Version: n.cfg.Version, StartedAt: n.started.UTC(), Uptime: time.Since(n.started).Seconds(),
		Draining:    n.draining.Load(),
		Connections: n.rt.Hub().Clients(), Channels: n.rt.Hub().Channels(),
		SlotHolder: n.repl.IsHolder(),
	}
	s.Ready = !s.Draining && n.bus.Ready(ctx) == nil && n.repl.Ready() == nil && n.rt.Hub().Ready() == nil
	s.HTTPConnections = int(gaugeValue(n.reg, "fluxbase_active_connections"))
	s.MetaLeader = gaugeValue(n.reg, "fluxbase_broker_jetstream_leader") == 1
	if v := s.Version; v == "" {
		s.Version = "dev"
	}
	return s
}

// gaugeValue reads one unlabelled gauge of reg, or 0.
func gaugeValue(reg prometheus.Gatherer, name string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		return 0
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return 0
}

// answerStatus makes this node answer status requests until the returned
// function is called.
func (n *Node) answerStatus() (stop func(), err error) {
	sub, err := n.bus.Conn().Subscribe(statusSubject, func(m *nats.Msg) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		b, _ := json.Marshal(n.status(ctx))
		_ = m.Respond(b)
	})
	if err != nil {
		return nil, err
	}
	return func() { _ = sub.Unsubscribe() }, nil
}

// serveCluster answers GET /cluster: every node's status, gathered over
// NATS for up to a second (or until every routed node answered), the
// change stream's replicas and the slot.
func (n *Node) serveCluster(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	var cs ClusterStatus
	cs.Nodes = n.gatherNodes(ctx, clusterNodes(n.cfg.Broker.Routes))
	cs.Missing = max(clusterNodes(n.cfg.Broker.Routes)-len(cs.Nodes), 0)
	for _, s := range cs.Nodes {
		if s.MetaLeader {
			cs.JetStream.MetaLeader = s.Name
		}
		if s.SlotHolder {
			cs.Replication.Holder = s.Name
		}
	}
	cs.JetStream.Stream = change.Stream
	if st, err := n.bus.JetStream().Stream(ctx, change.Stream); err != nil {
		cs.JetStream.Error = err.Error()
	} else if info, err := st.Info(ctx); err != nil {
		cs.JetStream.Error = err.Error()
	} else {
		cs.JetStream.Messages = info.State.Msgs
		if c := info.Cluster; c != nil {
			cs.JetStream.Leader = c.Leader
			if c.Leader != "" {
				cs.JetStream.Replicas = append(cs.JetStream.Replicas, StreamReplica{Name: c.Leader, Current: true})
			}
			for _, p := range c.Replicas {
				cs.JetStream.Replicas = append(cs.JetStream.Replicas, StreamReplica{Name: p.Name, Current: p.Current, Offline: p.Offline, Lag: p.Lag})
			}
		}
	}
	cs.Replication.Slot = n.cfg.Replication.SlotName
	if cs.Replication.Slot == "" {
		cs.Replication.Slot = "fluxbase" // replication.Config's default
	}
	err := n.pool.QueryRow(ctx, `select active,
			coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), 0)::bigint,
			coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::bigint
		from pg_catalog.pg_replication_slots where slot_name = $1`, cs.Replication.Slot).
		Scan(&cs.Replication.Active, &cs.Replication.LagBytes, &cs.Replication.RetainedBytes)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		cs.Replication.Error = "the slot does not exist yet"
	case err != nil:
		n.log.Warn("cluster status: read the slot", zap.Error(err))
		cs.Replication.Error = "could not read the slot"
	}
	api.WriteJSON(w, http.StatusOK, cs)
}

// gatherNodes asks every node for its status and collects the answers
// until want arrived or ctx ends, sorted by name.
func (n *Node) gatherNodes(ctx context.Context, want int) []NodeStatus {
	nc := n.bus.Conn()
	inbox := nats.NewInbox()
	replies := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe(inbox, replies)
	if err != nil {
		return []NodeStatus{n.status(ctx)}
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(statusSubject, inbox, nil); err != nil {
		return []NodeStatus{n.status(ctx)}
	}
	wait, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	seen := map[string]bool{}
	var out []NodeStatus
	for len(out) < want {
		select {
		case m := <-replies:
			var s NodeStatus
			if json.Unmarshal(m.Data, &s) == nil && !seen[s.Name] {
				seen[s.Name] = true
				out = append(out, s)
			}
			continue
		case <-wait.Done():
		}
		break
	}
	slices.SortFunc(out, func(a, b NodeStatus) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out
}
