package replication

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/fluxbase/fluxbase/change"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/zap"
)

// This file is the read stage: one replication connection per session.
// START_REPLICATION on a slot another connection streams fails with
// object_in_use, so PostgreSQL itself elects the holder: every node tries,
// one streams, the others stand by and retry. When the holder's process
// dies its socket closes, the walsender exits and the next try succeeds.

// durableQueueFactor bounds the events acknowledged but not yet durable, as
// a multiple of the window; each costs a few words.
const durableQueueFactor = 32

var (
	errSlotInUse = errors.New("replication slot is in use by another node")
	errSilent    = errors.New("the server sent nothing within the receive timeout")
	errAckLate   = errors.New("the log did not acknowledge a publish within the ack timeout")
)

// session is one hold of the slot: a replication connection, a decoder, the
// publisher and the checkpoint, all owned by the goroutine running it.
type session struct {
	r    *Replicator
	ctx  context.Context
	conn *pgconn.PgConn
	dec  *decoder
	pub  *publisher
	ck   *checkpoint

	recvTimeout time.Duration
	received    change.LSN // the furthest WAL position the server has sent
	lastRecv    time.Time
	nextStatus  time.Time
	nextPoll    time.Time
	deadline    time.Time  // the read deadline set on the connection
	sentFlush   change.LSN // the flush position last reported
	timer       *time.Timer
	statusBuf   []byte
	sinceAdv    int

	skipReported bool
}

// reportSkipped logs, once, how many redelivered events were skipped: the
// server resends what the slot had not confirmed, and the log had it.
func (s *session) reportSkipped() {
	if s.skipReported {
		return
	}
	s.skipReported = true
	if s.dec.skipped > 0 {
		s.r.log.Info("skipped events already in the log", zap.Int("events", s.dec.skipped),
			zap.String("through", s.dec.skipThrough.MsgID()))
	}
}

