package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// How often the healer probes the embedded server, and the longest it
// waits between failed recoveries.
const (
	healInterval   = 2 * time.Second
	healMaxBackoff = time.Minute
	// healProvision bounds provisioning the stream and buckets again after
	// a restart of JetStream.
	healProvision = 30 * time.Second
)

var recoveriesDesc = prometheus.NewDesc("fluxbase_broker_recoveries_total",
	"Storage failures recovered from by restarting JetStream on the running server.", nil, nil)

// healer watches the embedded server for a storage failure JetStream does
// not recover from by itself, and recovers by restarting JetStream on the
// running server.
//
// A failed write to a stream's files (too many open files, an I/O error)
// is kept by the stream's store: every later write returns it, and the
// server drops the publish without an answer, so publishers time out,
// however long ago the cause went away. Out of disk space or permission,
// the server disables JetStream altogether. Either way only reopening the
// stores clears it: Server.ShutdownJetStream stops every stream and keeps
// its files (and, clustered, the meta group's state), and
// Server.EnableJetStream recovers them from disk, as a start of the server
// would, while the server and its connections stay up. Memory-backed
// buckets do not survive that, so the broker provisions again.
type healer struct {
	b      *Broker
	ctx    context.Context // ends with stop
	cancel context.CancelFunc
	done   chan struct{}

	mu    sync.Mutex
	fault error // the open episode's cause, nil when healthy

	recoveries atomic.Uint64
}

// startHeal starts b's healer: only an embedded server is b's to heal.
func startHeal(b *Broker) *healer {
	if b.srv == nil {
		return nil
	}
	h := &healer{b: b, done: make(chan struct{})}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	go h.run()
	return h
}

// stop ends the healer and waits for it.
func (h *healer) stop() {
	if h == nil {
		return
	}
	h.cancel()
	<-h.done
}

// err is the open episode's failure, for Ready.
func (h *healer) err() error {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.fault
}

// check is the open episode's failure, or else what a probe finds now, so
// that Ready tells the truth before the healer's next look.
func (h *healer) check() error {
	if h == nil {
		return nil
	}
	if err := h.err(); err != nil {
		return err
	}
	if err := h.probe(); err != nil {
		return fmt.Errorf("change log refuses writes: %w", err)
	}
	return nil
}

func (h *healer) setFault(err error) {
	h.mu.Lock()
	h.fault = err
	h.mu.Unlock()
}

func (h *healer) run() {
	defer close(h.done)
	log := h.b.log.Named("heal")
	// backoff grows with every failed recovery, and with every recovery
	// that a new failure follows within healMaxBackoff, so that a lasting
	// fault does not restart JetStream every few seconds.
	backoff := healInterval
	var recoveredAt time.Time
	unprovisioned := false // JetStream restarted, not yet provisioned
	timer := time.NewTimer(healInterval)
	defer timer.Stop()
	for {
		select {
		case <-h.ctx.Done():
			return
		case <-timer.C:
		}
		recovered, err := h.heal(log, &unprovisioned)
		switch {
		case err != nil:
			h.setFault(fmt.Errorf("change log refuses writes: %w", err))
			log.Warn("recovery failed; retrying", zap.Error(err), zap.Duration("in", backoff))
		case recovered:
			recoveredAt = time.Now()
		default:
			if time.Since(recoveredAt) > healMaxBackoff {
				backoff = healInterval
			}
			timer.Reset(healInterval)
			continue
		}
		timer.Reset(backoff)
		backoff = min(2*backoff, healMaxBackoff)
	}
}

// heal probes, restarts JetStream if it keeps a failure, and provisions
// after a restart, until that succeeds. A failed provisioning (a cluster
// still electing its leader) does not restart JetStream again.
func (h *healer) heal(log *zap.Logger, unprovisioned *bool) (recovered bool, err error) {
	cause := h.probe()
	if cause == nil && !*unprovisioned {
		return false, nil
	}
	if cause != nil {
		if h.err() == nil {
			log.Warn("change log refuses writes; restarting JetStream", zap.Error(cause))
			h.setFault(fmt.Errorf("change log refuses writes: %w", cause))
		}
		if err := h.restart(); err != nil {
			return false, fmt.Errorf("%w; restarting JetStream: %w", cause, err)
		}
		*unprovisioned = true
	}
	ctx, cancel := context.WithTimeout(h.ctx, healProvision)
	defer cancel()
	if err := h.b.provision(ctx); err != nil {
		return false, fmt.Errorf("JetStream restarted; provisioning: %w", err)
	}
	*unprovisioned = false
	if err := h.probe(); err != nil {
		return false, err
	}
	h.recoveries.Add(1)
	h.setFault(nil)
	log.Info("change log takes writes again")
	return true, nil
}

// probe reports a failure JetStream keeps: JetStream disabled, or a
// stream's (or, clustered, its raft node's) stored write error. Other
// health problems, such as a cluster electing a leader, pass by themselves
// and are Ready's to report.
func (h *healer) probe() error {
	srv := h.b.srv
	if !srv.JetStreamEnabled() {
		return errors.New("JetStream is disabled")
	}
	for _, e := range srv.Healthz(&server.HealthzOptions{Details: true}).Errors {
		if strings.Contains(e.Error, "write error") {
			return errors.New(e.Error)
		}
	}
	return nil
}

// restart restarts JetStream on the running server.
func (h *healer) restart() error {
	srv := h.b.srv
	if err := srv.ShutdownJetStream(); err != nil {
		return fmt.Errorf("shut down: %w", err)
	}
	if err := srv.EnableJetStream(h.b.jetStreamConfig()); err != nil {
		// Leave it off, not half on, for the next attempt.
		_ = srv.ShutdownJetStream()
		return fmt.Errorf("enable: %w", err)
	}
	return nil
}

// jetStreamConfig is JetStream's configuration as the server was started
// with it.
func (b *Broker) jetStreamConfig() *server.JetStreamConfig {
	o := b.srvOpts
	return &server.JetStreamConfig{
		StoreDir:     o.StoreDir,
		SyncInterval: o.SyncInterval,
		SyncAlways:   o.SyncAlways,
		MaxMemory:    o.JetStreamMaxMemory,
		MaxStore:     o.JetStreamMaxStore,
		Domain:       o.JetStreamDomain,
		Strict:       !o.NoJetStreamStrict,
		CompressOK:   true,
	}
}

// collect adds the healer's metrics to a scrape.
func (h *healer) collect(ch chan<- prometheus.Metric) {
	var n uint64
	if h != nil {
		n = h.recoveries.Load()
	}
	ch <- prometheus.MustNewConstMetric(recoveriesDesc, prometheus.CounterValue, float64(n))
}
