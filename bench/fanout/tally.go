package fanout

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/fluxbase/fluxbase/bench/hist"
	"github.com/fluxbase/fluxbase/bench/realtime"
)

var (
	keySeq = []byte(`"bench_seq":`)
	keyTS  = []byte(`"bench_ts":`)
)

// Tally counts what one generator's subscribers receive during one step:
// messages with seq first..first+messages-1. Observe may be called
// concurrently for different subscribers, never for the same one: each
// subscriber's state is written by its reader goroutine only, and read
// atomically, so Counts may be taken while frames still arrive.
type Tally struct {
	base     int64 // seq of the step's first message
	messages int
	t0       atomic.Int64 // Unix ns when publishing started; per-second buckets count from it

	latency hist.Histogram
	ts      []atomic.Int64 // per seq: the send time found in the frame
	first   []atomic.Int64 // per seq: earliest receipt, Unix ns; 0 = none yet
	last    []atomic.Int64 // per seq: latest receipt
	count   []atomic.Int32 // per seq: subscribers that got it
	second  []atomic.Int64 // deliveries per second since t0

	deliveries atomic.Int64
	control    atomic.Int64
	unknown    atomic.Int64
	subs       []subTally
}

// subTally is one subscriber's record, written by its reader only.
type subTally struct {
	seen       []atomic.Uint64 // bit per seq
	unique     atomic.Int64
	duplicates atomic.Int64
}

// NewTally prepares for subscribers that each expect the messages with
// seq first..first+messages-1, over about seconds seconds.
func NewTally(subscribers int, first int64, messages, seconds int) *Tally {
	t := &Tally{
		base:     first,
		messages: messages,
		ts:       make([]atomic.Int64, messages),
		first:    make([]atomic.Int64, messages),
		last:     make([]atomic.Int64, messages),
		count:    make([]atomic.Int32, messages),
		second:   make([]atomic.Int64, max(seconds, 1)),
		subs:     make([]subTally, subscribers),
	}
	words := (messages + 63) / 64
	backing := make([]atomic.Uint64, words*subscribers)
	for i := range t.subs {
		t.subs[i].seen = backing[i*words : (i+1)*words : (i+1)*words]
	}
	return t
}

// Start sets the origin of the per-second series.
func (t *Tally) Start(t0 time.Time) { t.t0.Store(t0.UnixNano()) }

// Deliveries is the number of distinct (subscriber, message) receipts.
func (t *Tally) Deliveries() int64 { return t.deliveries.Load() }

// Observe accounts for one frame that subscriber sub received at now.
// Frames without a seq (replies, system messages) count as control; those
// with a seq outside the step (late ones of an earlier step) as unknown.
func (t *Tally) Observe(sub int, frame []byte, now time.Time) {
	global, ok := realtime.Int(frame, keySeq)
	if !ok {
		t.control.Add(1)
		return
	}
	seq := global - t.base
	if seq < 0 || seq >= int64(t.messages) {
		t.unknown.Add(1)
		return
	}
	s := &t.subs[sub]
	word, bit := seq/64, uint64(1)<<(seq%64)
	// Only this subscriber's reader writes its bits: load and store suffice.
	w := s.seen[word].Load()
	if w&bit != 0 {
		s.duplicates.Add(1)
		return
	}
	s.seen[word].Store(w | bit)
	s.unique.Add(1)

	n := now.UnixNano()
	if ts, ok := realtime.Int(frame, keyTS); ok {
		t.latency.Record(n - ts)
		t.ts[seq].Store(ts)
	}
	t.count[seq].Add(1)
	for {
		f := t.first[seq].Load()
		if (f != 0 && f <= n) || t.first[seq].CompareAndSwap(f, n) {
			break
		}
	}
	for {
		l := t.last[seq].Load()
		if l >= n || t.last[seq].CompareAndSwap(l, n) {
			break
		}
	}
	if t0 := t.t0.Load(); t0 != 0 {
		i := int((n - t0) / int64(time.Second))
		i = min(max(i, 0), len(t.second)-1)
		t.second[i].Add(1)
	}
	t.deliveries.Add(1)
}

// Counts is a tally's outcome; counts from several generators merge.
type Counts struct {
	Subscribers int             `json:"subscribers"`
	Deliveries  int64           `json:"deliveries"`
	Duplicates  int64           `json:"duplicates"`
	Control     int64           `json:"control_frames"`
	Unknown     int64           `json:"unknown_frames"`
	Latency     *hist.Histogram `json:"latency_ns"`
	SeqTS       []int64         `json:"seq_ts"`
	SeqFirst    []int64         `json:"seq_first"`
	SeqLast     []int64         `json:"seq_last"`
	SeqCount    []int32         `json:"seq_count"`
	PerSecond   []int64         `json:"per_second"`
	// PerSubscriber is each subscriber's number of distinct messages.
	PerSubscriber []int64 `json:"per_subscriber"`
	// Disconnected is how many subscribers have lost their connection
	// since they connected (not only during this step).
	Disconnected int64 `json:"disconnected"`
}

// LastReceipt is the latest receipt of any message, Unix ns; 0 when
// nothing arrived.
func (c *Counts) LastReceipt() int64 {
	var last int64
	for _, l := range c.SeqLast {
		last = max(last, l)
	}
	return last
}

