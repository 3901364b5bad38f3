package change

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// LSN is a PostgreSQL log sequence number. In JSON it is PostgreSQL's own
// text form ("16/B374D848"), the form pg_current_wal_lsn() shows, so people
// can paste it into SQL; compare LSN values, not their strings.
type LSN uint64

// String formats the LSN as PostgreSQL does: two hexadecimal halves.
func (l LSN) String() string { return string(l.appendText(nil)) }

func (l LSN) appendText(dst []byte) []byte {
	dst = appendHexUpper(dst, uint32(l>>32))
	dst = append(dst, '/')
	return appendHexUpper(dst, uint32(l))
}

// upperHex is the digits of LSNs and of escaped subject tokens.
const upperHex = "0123456789ABCDEF"

// appendHexUpper writes v in upper-case hex without leading zeros, as
// PostgreSQL prints LSNs.
func appendHexUpper(dst []byte, v uint32) []byte {
	var buf [8]byte
	i := len(buf)
	for {
		i--
		buf[i] = upperHex[v&0xf]
		v >>= 4
		if v == 0 {
			break
		}
	}
	return append(dst, buf[i:]...)
}

// ParseLSN parses PostgreSQL's text form of an LSN.
func ParseLSN(s string) (LSN, error) {
	i := bytes.IndexByte([]byte(s), '/')
	if i <= 0 || i == len(s)-1 || i > 8 || len(s)-i-1 > 8 {
		return 0, fmt.Errorf("invalid LSN %q", s)
	}
	hi, err1 := strconv.ParseUint(s[:i], 16, 32)
	lo, err2 := strconv.ParseUint(s[i+1:], 16, 32)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("invalid LSN %q", s)
	}
	return LSN(hi<<32 | lo), nil
}

// MarshalJSON writes the LSN as a JSON string in PostgreSQL's text form.
func (l LSN) MarshalJSON() ([]byte, error) {
	b := append(make([]byte, 0, 20), '"')
	return append(l.appendText(b), '"'), nil
}

// UnmarshalJSON reads the form MarshalJSON writes.
func (l *LSN) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("LSN: %w", err)
	}
	v, err := ParseLSN(s)
	if err != nil {
		return err
	}
	*l = v
	return nil
}

// Position is where an event sits in the change log: the commit LSN of its
// transaction and its index within it. Positions order events exactly as
// they were committed, and the pair is the event's message id.
type Position struct {
	CommitLSN LSN
	TxIndex   int
}

// Less reports whether p comes before q in commit order.
func (p Position) Less(q Position) bool {
	if p.CommitLSN != q.CommitLSN {
		return p.CommitLSN < q.CommitLSN
	}
	return p.TxIndex < q.TxIndex
}

// MsgID is the message id of the event at p, "<commit_lsn>/<tx_index>", as
// sent in the Nats-Msg-Id header.
func (p Position) MsgID() string { return string(p.AppendMsgID(nil)) }

// AppendMsgID appends the message id of the event at p to dst.
func (p Position) AppendMsgID(dst []byte) []byte {
	dst = p.CommitLSN.appendText(dst)
	dst = append(dst, '/')
	return strconv.AppendInt(dst, int64(p.TxIndex), 10)
}

// ParseMsgID parses a message id written by Position.MsgID.
func ParseMsgID(id string) (Position, error) {
	i := bytes.LastIndexByte([]byte(id), '/')
	if i < 0 {
		return Position{}, fmt.Errorf("invalid change message id %q", id)
	}
	lsn, err := ParseLSN(id[:i])
	if err != nil {
		return Position{}, fmt.Errorf("invalid change message id %q", id)
	}
	n, err := strconv.Atoi(id[i+1:])
	if err != nil || n < 0 {
		return Position{}, fmt.Errorf("invalid change message id %q", id)
	}
	return Position{CommitLSN: lsn, TxIndex: n}, nil
}