// session holds the slot until an error or the end of ctx; it returns how
// long it held it.
func (r *Replicator) session(ctx context.Context) (time.Duration, error) {
	pool, err := r.sidePool(ctx)
	if err != nil {
		return 0, err
	}
	var confirmedText *string
	var active bool
	err = pool.QueryRow(ctx, `select confirmed_flush_lsn::text, active from pg_catalog.pg_replication_slots where slot_name = $1`,
		r.cfg.SlotName).Scan(&confirmedText, &active)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, errSlotMissing
	}
	if err != nil {
		return 0, fmt.Errorf("read replication slot: %w", err)
	}
	if active {
		// Cheaper than a replication connection; START_REPLICATION below
		// still decides.
		return 0, errSlotInUse
	}
	var confirmed change.LSN
	if confirmedText != nil {
		if confirmed, err = change.ParseLSN(*confirmedText); err != nil {
			return 0, err
		}
	}
	recvTimeout, err := r.receiveTimeout(ctx, pool)
	if err != nil {
		return 0, err
	}

	conn, err := pgconn.ConnectConfig(ctx, r.replCfg)
	if err != nil {
		return 0, fmt.Errorf("replication connection: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn.Close(cctx)
	}()
	err = startReplication(ctx, conn, r.cfg.SlotName, r.cfg.PublicationName)
	if err != nil {
		return 0, err
	}
	began := time.Now()
	// Before the node calls itself the holder, so that a table created
	// once it does gets its identity in the statement that creates it.
	if err := ensureIdentityTrigger(ctx, pool, r.cfg.PublicationName, r.cfg.ReplicaIdentityFull); err != nil && ctx.Err() == nil {
		r.log.Warn("replica identity event trigger (new tables get it at the next reconciliation instead)", zap.Error(err))
	}
	r.setHolder(true)
	defer r.setHolder(false)

	// Exactly once: everything at or before the log's last event is
	// already there, whatever the log's de-duplication window.
	lastID, ok, err := r.sink.LastChange(ctx)
	if err != nil {
		return time.Since(began), fmt.Errorf("read the log's last change: %w", err)
	}
	var skip change.Position
	if ok {
		if skip, err = change.ParseMsgID(lastID); err != nil {
			return time.Since(began), fmt.Errorf("the log's last message: %w", err)
		}
	}
	r.log.Info("holding the replication slot", zap.String("slot", r.cfg.SlotName),
		zap.Stringer("confirmed_lsn", confirmed), zap.String("log_last", lastID))

	s := &session{r: r, ctx: ctx, conn: conn, recvTimeout: recvTimeout, lastRecv: time.Now(), timer: time.NewTimer(time.Hour)}
	defer s.timer.Stop()
	s.ck = newCheckpoint(confirmed, r.sink.DurableSeq)
	s.ck.onEvent = func(op uint8) { r.metrics.byOp[op].Inc() }
	s.ck.onCommit = func(ts int64) { r.metrics.lastCommit.Set(float64(ts) / 1e6) }
	s.pub = &publisher{log: r.sink, ck: s.ck, window: r.cfg.Window, queue: r.cfg.Window * durableQueueFactor,
		lastID: lastID, wait: s.waitForLog, now: time.Now, maxEvent: r.cfg.MaxEventBytes,
		onShrink: func(ev event, omitted []string, size int) {
			r.log.Warn("event too large for the log: column values left out", zap.String("id", ev.pos.MsgID()),
				zap.String("subject", ev.subject), zap.Int("bytes", size), zap.Strings("omitted_columns", omitted))
		}}
	s.dec = newDecoder(r.types, s.pub, r.cfg.Subject)
	s.dec.lookupPK = catalogPKLookup(pool)
	s.dec.skipThrough = skip

	recheck := make(chan struct{}, 1)
	if r.cfg.ReplicaIdentityFull {
		s.dec.onRelation = func(rel *relation) {
			if rel.replIdent != 'f' {
				select {
				case recheck <- struct{}{}:
				default:
				}
			}
		}
	}
	mctx, stopMaintenance := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.maintain(mctx, pool, recheck)
	}()
	defer wg.Wait()
	defer stopMaintenance()

	// Cancelling ctx interrupts a blocked read; the loop then finishes.
	stopWatch := context.AfterFunc(ctx, func() { _ = conn.Conn().SetReadDeadline(time.Unix(1, 0)) })
	defer stopWatch()

	err = s.loop()
	s.finish(err)
	s.reportSkipped()
	return time.Since(began), err
}

// receiveTimeout is Config.ReceiveTimeout, or the default explained there.
func (r *Replicator) receiveTimeout(ctx context.Context, q querier) (time.Duration, error) {
	if r.cfg.ReceiveTimeout > 0 {
		return r.cfg.ReceiveTimeout, nil
	}
	var ms int64
	if err := q.QueryRow(ctx, "select setting::int8 from pg_catalog.pg_settings where name = 'wal_sender_timeout'").Scan(&ms); err != nil {
		return 0, fmt.Errorf("read wal_sender_timeout: %w", err)
	}
	d := 2 * r.cfg.StatusInterval
	if ms > 0 {
		d = max(d, time.Duration(ms)*time.Millisecond/2+r.cfg.StatusInterval)
	} else {
		d = max(d, time.Minute) // the server never times out; neither do its silences
	}
	return d, nil
}

// startReplication starts streaming the slot with pgoutput version 1
// (every published change of a transaction after its commit, values as
// text) and non-transactional logical messages for heartbeats.
func startReplication(ctx context.Context, conn *pgconn.PgConn, slot, publication string) error {
	sql := "START_REPLICATION SLOT " + pgx.Identifier{slot}.Sanitize() + " LOGICAL 0/0 (" +
		"proto_version '1', publication_names " + quoteLiteral(pgx.Identifier{publication}.Sanitize()) + ", messages 'true')"
	conn.Frontend().SendQuery(&pgproto3.Query{String: sql})
	if err := conn.Frontend().Flush(); err != nil {
		return fmt.Errorf("start replication: %w", err)
	}
	for {
		msg, err := conn.ReceiveMessage(ctx)
		if err != nil {
			return fmt.Errorf("start replication: %w", err)
		}
		switch m := msg.(type) {
		case *pgproto3.CopyBothResponse:
			return nil
		case *pgproto3.ErrorResponse:
			return mapServerError(pgconn.ErrorResponseToPgError(m))
		case *pgproto3.NoticeResponse, *pgproto3.ParameterStatus:
		default:
			return fmt.Errorf("start replication: unexpected %T", msg)
		}
	}
}

