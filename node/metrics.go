package node

import (
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// poolCollector exports the primary pool's state as
// fluxbase_database_pool_* metrics, read on each scrape: what the alert on
// database connections (deploy/prometheus/alerts.yaml) compares.
type poolCollector struct {
	pool                               *pgxpool.Pool
	acquired, idle, total, max, starve *prometheus.Desc
}

func newPoolCollector(pool *pgxpool.Pool) *poolCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("fluxbase_database_pool_"+name, help, nil, nil)
	}
	return &poolCollector{
		pool:     pool,
		acquired: d("acquired_connections", "Connections of the primary pool in use."),
		idle:     d("idle_connections", "Idle connections of the primary pool."),
		total:    d("connections", "Open connections of the primary pool."),
		max:      d("max_connections", "The primary pool's size (FLUXBASE_DATABASE_MAX_CONNECTIONS)."),
		starve:   d("empty_acquires_total", "Acquires that waited because every connection of the primary pool was in use."),
	}
}

// Describe implements prometheus.Collector.
func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.acquired, c.idle, c.total, c.max, c.starve} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.pool.Stat()
	gauge := func(d *prometheus.Desc, v int32) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v))
	}
	gauge(c.acquired, s.AcquiredConns())
	gauge(c.idle, s.IdleConns())
	gauge(c.total, s.TotalConns())
	gauge(c.max, s.MaxConns())
	ch <- prometheus.MustNewConstMetric(c.starve, prometheus.CounterValue, float64(s.EmptyAcquireCount()))
}
