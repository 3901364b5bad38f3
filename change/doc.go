// Package change is the contract of Fluxbase's change log: the event every
// committed row change becomes, its JSON encoding, the stream and subjects
// it is published on, and its message id. The replication reader writes
// events; the broker creates the stream; the realtime fan-out, the
// benchmarks and external consumers read it. It depends on the standard
// library only.
//
// # Stream and subjects
//
// The log is the JetStream stream FLUXBASE_CHANGES (Stream), holding the
// subjects fluxbase.changes.> (SubjectWildcard). One message per row
// change, on subject fluxbase.changes.<schema>.<table>.<op> (Subject,
// ParseSubject), where op is insert, update, delete or truncate.
//
// Each name is one subject token, escaped by EscapeToken: ASCII letters,
// digits, '_' and '-' stay as they are, every other byte (including '.',
// '*', '>', spaces, '%' and the bytes of non-ASCII characters) becomes %XX
// with upper-case hex, and the empty name is written "%". The escaping is
// reversible (UnescapeToken) and a token never holds a wildcard or a
// separator, so a consumer can subscribe to one table, or one operation
// of one table, with the escaped names. The hub's broadcast and presence
// subjects escape realtime topics by the same rule.
//
// # Message id and order
//
// The message id (the Nats-Msg-Id header) is <commit_lsn>/<tx_index>
// (Position.MsgID, ParseMsgID): the commit LSN of the event's transaction
// in PostgreSQL's text form and the event's index within the transaction.
// Positions order events exactly as they were committed.
//
// Every committed change is in the stream exactly once, in commit order,
// across crashes and failover of the reader: the replication slot is
// confirmed only behind what the stream holds durably, every publish names
// the previous event's id as a precondition (Nats-Expected-Last-Msg-Id),
// and a new holder of the slot skips what the stream already has.
//
// # The event
//
// The body is a JSON object (Event) with these keys, in this order:
// commit_lsn and lsn (PostgreSQL's text form, "16/B374D848"), xid,
// commit_ts (RFC 3339, UTC, microseconds), tx_index, schema, table, op,
// pk, record, old_record, columns (name and type of each column),
// unchanged_toast, omitted_columns (only when some were omitted), and
// tx_last (whether the event is the last of its transaction). See Event for
// what each row holds. Rows are JSON objects in the table's column order
// (Row), or null.
//
// # Values
//
// Column values are JSON typed from the column type: int2, int4, int8 and
// oid as numbers; float4 and float8 as numbers except NaN and ±Infinity,
// which are strings; numeric as a number when it has at most 15 significant
// digits (so a float64 holds it exactly) and as a string with every digit
// otherwise (and for NaN, ±Infinity); bool as true/false; json and jsonb
// nested as they are; arrays as JSON arrays (nested per dimension, NULL
// elements as null, lower bounds dropped) of their element type;
// timestamptz as RFC 3339 in UTC ("2024-01-02T03:04:05.5Z"); timestamp as
// RFC 3339 without an offset; date, time, timetz and interval as
// PostgreSQL's ISO text ("1 year 2 mons 03:04:05"); bytea as standard
// base64; enums as their label; a domain as its base type; everything else
// (text, uuid, inet, money, ranges, composites, extension types) as the
// string PostgreSQL prints. Values RFC 3339 cannot write (infinity, BC
// dates, years after 9999) stay PostgreSQL's text.
package change
