package replication

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/fluxbase/fluxbase/change"
)

// This file is the decode stage: pgoutput messages (protocol version 1) in,
// encoded change events out, in WAL order. It parses the wire format itself
// rather than through pglogrepl's message types because those index the
// buffer without bounds checks (a malformed message panics) and allocate
// per column; here every length is checked and values are converted
// straight from the receive buffer into the event's JSON.

// event is one encoded change, ready to publish.
type event struct {
	pos     change.Position
	lsn     change.LSN
	op      change.Op
	subject string
	data    []byte
	// commitTS is carried for the last-commit metric.
	commitTS time.Time
}

// commitInfo ends a transaction.
type commitInfo struct {
	commitLSN change.LSN // the commit record's LSN, as in Begin
	endLSN    change.LSN // where the commit record ends: what the slot confirms
	ts        time.Time
}

// sink receives the decoder's output in WAL order. The event's data is the
// sink's to keep; nothing else outlives the call.
type sink interface {
	event(ev event) error
	commit(c commitInfo) error
	// position reports a WAL position outside any transaction, after
	// everything before it was handed over (a heartbeat message).
	position(lsn change.LSN) error
}

// relation is the decoder's view of one table, from its latest Relation
// message. PostgreSQL sends the message again before the first change after
// any DDL that touches the table, so the cache follows added and dropped
// columns without ever querying for them.
type relation struct {
	id          uint32
	schema      string
	table       string
	replIdent   byte // d default, n nothing, f full, i index
	cols        []relColumn
	columns     []change.Column
	columnsJSON []byte
	pk          []int // columns of the primary key, by index
	identity    []int // columns of the replica identity key, unless FULL
	subjects    [4]string
	sizeHint    int // last encoded size, to allocate the next event once
}

type relColumn struct {
	name string
	typ  *pgType
	key  bool // part of the replica identity key
}

// decoder turns pgoutput into events. It belongs to one replication
// session: relation ids are only valid within the session that announced
// them. It is not safe for concurrent use.
type decoder struct {
	types      *typeCache
	lookupPK   func(ctx context.Context, relid uint32) ([]string, error)
	subject    func(schema, table, op string) string
	onRelation func(r *relation) // optional: sees every Relation message
	out        sink

	// skipThrough drops events at or before this position: they are
	// already in the log (exactly once across restarts). skipped counts
	// them, for the log.
	skipThrough change.Position
	skipped     int

	rels map[uint32]*relation

	inTx      bool
	commitLSN change.LSN
	xid       uint32
	commitTS  time.Time
	txIndex   int

	// heldEv is the last change, until we know whether it is tx_last.
	heldEv  event
	heldSet bool

	// Scratch, reused for every change.
	change  change.Event
	arena   []byte
	scratch []byte
	newRow  change.Row
	oldRow  change.Row
	pkRow   change.Row
	toast   []string
}

func newDecoder(types *typeCache, out sink, subject func(schema, table, op string) string) *decoder {
	if subject == nil {
		subject = change.Subject
	}
	return &decoder{types: types, out: out, subject: subject, rels: make(map[uint32]*relation)}
}

// errProtocol marks input that is not valid pgoutput.
var errProtocol = errors.New("pgoutput")

func protoErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errProtocol}, args...)...)
}

// reader walks a message with bounds checks; the first short read sets err
// and every later read returns zero.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = protoErr("message too short for %s", what)
	}
	r.b = nil
}