// mapServerError turns the SQLSTATEs the loop acts on into this package's
// errors, once.
func mapServerError(err error) error {
	switch pgCode(err) {
	case "55006": // object_in_use: another connection streams the slot
		return fmt.Errorf("%w: %v", errSlotInUse, err)
	case "42704": // undefined_object: the slot or the publication is gone
		return fmt.Errorf("%w: %v", errSlotMissing, err)
	}
	return fmt.Errorf("replication stream: %w", err)
}

func (s *session) loop() error {
	for {
		if err := s.tick(); err != nil {
			return err
		}
		msg, err := s.conn.ReceiveMessage(context.Background())
		if err != nil {
			if s.ctx.Err() != nil {
				return s.ctx.Err()
			}
			var ne net.Error
			if pgconn.Timeout(err) || errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("receive: %w", err)
		}
		s.lastRecv = time.Now()
		switch m := msg.(type) {
		case *pgproto3.CopyData:
			if err := s.handle(m.Data); err != nil {
				return err
			}
		case *pgproto3.ErrorResponse:
			return mapServerError(pgconn.ErrorResponseToPgError(m))
		case *pgproto3.CopyDone:
			return errors.New("the server ended the replication stream")
		}
	}
}

// handle processes one CopyData message of the stream. The data is only
// valid until the next receive.
func (s *session) handle(data []byte) error {
	if len(data) == 0 {
		return protoErr("empty CopyData")
	}
	switch data[0] {
	case 'w': // XLogData: WAL start, WAL end, send time, then one pgoutput message
		if len(data) < 25 {
			return protoErr("XLogData of %d bytes", len(data))
		}
		start := change.LSN(binary.BigEndian.Uint64(data[1:]))
		s.received = max(s.received, start)
		if err := s.dec.decode(s.ctx, start, data[25:]); err != nil {
			return err
		}
		if !s.skipReported && s.pub.published > 0 {
			s.reportSkipped()
		}
		// Keep the queue short even when the window never fills.
		if s.sinceAdv++; s.sinceAdv >= 256 {
			s.sinceAdv = 0
			return s.ck.advance()
		}
		return nil
	case 'k': // keepalive: WAL end, send time, reply requested
		if len(data) < 18 {
			return protoErr("keepalive of %d bytes", len(data))
		}
		end := change.LSN(binary.BigEndian.Uint64(data[1:]))
		s.received = max(s.received, end)
		if !s.dec.inTx {
			// Everything the server sent before this keepalive has been
			// handled, and it sends a transaction only once it has decoded
			// its commit: outside a transaction, the server's position may
			// be confirmed as soon as what came before is durable. This is
			// how a database with nothing published still advances.
			s.ck.addPosition(end, time.Time{})
		}
		if data[17] != 0 {
			if err := s.ck.advance(); err != nil {
				return err
			}
			return s.sendStatus(false)
		}
		return nil
	}
	return protoErr("unknown CopyData message %q", data[0])
}

// tick does what is due by the clock. Every StatusInterval it confirms what
// is durable, reports it and asks for a reply (which proves the server
// alive), and gives up when the server has been silent too long. In between,
// while events wait to become durable, it looks every pollInterval and
// reports a new flush position at once, so the slot (and the lag metric)
// follow the log closely rather than a status interval behind.
func (s *session) tick() error {
	if err := s.ctx.Err(); err != nil {
		return err
	}
	now := time.Now()
	if now.Before(s.nextStatus) {
		if s.ck.idle() || now.Before(s.nextPoll) {
			return nil
		}
		if err := s.ck.advance(); err != nil {
			return err
		}
		if s.ck.confirmed > s.sentFlush {
			if err := s.sendStatus(false); err != nil {
				return err
			}
		}
		return s.setDeadline(now)
	}
	if now.Sub(s.lastRecv) > s.recvTimeout {
		return fmt.Errorf("%w (%v)", errSilent, s.recvTimeout)
	}
	if err := s.ck.advance(); err != nil {
		return err
	}
	if p := s.ck.firstUnacked(); p != nil && now.UnixNano()-p.sent > int64(s.r.cfg.AckTimeout) {
		return errAckLate
	}
	if err := s.sendStatus(true); err != nil {
		return err
	}
	s.nextStatus = now.Add(s.r.cfg.StatusInterval)
	return s.setDeadline(now)
}

