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
//
// A writer learns of work through Notify: the queue calls a function
// when it needs a writer — once, when a push finds it unowned or when it
// closes unowned — and that writer owns the queue until Release
// succeeds, so a pool of writers serves many queues without a goroutine
// parked on each. Without Notify the queue only holds frames for Take.
type Queue struct {
	maxFrames  int
	maxBytes   int
	onOverflow func()
	notify     func() // set by Notify before the first push

	mu        sync.Mutex // guards the fields below; never held while calling out
	frames    []Frame
	bytes     int
	closed    bool
	reason    string
	scheduled bool // with notify: a writer owns the queue
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
		wake := q.closeLocked(SlowConsumerReason)
		q.mu.Unlock()
		if wake {
			q.notify()
		}
		if q.onOverflow != nil {
			q.onOverflow()
		}
		return false
	}
	q.frames = append(q.frames, f)
	q.bytes += f.Len()
	wake := q.notify != nil && !q.scheduled
	if wake {
		q.scheduled = true
	}
	q.mu.Unlock()
	if wake {
		q.notify()
	}
	return true
}

// Take moves every queued frame to the caller and returns them, giving
// dst's storage to the queue in exchange (no copy); empty when nothing is
// queued. The caller may reuse the returned slice as the next dst once
// it is done with the frames.
func (q *Queue) Take(dst []Frame) []Frame {
	clear(dst)
	q.mu.Lock()
	frames := q.frames
	q.frames = dst[:0]
	q.bytes = 0
	q.mu.Unlock()
	return frames
}

// Notify makes the queue call fn whenever it needs a writer: when a push
// finds it unowned, and when it closes unowned. The writer that fn wakes
// owns the queue until Release returns true. Call it before the first
// push; fn must not block.
func (q *Queue) Notify(fn func()) {
	q.mu.Lock()
	q.notify = fn
	q.mu.Unlock()
}

// Release gives up the writer's ownership if the queue is empty and open,
// and reports whether it did. When it reports false the writer still owns
// the queue: frames arrived meanwhile, or the queue closed.
func (q *Queue) Release() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.frames) > 0 || q.closed {
		return false
	}
	q.scheduled = false
	if cap(q.frames) > 64 {
		q.frames = nil // do not pin a burst's backing array on an idle client
	}
	return true
}

// Closed reports whether the queue is closed.
func (q *Queue) Closed() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.closed
}

// Close closes the queue with a reason; later pushes fail. Idempotent: the
// first reason stays.
func (q *Queue) Close(reason string) {
	q.mu.Lock()
	wake := q.closeLocked(reason)
	q.mu.Unlock()
	if wake {
		q.notify()
	}
}

// closeLocked closes the queue and reports whether a writer must be
// notified (with Notify, when none owns the queue).
func (q *Queue) closeLocked(reason string) (wake bool) {
	if q.closed {
		return false
	}
	q.closed = true
	q.reason = reason
	if q.notify != nil && !q.scheduled {
		q.scheduled = true
		return true
	}
	return false
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
