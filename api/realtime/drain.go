package realtime

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/fluxbase/fluxbase/api"
)

// shutdownReason closes a connection with 1001 (going away): the server
// leaves, the client should connect again, to another node. realtime-js
// reconnects after any close it did not ask for, 1 s after the first.
const shutdownReason = "server shutting down"

// errDraining refuses a websocket on a draining node; the client's next
// try goes through the load balancer to another node.
var errDraining = api.ErrUnavailable.With("this node is shutting down; connect again")

// drainState is the endpoint's open connections and whether it drains.
type drainState struct {
	mu       sync.Mutex
	draining bool
	open     map[*rtConn]struct{}
}

// refusing reports whether new websockets are refused.
func (d *drainState) refusing() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.draining
}

// add records an open connection. A connection upgraded while Drain began
// is closed at once rather than missed.
func (d *drainState) add(c *rtConn) {
	d.mu.Lock()
	draining := d.draining
	if !draining {
		if d.open == nil {
			d.open = map[*rtConn]struct{}{}
		}
		d.open[c] = struct{}{}
	}
	d.mu.Unlock()
	if draining {
		c.close(shutdownReason)
	}
}

func (d *drainState) remove(c *rtConn) {
	d.mu.Lock()
	delete(d.open, c)
	d.mu.Unlock()
}

// Drain prepares the node's departure: new websockets are refused with
// 503, and every open one is closed with 1001 (going away), its channels
// left and its presence removed on every node. The closes are spread
// evenly over spread, so the reconnects of many clients reach the other
// nodes over that time, not at once (realtime-js waits a fixed 1 s after
// the first close; the server cannot hint a delay). It returns once every
// connection was closed, or when ctx ends. HTTP broadcast keeps working.
func (rt *Endpoint) Drain(ctx context.Context, spread time.Duration) {
	d := &rt.drain
	d.mu.Lock()
	d.draining = true
	conns := make([]*rtConn, 0, len(d.open))
	for c := range d.open {
		conns = append(conns, c)
	}
	d.mu.Unlock()
	if len(conns) == 0 {
		return
	}
	rt.log.Info("closing realtime connections", zap.Int("connections", len(conns)), zap.Duration("over", spread))
	step := spread / time.Duration(len(conns))
	for i, c := range conns {
		if i > 0 && step > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(step):
			}
		}
		c.close(shutdownReason)
	}
}