func (r *reader) u8(what string) byte {
	if len(r.b) < 1 {
		r.fail(what)
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) u16(what string) uint16 {
	if len(r.b) < 2 {
		r.fail(what)
		return 0
	}
	v := binary.BigEndian.Uint16(r.b)
	r.b = r.b[2:]
	return v
}

func (r *reader) u32(what string) uint32 {
	if len(r.b) < 4 {
		r.fail(what)
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *reader) u64(what string) uint64 {
	if len(r.b) < 8 {
		r.fail(what)
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) str(what string) string {
	for i, c := range r.b {
		if c == 0 {
			s := string(r.b[:i])
			r.b = r.b[i+1:]
			return s
		}
	}
	r.fail(what)
	return ""
}

func (r *reader) bytes(n int, what string) []byte {
	if n < 0 || len(r.b) < n {
		r.fail(what)
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// pgEpoch is PostgreSQL's timestamp epoch, 2000-01-01 UTC.
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

func pgTime(us uint64) time.Time {
	return pgEpoch.Add(time.Duration(int64(us)) * time.Microsecond).UTC()
}

// decode handles one pgoutput message whose WAL record starts at lsn.
func (d *decoder) decode(ctx context.Context, lsn change.LSN, msg []byte) error {
	if len(msg) == 0 {
		return protoErr("empty message")
	}
	r := &reader{b: msg[1:]}
	switch msg[0] {
	case 'B':
		final := change.LSN(r.u64("begin final LSN"))
		ts := pgTime(r.u64("begin timestamp"))
		xid := r.u32("begin xid")
		if r.err != nil {
			return r.err
		}
		if d.inTx {
			return protoErr("begin inside a transaction")
		}
		d.inTx, d.commitLSN, d.commitTS, d.xid, d.txIndex = true, final, ts, xid, 0
		return nil
	case 'C':
		r.u8("commit flags")
		commitLSN := change.LSN(r.u64("commit LSN"))
		end := change.LSN(r.u64("commit end LSN"))
		ts := pgTime(r.u64("commit timestamp"))
		if r.err != nil {
			return r.err
		}
		if !d.inTx {
			return protoErr("commit outside a transaction")
		}
		if commitLSN != d.commitLSN {
			return protoErr("commit LSN %s, begin said %s", commitLSN, d.commitLSN)
		}
		if err := d.release(true); err != nil {
			return err
		}
		d.inTx = false
		return d.out.commit(commitInfo{commitLSN: commitLSN, endLSN: end, ts: ts})
	case 'R':
		return d.relationMessage(ctx, r)
	case 'I', 'U', 'D':
		return d.rowMessage(msg[0], lsn, r)
	case 'T':
		return d.truncateMessage(lsn, r)
	case 'Y', 'O':
		// Type names come from pg_type when needed (with the domain and
		// array information a Type message lacks); origins are not part of
		// the contract.
		return nil
	case 'M':
		flags := r.u8("message flags")
		r.u64("message LSN")
		r.str("message prefix")
		n := r.u32("message length")
		r.bytes(int(n), "message content")
		if r.err != nil {
			return r.err
		}
		if flags&1 == 0 && !d.inTx {
			return d.out.position(lsn)
		}
		return nil
	default:
		return protoErr("unexpected message type %q", msg[0])
	}
}

func (d *decoder) relationMessage(ctx context.Context, r *reader) error {
	rel := &relation{}
	rel.id = r.u32("relation id")
	rel.schema = r.str("relation namespace")
	rel.table = r.str("relation name")
	rel.replIdent = r.u8("relation replica identity")
	n := int(r.u16("relation column count"))
	if r.err != nil {
		return r.err
	}
	if rel.schema == "" {
		rel.schema = "pg_catalog" // pgoutput sends an empty namespace for it
	}
	if n > len(r.b)/10 { // a column takes at least 10 bytes
		return protoErr("relation announces %d columns in %d bytes", n, len(r.b))
	}
	rel.cols = make([]relColumn, n)
	rel.columns = make([]change.Column, n)
	for i := range rel.cols {
		flags := r.u8("column flags")
		name := r.str("column name")
		oid := r.u32("column type")
		r.u32("column type modifier")
		if r.err != nil {
			return r.err
		}
		t, err := d.types.get(ctx, oid)
		if err != nil {
			return err
		}
		rel.cols[i] = relColumn{name: name, typ: t, key: flags&1 != 0}
		rel.columns[i] = change.Column{Name: name, Type: t.name}
	}
	if len(r.b) != 0 {
		return protoErr("%d bytes after relation %d", len(r.b), rel.id)
	}
	rel.columnsJSON = change.AppendColumns(nil, rel.columns)
	if err := d.setPK(ctx, rel); err != nil {
		return err
	}
	for i, op := range []change.Op{change.OpInsert, change.OpUpdate, change.OpDelete, change.OpTruncate} {
		rel.subjects[i] = d.subject(rel.schema, rel.table, string(op))
	}
	d.rels[rel.id] = rel
	if d.onRelation != nil {
		d.onRelation(rel)
	}
	return nil
}

// setPK finds the key columns. The key flags of a Relation message mark the
// replica identity, which is every column under REPLICA IDENTITY FULL, so
// the primary key itself comes from the catalog; a table without one is
// identified by its identity index, and a table with neither (or only FULL)
// has an empty key.
func (d *decoder) setPK(ctx context.Context, rel *relation) error {
	var names []string
	if d.lookupPK != nil {
		var err error
		if names, err = d.lookupPK(ctx, rel.id); err != nil {
			return fmt.Errorf("primary key of %s.%s: %w", rel.schema, rel.table, err)
		}
	}
	for _, name := range names {
		for i, c := range rel.cols {
			if c.name == name {
				rel.pk = append(rel.pk, i)
			}
		}
	}
	if rel.replIdent != 'f' {
		for i, c := range rel.cols {
			if c.key {
				rel.identity = append(rel.identity, i)
			}
		}
	}
	if len(rel.pk) != len(names) {
		rel.pk = nil // a key column the Relation message lacks: use the identity
	}
	if len(rel.pk) == 0 {
		rel.pk = rel.identity
	}
	return nil
}

func opSlot(op change.Op) int {
	switch op {
	case change.OpInsert:
		return 0
	case change.OpUpdate:
		return 1
	case change.OpDelete:
		return 2
	}
	return 3
}

func (d *decoder) rowMessage(kind byte, lsn change.LSN, r *reader) error {
	relid := r.u32("relation id")
	if r.err != nil {
		return r.err
	}
	rel, ok := d.rels[relid]
	if !ok {
		return protoErr("change for relation %d before its Relation message", relid)
	}
	if !d.inTx {
		return protoErr("change outside a transaction")
	}
	c := d.begin(rel, lsn)
	d.arena = d.arena[:0]
	var err error
	switch kind {
	case 'I':
		c.Op = change.OpInsert
		if tag := r.u8("insert tuple tag"); r.err == nil && tag != 'N' {
			return protoErr("insert tuple tag %q", tag)
		}
		c.Record, err = d.tuple(rel, r, d.newRow[:0], false, true)
	case 'U':
		c.Op = change.OpUpdate
		tag := r.u8("update tuple tag")
		if r.err == nil && (tag == 'K' || tag == 'O') {
			if c.OldRecord, err = d.tuple(rel, r, d.oldRow[:0], tag == 'K', false); err != nil {
				return err
			}
			tag = r.u8("update new tuple tag")
		}
		if r.err == nil && tag != 'N' {
			return protoErr("update tuple tag %q", tag)
		}
		c.Record, err = d.tuple(rel, r, d.newRow[:0], false, true)
	case 'D':
		c.Op = change.OpDelete
		tag := r.u8("delete tuple tag")
		if r.err == nil && tag != 'K' && tag != 'O' {
			return protoErr("delete tuple tag %q", tag)
		}
		c.OldRecord, err = d.tuple(rel, r, d.oldRow[:0], tag == 'K', false)
	}
	if err != nil {
		return err
	}
	if r.err != nil {
		return r.err
	}
	if len(r.b) != 0 {
		return protoErr("%d bytes after %s tuple", len(r.b), c.Op)
	}
	// Keep the grown buffers for the next change.
	if c.Record != nil {
		d.newRow = c.Record
	}
	if c.OldRecord != nil {
		d.oldRow = c.OldRecord
	}
	src := c.Record
	if c.Op == change.OpDelete {
		src = c.OldRecord
	}
	c.PK = d.keyRow(rel.pk, rel, src, c.OldRecord)
	if c.PK == nil {
		// The primary key is not in what PostgreSQL logged (a delete under
		// REPLICA IDENTITY USING INDEX of another index): identify the row
		// by its identity columns instead.
		c.PK = d.keyRow(rel.identity, rel, src, c.OldRecord)
	}
	if c.PK == nil {
		c.PK = d.pkRow[:0]
	}
	d.pkRow = c.PK
	c.UnchangedToast = d.toast
	return d.hold(rel, c)
}

// keyRow picks the key columns from src (or old); nil when one is missing.
func (d *decoder) keyRow(key []int, rel *relation, src, old change.Row) change.Row {
	if len(key) == 0 {
		return nil
	}
	row := d.pkRow[:0]
	for _, i := range key {
		name := rel.cols[i].name
		v, ok := src.Get(name)
		if !ok {
			v, ok = old.Get(name)
		}
		if !ok {
			return nil
		}
		row = append(row, change.Field{Name: name, Value: v})
	}
	return row
}

// begin prepares the scratch change for the next event of the transaction.
func (d *decoder) begin(rel *relation, lsn change.LSN) *change.Event {
	d.toast = d.toast[:0]
	d.change = change.Event{
		CommitLSN: d.commitLSN,
		LSN:       lsn,
		XID:       d.xid,
		CommitTS:  d.commitTS,
		TxIndex:   d.txIndex,
		Schema:    rel.schema,
		Table:     rel.table,
		Columns:   rel.columns,
	}
	return &d.change
}

// tuple decodes TupleData into row. keyOnly keeps only the identity key
// columns (a 'K' tuple carries the others as NULL); newTuple records
// unchanged TOAST columns in d.toast.
func (d *decoder) tuple(rel *relation, r *reader, row change.Row, keyOnly, newTuple bool) (change.Row, error) {
	n := int(r.u16("tuple column count"))
	if r.err != nil {
		return nil, r.err
	}
	if n != len(rel.cols) {
		return nil, protoErr("tuple has %d columns, relation %s.%s has %d", n, rel.schema, rel.table, len(rel.cols))
	}
	if row == nil {
		row = make(change.Row, 0, n)
	}
	for i := 0; i < n; i++ {
		col := &rel.cols[i]
		kind := r.u8("tuple column kind")
		if r.err != nil {
			return nil, r.err
		}
		switch kind {
		case 'n':
			if !keyOnly || col.key {
				row = append(row, change.Field{Name: col.name, Value: jsonNull})
			}
		case 'u':
			if newTuple {
				d.toast = append(d.toast, col.name)
			}
		case 't':
			size := r.u32("tuple value length")
			text := r.bytes(int(size), "tuple value")
			if r.err != nil {
				return nil, r.err
			}
			if keyOnly && !col.key {
				continue
			}
			start := len(d.arena)
			d.arena = appendValue(d.arena, col.typ, text, &d.scratch)
			row = append(row, change.Field{Name: col.name, Value: d.arena[start:len(d.arena):len(d.arena)]})
		case 'b':
			return nil, protoErr("binary tuple data was not requested")
		default:
			return nil, protoErr("tuple column kind %q", kind)
		}
	}
	return row, nil
}

var jsonNull = []byte("null")

func (d *decoder) truncateMessage(lsn change.LSN, r *reader) error {
	n := r.u32("truncate relation count")
	r.u8("truncate options")
	if r.err != nil {
		return r.err
	}
	if int64(n) > int64(len(r.b)/4) {
		return protoErr("truncate of %d relations in %d bytes", n, len(r.b))
	}
	if !d.inTx {
		return protoErr("truncate outside a transaction")
	}
	ids := make([]uint32, n)
	for i := range ids {
		ids[i] = r.u32("truncate relation id")
	}
	if len(r.b) != 0 {
		return protoErr("%d bytes after truncate", len(r.b))
	}
	for _, id := range ids {
		rel, ok := d.rels[id]
		if !ok {
			return protoErr("truncate of relation %d before its Relation message", id)
		}
		c := d.begin(rel, lsn)
		c.Op = change.OpTruncate
		if err := d.hold(rel, c); err != nil {
			return err
		}
	}
	return nil
}

// hold encodes c (without tx_last) and releases the change held before it:
// whether a change is the last of its transaction is known only when the
// next change or the commit arrives, so exactly one change waits.
func (d *decoder) hold(rel *relation, c *change.Event) error {
	pos := change.Position{CommitLSN: c.CommitLSN, TxIndex: c.TxIndex}
	d.txIndex++
	if !d.skipThrough.Less(pos) {
		// Already in the log. The one held (if any) is not last.
		d.skipped++
		return d.release(false)
	}
	if err := d.release(false); err != nil {
		return err
	}
	size := rel.sizeHint
	if size < 256 {
		size = 256
	}
	data := c.AppendJSONHead(make([]byte, 0, size+len(`,"tx_last":false}`)), rel.columnsJSON)
	rel.sizeHint = len(data) + len(data)/8
	d.heldEv = event{pos: pos, lsn: c.LSN, op: c.Op, subject: rel.subjects[opSlot(c.Op)], data: data, commitTS: c.CommitTS}
	d.heldSet = true
	return nil
}

func (d *decoder) release(last bool) error {
	if !d.heldSet {
		return nil
	}
	d.heldSet = false
	ev := d.heldEv
	d.heldEv = event{}
	ev.data = change.AppendJSONTail(ev.data, last)
	return d.out.event(ev)
}

func (r *relation) String() string {
	return r.schema + "." + r.table + "(" + strconv.FormatUint(uint64(r.id), 10) + ")"
}
