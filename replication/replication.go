// Package replication turns the PostgreSQL write-ahead log into change
// events: it owns the publication and the logical replication slot, decodes
// pgoutput into Change events, and is the only writer of the change log.
//
// It does not own the log itself (the broker package runs the stream and
// decides where it lives), nor fan-out to clients, nor the HTTP surface.
//
// # Stages
//
// One file per stage:
//
//	slot.go        publication and slot management, REPLICA IDENTITY FULL
//	read.go        the replication connection: standby, START_REPLICATION, keepalives
//	decode.go      pgoutput → Change events, in commit order, with tx_index and tx_last
//	publish.go     pipelined publishing into the log with a bounded window
//	checkpoint.go  the slot's confirmed LSN, advanced only past durable events
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
package replication