// pollInterval is how often pending events are checked for durability
// between status updates.
const pollInterval = 20 * time.Millisecond

// setDeadline sets the read deadline to the next moment tick has work:
// the next status, or the next poll while events are pending.
func (s *session) setDeadline(now time.Time) error {
	next := s.nextStatus
	if !s.ck.idle() {
		s.nextPoll = now.Add(pollInterval)
		if s.nextPoll.Before(next) {
			next = s.nextPoll
		}
	}
	if !next.Equal(s.deadline) {
		s.deadline = next
		_ = s.conn.Conn().SetReadDeadline(next)
	}
	// A cancellation between the check in tick and the new deadline would
	// have its past deadline overwritten: look again.
	return s.ctx.Err()
}

// waitForLog blocks while the window is full, until the oldest
// unacknowledged event is acknowledged, the durable sequence may have moved,
// the next status is due, or ctx ends.
func (s *session) waitForLog() error {
	wait := time.Until(s.nextStatus)
	var done <-chan struct{}
	if s.ck.unacked >= s.pub.window {
		if p := s.ck.firstUnacked(); p != nil {
			done = p.ack.Done()
		}
	}
	if done == nil {
		wait = min(wait, 2*time.Millisecond) // waiting for durability: poll
	}
	s.timer.Reset(max(wait, 0))
	select {
	case <-done:
	case <-s.timer.C:
	case <-s.ctx.Done():
	}
	if !s.timer.Stop() {
		select {
		case <-s.timer.C:
		default:
		}
	}
	// The socket was not read while blocked; its silence is not the server's.
	s.lastRecv = time.Now()
	return s.tick()
}

// sendStatus reports the positions: write is what was received, flush and
// apply are what is durable in the log — the slot's confirmed LSN follows
// flush.
func (s *session) sendStatus(reply bool) error {
	received := max(s.received, s.ck.confirmed)
	b := append(s.statusBuf[:0], 'd', 0, 0, 0, 0, 'r')
	s.sentFlush = s.ck.confirmed
	b = binary.BigEndian.AppendUint64(b, uint64(received))
	b = binary.BigEndian.AppendUint64(b, uint64(s.ck.confirmed))
	b = binary.BigEndian.AppendUint64(b, uint64(s.ck.confirmed))
	b = binary.BigEndian.AppendUint64(b, uint64(time.Since(pgEpoch)/time.Microsecond))
	if reply {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	binary.BigEndian.PutUint32(b[1:], uint32(len(b)-1))
	s.statusBuf = b
	_ = s.conn.Conn().SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := s.conn.Frontend().SendUnbufferedEncodedCopyData(b); err != nil {
		return fmt.Errorf("send status: %w", err)
	}
	return nil
}

// finish ends a session: when it ends because ctx did, it waits a little for
// in-flight events to become durable; either way it tells the server the
// last durable position, if the connection still works.
func (s *session) finish(cause error) {
	if errors.Is(cause, context.Canceled) || errors.Is(cause, context.DeadlineExceeded) {
		deadline := time.Now().Add(s.r.cfg.ShutdownTimeout)
		for time.Now().Before(deadline) {
			if err := s.ck.advance(); err != nil || s.ck.idle() {
				break
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	_ = s.ck.advance()
	if err := s.sendStatus(false); err == nil {
		s.r.log.Info("released the replication slot", zap.Stringer("confirmed_lsn", s.ck.confirmed), zap.NamedError("cause", cause))
	}
}
