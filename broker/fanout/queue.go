package fanout

import (
	"sync"
)

// Queue is one client's bounded outbound queue. The hub and the
// connection's own reader push; the connection's writer takes everything
// queued at once, so a client that fell behind gets its backlog in one
// burst of writes rather than one wake-up per frame. A push that finds the
// queue full closes it with a slow-consumer reason instead of waiting: one
// slow client never stalls the others.
type Queue struct {
	maxFrames  int
	maxBytes   int
	onOverflow func()

	ready chan struct{} // capacity 1: a pending wake-up for the writer
	done  chan struct{} // closed by Close

	mu     sync.Mutex // guards the fields below; never held while calling out
	frames []Frame
	bytes  int
	closed bool
	reason string
}

// Default bounds of a Queue.
const (
	DefaultQueueFrames = 4096
	DefaultQueueBytes  = 16 << 20
)

// SlowConsumerReason is the close reason of a queue that overflowed.
const SlowConsumerReason = "slow consumer: outbound queue full"

// NewQueue returns a queue holding at most maxFrames frames and maxBytes
// bytes (zero means the defaults). onOverflow, if set, runs once when a
// push overflows the queue, after it is closed.
func NewQueue(maxFrames, maxBytes int, onOverflow func()) *Queue {
	if maxFrames <= 0 {
		maxFrames = DefaultQueueFrames
	}
	if maxBytes <= 0 {
		maxBytes = DefaultQueueBytes
	}
	return &Queue{
		maxFrames:  maxFrames,
		maxBytes:   maxBytes,
		onOverflow: onOverflow,
		ready:      make(chan struct{}, 1),
		done:       make(chan struct{}),
	}
}

// Push queues f. It reports false when the queue is closed, or was full
// and is now closed for that reason.
func (q *Queue) Push(f Frame) bool {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return false
	}
	if len(q.frames) >= q.maxFrames || q.bytes+f.Len() > q.maxBytes {
		q.closeLocked(SlowConsumerReason)
		q.mu.Unlock()
		if q.onOverflow != nil {
			q.onOverflow()
		}
		return false
	}
	q.frames = append(q.frames, f)
	q.bytes += f.Len()
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return true
}

// Take moves every queued frame to dst (reusing its storage) and returns
// it; empty when nothing is queued.
func (q *Queue) Take(dst []Frame) []Frame {
	q.mu.Lock()
	dst = append(dst[:0], q.frames...)
	clear(q.frames)
	q.frames = q.frames[:0]
	q.bytes = 0
	q.mu.Unlock()
	return dst
}

// Ready signals that frames may be waiting.
func (q *Queue) Ready() <-chan struct{} { return q.ready }

// Done is closed when the queue is.
func (q *Queue) Done() <-chan struct{} { return q.done }

// Close closes the queue with a reason; later pushes fail. Idempotent: the
// first reason stays.
func (q *Queue) Close(reason string) {
	q.mu.Lock()
	q.closeLocked(reason)
	q.mu.Unlock()
}

func (q *Queue) closeLocked(reason string) {
	if q.closed {
		return
	}
	q.closed = true
	q.reason = reason
	close(q.done)
}

// Reason is why the queue closed; empty while it is open.
func (q *Queue) Reason() string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.reason
}

// Len is the number of queued frames.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.frames)
}
