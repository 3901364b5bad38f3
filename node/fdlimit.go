package node

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
)

// This file keeps a node from running out of file descriptors. Every
// websocket and every HTTP connection holds one; so do the broker's
// JetStream files and sockets and the database pools' connections, and
// those must never be the ones that fail: a JetStream store that meets
// EMFILE stops taking writes. So the process's limit (RLIMIT_NOFILE) is
// split in three, from the top:
//
//   - the reserve's lower half is never taken by HTTP: the broker, the
//     database pools, the replication connection, logs;
//   - its upper half is HTTP connections beyond the websockets: REST keeps
//     answering new clients while websockets are at their cap;
//   - the rest is websockets (Realtime's MaxConnections), each refused
//     before its upgrade once they are all taken.
//
// The HTTP listener accepts no more connections than its share: past it,
// Accept waits until one closes, and the connections waiting meanwhile
// stay in the kernel's backlog, holding no descriptor of the process.

// FDBudget is the split of the process's descriptors.
type FDBudget struct {
	// Limit is the process's open-file limit.
	Limit int
	// Reserve is what websockets never take.
	Reserve int
	// HTTPConns bounds the HTTP connections open at once, websockets
	// included: Limit - Reserve/2.
	HTTPConns int
	// Websockets bounds the websocket connections: Limit - Reserve, or
	// less when configured so.
	Websockets int
}

// minReserve is the least reserve accepted: the broker alone holds a few
// dozen descriptors.
const minReserve = 64

// openFileLimit is the process's soft RLIMIT_NOFILE (the Go runtime has
// raised it to the hard limit at start-up).
func openFileLimit() (int, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, fmt.Errorf("read the open-file limit: %w", err)
	}
	if rl.Cur > 1<<30 {
		return 1 << 30, nil
	}
	return int(rl.Cur), nil
}

// fdBudget splits limit descriptors. reserve 0 means the default (a
// quarter of the limit, at most 1024); maxWebsockets 0 means all that is
// left after the reserve, and one above that is lowered to it (clamped
// reports so).
func fdBudget(limit, reserve, maxWebsockets int) (b FDBudget, clamped bool, err error) {
	if reserve == 0 {
		reserve = min(1024, limit/4)
	}
	if reserve < minReserve || limit-reserve < minReserve {
		return b, false, &configError{"FLUXBASE_FD_RESERVE", fmt.Sprint(reserve),
			fmt.Sprintf("at least %d and at most the open-file limit (%d) less %d", minReserve, limit, minReserve)}
	}
	b = FDBudget{Limit: limit, Reserve: reserve, HTTPConns: limit - reserve/2, Websockets: limit - reserve}
	if maxWebsockets > 0 {
		clamped = maxWebsockets > b.Websockets
		b.Websockets = min(maxWebsockets, b.Websockets)
	}
	return b, clamped, nil
}

// limitListener accepts at most n connections open at once; Accept waits
// for one to close beyond that.
type limitListener struct {
	net.Listener
	slots chan struct{} // one token per connection held, and one per Accept waiting
	open  atomic.Int64
	done  chan struct{}
	once  sync.Once
}

func newLimitListener(ln net.Listener, n int) *limitListener {
	return &limitListener{Listener: ln, slots: make(chan struct{}, n), done: make(chan struct{})}
}

// Accept waits for a free slot, then accepts.
func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	l.open.Add(1)
	return &limitConn{Conn: c, release: func() { l.open.Add(-1); <-l.slots }}, nil
}

// Close closes the listener and ends an Accept waiting for a slot.
func (l *limitListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// Open is the number of accepted connections not yet closed.
func (l *limitListener) Open() int { return int(l.open.Load()) }

// limitConn gives its slot back when closed, once.
type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// SyscallConn exposes the socket's descriptor: realtime's writers write
// to it directly.
func (c *limitConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.New("connection has no descriptor")
}
