package realtime

import (
	"errors"
	"net"
	"runtime"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"go.uber.org/zap"

	"github.com/fluxbase/fluxbase/broker/fanout"
)

// This file is realtime's write path. A fan-out writes the same few
// hundred bytes to thousands of sockets; what it costs is one system call
// per socket, and everything around that call is overhead to remove. So
// no goroutine waits on each connection's queue: a connection whose queue
// gains frames is put on a run list, and a small pool of writers (one per
// processor) takes connections off it in order, encodes every frame the
// connection has queued into one buffer, and hands that buffer to the
// kernel in one non-blocking write. A client that fell behind thus gets
// its backlog in one write, and the more the node is loaded, the more
// frames each write carries.
//
// A socket whose kernel buffer is full cannot take the whole write; its
// remainder goes to a goroutine of its own that waits for the socket
// (bounded by the write timeout) and then hands the connection back to
// the pool. A slow client costs a goroutine only while it is slow, and
// never holds up a writer.

// writerPool runs the writers and their run list.
type writerPool struct {
	mu     sync.Mutex
	cond   sync.Cond
	run    []*rtConn // connections with frames to write, oldest first, from head
	head   int
	idle   int // writers waiting on cond
	closed bool
	wg     sync.WaitGroup
}

// writerChunk is how many connections a writer takes off the run list at
// once: enough to keep the list's lock cold, few enough that the other
// writers share a fan-out's connections.
const writerChunk = 64

func newWriterPool(writers int) *writerPool {
	if writers <= 0 {
		writers = runtime.GOMAXPROCS(0)
	}
	p := &writerPool{}
	p.cond.L = &p.mu
	p.wg.Add(writers)
	for range writers {
		go p.writer()
	}
	return p
}

// schedule puts c on the run list. The caller owns c's queue (its Notify
// fired, or it is handing the connection back).
func (p *writerPool) schedule(c *rtConn) {
	p.mu.Lock()
	p.run = append(p.run, c)
	if p.idle > 0 {
		p.cond.Signal()
	}
	p.mu.Unlock()
}

// close stops the writers once the run list is empty.
func (p *writerPool) close() {
	p.mu.Lock()
	p.closed = true
	p.cond.Broadcast()
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *writerPool) writer() {
	defer p.wg.Done()
	w := &connWriter{}
	batch := make([]*rtConn, 0, writerChunk)
	for {
		p.mu.Lock()
		for p.head == len(p.run) && !p.closed {
			p.idle++
			p.cond.Wait()
			p.idle--
		}
		if p.head == len(p.run) {
			p.mu.Unlock()
			return
		}
		end := min(p.head+writerChunk, len(p.run))
		batch = append(batch[:0], p.run[p.head:end]...)
		clear(p.run[p.head:end])
		p.head = end
		if p.head == len(p.run) {
			p.run, p.head = p.run[:0], 0
		}
		p.mu.Unlock()
		for _, c := range batch {
			w.write(c)
		}
		clear(batch)
	}
}

// connWriter is one writer's scratch space, reused for every connection
// (Queue.Take clears the frames it is handed back).
type connWriter struct {
	frames []fanout.Frame
	buf    []byte
}

