package replication

import (
	"encoding/binary"
	"time"

	"github.com/fluxbase/fluxbase/change"
)

// Builders of pgoutput messages (protocol version 1) for tests that need
// no server: the fuzz seeds and the fake walsender.

type wire []byte

func (w wire) u8(v byte) wire    { return append(w, v) }
func (w wire) u16(v uint16) wire { return binary.BigEndian.AppendUint16(w, v) }
func (w wire) u32(v uint32) wire { return binary.BigEndian.AppendUint32(w, v) }
func (w wire) u64(v uint64) wire { return binary.BigEndian.AppendUint64(w, v) }
func (w wire) str(s string) wire { return append(append(w, s...), 0) }

func pgMicros(t time.Time) uint64 { return uint64(t.Sub(pgEpoch) / time.Microsecond) }

func msgBegin(final change.LSN, ts time.Time, xid uint32) []byte {
	return wire{'B'}.u64(uint64(final)).u64(pgMicros(ts)).u32(xid)
}

func msgCommit(commit, end change.LSN, ts time.Time) []byte {
	return wire{'C'}.u8(0).u64(uint64(commit)).u64(uint64(end)).u64(pgMicros(ts))
}

type testCol struct {
	name string
	oid  uint32
	key  bool
}

func msgRelation(id uint32, schema, table string, ident byte, cols ...testCol) []byte {
	w := wire{'R'}.u32(id).str(schema).str(table).u8(ident).u16(uint16(len(cols)))
	for _, c := range cols {
		var flags byte
		if c.key {
			flags = 1
		}
		w = w.u8(flags).str(c.name).u32(c.oid).u32(0xFFFFFFFF)
	}
	return w
}

// tupleVal is one column of a tuple: nil is NULL, toastVal is unchanged TOAST.
type tupleVal *string

var toastVal = new(string)

func val(s string) tupleVal { return &s }

func tuple(w wire, vals ...tupleVal) wire {
	w = w.u16(uint16(len(vals)))
	for _, v := range vals {
		switch {
		case v == nil:
			w = w.u8('n')
		case v == toastVal:
			w = w.u8('u')
		default:
			w = w.u8('t').u32(uint32(len(*v)))
			w = append(w, *v...)
		}
	}
	return w
}

func msgInsert(rel uint32, vals ...tupleVal) []byte {
	return tuple(wire{'I'}.u32(rel).u8('N'), vals...)
}

func msgUpdate(rel uint32, oldTag byte, old []tupleVal, vals ...tupleVal) []byte {
	w := wire{'U'}.u32(rel)
	if oldTag != 0 {
		w = tuple(w.u8(oldTag), old...)
	}
	return tuple(w.u8('N'), vals...)
}

func msgDelete(rel uint32, tag byte, old ...tupleVal) []byte {
	return tuple(wire{'D'}.u32(rel).u8(tag), old...)
}

func msgTruncate(rels ...uint32) []byte {
	w := wire{'T'}.u32(uint32(len(rels))).u8(0)
	for _, r := range rels {
		w = w.u32(r)
	}
	return w
}

func msgMessage(transactional bool, lsn change.LSN, prefix string, content []byte) []byte {
	var flags byte
	if transactional {
		flags = 1
	}
	w := wire{'M'}.u8(flags).u64(uint64(lsn)).str(prefix).u32(uint32(len(content)))
	return append(w, content...)
}
