package fanout

import (
	"strconv"
)

// This file encodes a change's postgres_changes frames, each distinct
// payload once.

// changeEncoder encodes one change's postgres_changes frames, each
// distinct payload once: data objects by the column set the reader may
// see, payloads by binding ids, and frame heads by serializer and topic.
type changeEncoder struct {
	c        *Change
	last     frameKey // the frame built or found last, often asked again
	lastF    Frame
	hasLast  bool
	data     map[dataKey][]byte
	payloads map[payloadKey][]byte
	frames   map[frameKey]Frame
	idsBuf   []byte
}

type dataKey struct {
	acc    *Access
	oldKey bool
}

// payloadKey names a payload: one binding id (the common case, no
// allocation) or several, written out.
type payloadKey struct {
	id   uint32
	ids  string
	data dataKey
}

type frameKey struct {
	vsn   Vsn
	topic string
	p     payloadKey
}

func newChangeEncoder(c *Change) *changeEncoder {
	return &changeEncoder{c: c, data: map[dataKey][]byte{}, payloads: map[payloadKey][]byte{}, frames: map[frameKey]Frame{}}
}

func (e *changeEncoder) frame(vsn Vsn, topic string, ids []uint32, acc *Access, oldKey bool) Frame {
	pk := payloadKey{data: dataKey{acc, oldKey}}
	if len(ids) == 1 {
		pk.id = ids[0]
	} else {
		e.idsBuf = e.idsBuf[:0]
		for i, id := range ids {
			if i > 0 {
				e.idsBuf = append(e.idsBuf, ',')
			}
			e.idsBuf = strconv.AppendUint(e.idsBuf, uint64(id), 10)
		}
		pk.ids = string(e.idsBuf)
	}
	fk := frameKey{vsn, topic, pk}
	if e.hasLast && e.last == fk {
		return e.lastF
	}
	if f, ok := e.frames[fk]; ok {
		e.last, e.lastF = fk, f
		return f
	}
	p, ok := e.payloads[pk]
	if !ok {
		data, ok := e.data[pk.data]
		if !ok {
			data = e.encodeData(acc, oldKey)
			e.data[pk.data] = data
		}
		p = make([]byte, 0, len(data)+32)
		p = append(p, `{"ids":[`...)
		for i, id := range ids {
			if i > 0 {
				p = append(p, ',')
			}
			p = strconv.AppendUint(p, uint64(id), 10)
		}
		p = append(p, `],"data":`...)
		p = append(p, data...)
		p = append(p, '}')
		e.payloads[pk] = p
	}
	f := PushFrame(vsn, topic, "postgres_changes", p)
	// Past a few hundred topics the frames are almost never shared; a
	// bigger map would cost more than the small heads it saves.
	if len(e.frames) < 256 {
		e.frames[fk] = f
	}
	e.last, e.lastF, e.hasLast = fk, f, true
	return f
}

// encodeData writes Supabase's data object. With acc, columns the reader
// may not see are left out; with oldKey (under row-level security, an old
// row that did not pass the reader's policies or could not be judged) the
// old record carries only the key of the row, as Supabase's does.
func (e *changeEncoder) encodeData(acc *Access, oldKey bool) []byte {
	c := e.c
	var keep map[string]bool
	if acc != nil {
		keep = acc.Columns
	}
	ev := c.event()
	d := make([]byte, 0, 256)
	d = append(d, `{"schema":`...)
	d = AppendString(d, c.Schema)
	d = append(d, `,"table":`...)
	d = AppendString(d, c.Table)
	d = append(d, `,"commit_timestamp":`...)
	d = AppendString(d, c.commitTimestamp())
	d = append(d, `,"type":`...)
	d = AppendString(d, ev)
	d = append(d, `,"columns":[`...)
	first := true
	for _, col := range c.Columns {
		if keep != nil && !keep[col.Name] {
			continue
		}
		if !first {
			d = append(d, ',')
		}
		first = false
		d = append(d, `{"name":`...)
		d = AppendString(d, col.Name)
		d = append(d, `,"type":`...)
		d = AppendString(d, col.Type)
		d = append(d, '}')
	}
	d = append(d, ']')
	if ev == "INSERT" || ev == "UPDATE" {
		d = append(d, `,"record":`...)
		d = c.Record.AppendObject(d, keep)
	}
	if ev == "UPDATE" || ev == "DELETE" {
		d = append(d, `,"old_record":`...)
		old := c.OldRecord
		switch {
		case oldKey:
			old = c.oldKey()
		case ev == "DELETE" && old == nil:
			old = c.PK
		}
		d = old.AppendObject(d, keep)
	}
	d = append(d, `,"errors":null,"log_seq":`...)
	d = appendUint(d, c.Seq)
	return append(d, '}')
}
