package replication

import (
	"errors"
	"fmt"

	"github.com/fluxbase/fluxbase/change"
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	lag        prometheus.Gauge
	events     *prometheus.CounterVec
	byOp       [4]prometheus.Counter // insert, update, delete, truncate (opSlot)
	lastCommit prometheus.Gauge
	holder     prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fluxbase_replication_lag_bytes",
			Help: "WAL bytes between the server's current position and the slot's confirmed position, measured by the slot holder (0 on other nodes).",
		}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fluxbase_replication_events_total",
			Help: "Change events stored durably in the change log by this node.",
		}, []string{"op"}),
		lastCommit: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fluxbase_replication_last_commit_timestamp",
			Help: "Commit time (Unix seconds) of the last transaction whose events are all durable in the change log.",
		}),
		holder: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fluxbase_replication_holder",
			Help: "1 while this node holds the replication slot, else 0.",
		}),
	}
	for i, op := range []change.Op{change.OpInsert, change.OpUpdate, change.OpDelete, change.OpTruncate} {
		m.byOp[i] = m.events.WithLabelValues(string(op))
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.lag, m.events, m.lastCommit, m.holder} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("replication metrics: %w (one Replicator per registry)", err)
			}
			return nil, fmt.Errorf("replication metrics: %w", err)
		}
	}
	return m, nil
}