// Counts reads the tally for the given subscribers (those that connected).
// Frames that arrive while it reads may or may not be included.
func (t *Tally) Counts(subscribers []int) *Counts {
	c := &Counts{
		Subscribers: len(subscribers),
		Deliveries:  t.deliveries.Load(),
		Control:     t.control.Load(),
		Unknown:     t.unknown.Load(),
		Latency:     hist.New(),
		SeqTS:       make([]int64, t.messages),
		SeqFirst:    make([]int64, t.messages),
		SeqLast:     make([]int64, t.messages),
		SeqCount:    make([]int32, t.messages),
		PerSecond:   make([]int64, len(t.second)),
	}
	c.Latency.Merge(&t.latency)
	for i := range t.messages {
		c.SeqTS[i] = t.ts[i].Load()
		c.SeqFirst[i] = t.first[i].Load()
		c.SeqLast[i] = t.last[i].Load()
		c.SeqCount[i] = t.count[i].Load()
	}
	for i := range t.second {
		c.PerSecond[i] = t.second[i].Load()
	}
	c.PerSubscriber = make([]int64, len(subscribers))
	for i, sub := range subscribers {
		c.PerSubscriber[i] = t.subs[sub].unique.Load()
		c.Duplicates += t.subs[sub].duplicates.Load()
	}
	return c
}

// Merge adds o into c; both must cover the same messages.
func (c *Counts) Merge(o *Counts) {
	c.Subscribers += o.Subscribers
	c.Deliveries += o.Deliveries
	c.Duplicates += o.Duplicates
	c.Control += o.Control
	c.Unknown += o.Unknown
	c.Disconnected += o.Disconnected
	if c.Latency == nil {
		c.Latency = hist.New()
	}
	c.Latency.Merge(o.Latency)
	grow := func(n int) {
		for len(c.SeqCount) < n {
			c.SeqTS, c.SeqFirst, c.SeqLast = append(c.SeqTS, 0), append(c.SeqFirst, 0), append(c.SeqLast, 0)
			c.SeqCount = append(c.SeqCount, 0)
		}
	}
	grow(len(o.SeqCount))
	for i := range o.SeqCount {
		if o.SeqCount[i] == 0 {
			continue
		}
		if c.SeqTS[i] == 0 {
			c.SeqTS[i] = o.SeqTS[i]
		}
		if c.SeqFirst[i] == 0 || o.SeqFirst[i] < c.SeqFirst[i] {
			c.SeqFirst[i] = o.SeqFirst[i]
		}
		c.SeqLast[i] = max(c.SeqLast[i], o.SeqLast[i])
		c.SeqCount[i] += o.SeqCount[i]
	}
	for len(c.PerSecond) < len(o.PerSecond) {
		c.PerSecond = append(c.PerSecond, 0)
	}
	for i, v := range o.PerSecond {
		c.PerSecond[i] += v
	}
	c.PerSubscriber = append(c.PerSubscriber, o.PerSubscriber...)
}

// Accounting is the outcome judged against what was published.
type Accounting struct {
	Subscribers int   `json:"subscribers"`
	Published   int   `json:"published"`
	Expected    int64 `json:"expected_deliveries"`
	Delivered   int64 `json:"deliveries"`
	Lost        int64 `json:"lost"`
	Duplicates  int64 `json:"duplicates"`
	// SubscribersWithLoss missed at least one published message.
	SubscribersWithLoss int `json:"subscribers_with_loss"`
	// Spread summarizes, over messages every subscriber got, the time from
	// the first subscriber's receipt to the last one's (ns).
	Spread hist.Summary `json:"spread_ns"`
	// ToAll summarizes, over those messages, the time from the send stamp
	// to the last subscriber's receipt (ns).
	ToAll hist.Summary `json:"to_all_ns"`
	// Complete is how many published messages reached every subscriber.
	Complete int `json:"complete_messages"`
}

// LossRate is the fraction of expected deliveries that did not happen.
func (a Accounting) LossRate() float64 {
	if a.Expected == 0 {
		return 0
	}
	return float64(a.Lost) / float64(a.Expected)
}

// Account judges c against the messages that were published: sent[seq]
// says whether message seq went out.
func (c *Counts) Account(sent []bool) Accounting {
	a := Accounting{Subscribers: c.Subscribers, Duplicates: c.Duplicates}
	spread, toAll := hist.New(), hist.New()
	for seq, ok := range sent {
		if !ok {
			continue
		}
		a.Published++
		var got int32
		if seq < len(c.SeqCount) {
			got = c.SeqCount[seq]
		}
		a.Delivered += int64(got)
		if int(got) == c.Subscribers && got > 0 {
			a.Complete++
			spread.Record(c.SeqLast[seq] - c.SeqFirst[seq])
			if c.SeqTS[seq] != 0 {
				toAll.Record(c.SeqLast[seq] - c.SeqTS[seq])
			}
		}
	}
	a.Expected = int64(a.Published) * int64(c.Subscribers)
	a.Lost = a.Expected - a.Delivered
	for _, n := range c.PerSubscriber {
		if n < int64(a.Published) {
			a.SubscribersWithLoss++
		}
	}
	a.Spread, a.ToAll = spread.Summary(), toAll.Summary()
	return a
}

// sentAll marks messages 0..n-1 as published.
func sentAll(n, of int) []bool {
	s := make([]bool, of)
	for i := range min(n, of) {
		s[i] = true
	}
	return s
}

// disconnects counts why subscribers went away, by reason.
type disconnects struct {
	mu      sync.Mutex
	reasons map[string]int
}

func (d *disconnects) add(reason string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.reasons == nil {
		d.reasons = map[string]int{}
	}
	if len(reason) > 120 {
		reason = reason[:120]
	}
	d.reasons[reason]++
}

func (d *disconnects) total() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, v := range d.reasons {
		n += v
	}
	return n
}

func (d *disconnects) snapshot() map[string]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]int, len(d.reasons))
	for k, v := range d.reasons {
		out[k] = v
	}
	return out
}