// write writes what c has queued. The writer owns c's queue on entry; on
// return it has released it, handed it to a slow writer, requeued it, or
// closed the connection.
func (w *connWriter) write(c *rtConn) {
	q := c.client.Queue
	w.frames = q.Take(w.frames)
	if q.Closed() {
		reason := q.Reason()
		var last []byte
		// A client closed for its own conduct (a rate limit) first gets
		// the replies queued before the close, so it learns which of its
		// messages were refused; one that could not keep up gets nothing
		// more.
		if reason != fanout.SlowConsumerReason && len(w.frames) > 0 {
			for _, f := range w.frames {
				last = appendWSFrame(last, f)
			}
		}
		go c.finish(reason, last)
		return
	}
	if len(w.frames) == 0 {
		if !q.Release() {
			c.rt.writers.schedule(c) // frames or a close arrived meanwhile
		}
		return
	}
	w.buf = w.buf[:0]
	for _, f := range w.frames {
		w.buf = appendWSFrame(w.buf, f)
	}
	sent := len(w.frames)
	n, err := c.writeNow(w.buf)
	if err != nil {
		c.rt.log.Debug("realtime write failed", zap.Error(err))
		c.close("write failed")
		c.rt.writers.schedule(c) // to see the close
		return
	}
	c.rt.metrics.sent.Add(float64(sent))
	if n < len(w.buf) {
		rest := append([]byte(nil), w.buf[n:]...)
		go c.writeSlow(rest)
		return
	}
	if cap(w.buf) > 1<<20 {
		w.buf = nil // do not pin a burst's buffer
	}
	if !q.Release() {
		c.rt.writers.schedule(c) // more arrived while writing: to the back
	}
}

// writeNow writes b without blocking and returns how much the kernel
// took; a full socket buffer is not an error.
//
// It calls write(2) on the socket's descriptor directly: the writers
// make one call per client per burst, and the runtime's bookkeeping
// around a descriptor (locks, deadlines, scheduler hand-off) would be a
// sizeable part of that call. This is safe because only the queue's
// owner writes and only the owner closes the socket (finish), after
// which the queue is closed and nothing writes again; the descriptor is
// non-blocking, so the call returns at once.
func (c *rtConn) writeNow(b []byte) (int, error) {
	if c.fd < 0 {
		return 0, nil
	}
	for {
		n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(c.fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
		switch errno {
		case 0:
			return int(n), nil
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return 0, nil
		}
		return 0, errno
	}
}

// writeSlow owns the connection while the socket cannot take its
// backlog: it writes rest waiting for the socket, bounded by the write
// timeout, then hands the connection back to the writers.
func (c *rtConn) writeSlow(rest []byte) {
	nc := c.ws.NetConn()
	_ = nc.SetWriteDeadline(time.Now().Add(c.rt.cfg.WriteTimeout))
	_, err := nc.Write(rest)
	// The writers' non-blocking writes must not meet a stale deadline.
	_ = nc.SetWriteDeadline(time.Time{})
	if err != nil {
		var ne net.Error
		reason := "write failed"
		if errors.As(err, &ne) && ne.Timeout() {
			reason = "write timed out"
		}
		c.rt.log.Debug("realtime write failed", zap.Error(err))
		c.close(reason)
	}
	c.rt.writers.schedule(c)
}

// finish ends a connection whose queue closed: the last frames, if any,
// then a close frame with the queue's reason, then the socket, each write
// bounded by a second. Only the queue's owner calls it, once.
func (c *rtConn) finish(reason string, last []byte) {
	defer c.rt.conns.Done()
	defer c.rt.open.Add(-1)
	defer c.ws.Close()
	if len(last) > 0 {
		nc := c.ws.NetConn()
		_ = nc.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := nc.Write(last); err != nil {
			return // the close frame could not follow a partial frame
		}
	}
	c.writeClose(reason)
}

// appendWSFrame appends f as one unmasked server websocket frame
// (RFC 6455 §5.2).
func appendWSFrame(dst []byte, f fanout.Frame) []byte {
	op := byte(0x1) // text
	switch {
	case f.Pong:
		op = 0xA
	case f.Binary:
		op = 0x2
	}
	n := f.Len()
	dst = append(dst, 0x80|op)
	switch {
	case n < 126:
		dst = append(dst, byte(n))
	case n <= 0xFFFF:
		dst = append(dst, 126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 127, byte(n>>56), byte(n>>48), byte(n>>40), byte(n>>32), byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	dst = append(dst, f.Data...)
	dst = append(dst, f.Body...)
	return append(dst, f.Tail...)
}
