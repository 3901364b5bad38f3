package change

import (
	"strings"
)

// Stream is the JetStream stream holding the change log.
const Stream = "FLUXBASE_CHANGES"

// SubjectPrefix starts every change subject.
const SubjectPrefix = "fluxbase.changes."

// SubjectWildcard matches every change subject: the stream's subjects.
const SubjectWildcard = SubjectPrefix + ">"

// Subject is the subject of a change event:
// fluxbase.changes.<schema>.<table>.<op>, each name escaped by EscapeToken.
func Subject(schema, table, op string) string {
	var b strings.Builder
	b.Grow(len(SubjectPrefix) + len(schema) + len(table) + len(op) + 2)
	b.WriteString(SubjectPrefix)
	writeToken(&b, schema)
	b.WriteByte('.')
	writeToken(&b, table)
	b.WriteByte('.')
	writeToken(&b, op)
	return b.String()
}

// ParseSubject splits a change subject into the schema, table and
// operation it names; ok is false for any other subject.
func ParseSubject(subject string) (schema, table, op string, ok bool) {
	rest, found := strings.CutPrefix(subject, SubjectPrefix)
	if !found {
		return "", "", "", false
	}
	tokens := strings.Split(rest, ".")
	if len(tokens) != 3 {
		return "", "", "", false
	}
	names := [3]string{}
	for i, tok := range tokens {
		if names[i], ok = UnescapeToken(tok); !ok {
			return "", "", "", false
		}
	}
	return names[0], names[1], names[2], true
}

// EscapeToken makes a name a single NATS subject token: a PostgreSQL name
// of a change subject, or a realtime topic of the hub's broadcast and
// presence subjects. ASCII letters, digits, '_' and '-' stay as they are;
// every other byte (including '.', '*', '>', spaces, '%' and the bytes of
// non-ASCII characters) becomes %XX with upper-case hex, so escaping is
// reversible and a token never holds a wildcard or a separator. The empty
// name (PostgreSQL has none, a topic may) is written as "%", since a
// subject token cannot be empty.
func EscapeToken(name string) string {
	var b strings.Builder
	writeToken(&b, name)
	return b.String()
}

func writeToken(b *strings.Builder, name string) {
	if name == "" {
		b.WriteByte('%')
		return
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if plainTokenByte(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(upperHex[c>>4])
		b.WriteByte(upperHex[c&0xf])
	}
}

func plainTokenByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// UnescapeToken reverses EscapeToken. It reports false for a token that
// EscapeToken cannot have written.
func UnescapeToken(token string) (string, bool) {
	if token == "%" {
		return "", true
	}
	if token == "" {
		return "", false
	}
	var b strings.Builder
	for i := 0; i < len(token); i++ {
		c := token[i]
		if plainTokenByte(c) {
			b.WriteByte(c)
			continue
		}
		if c != '%' || i+2 >= len(token) {
			return "", false
		}
		hi, ok1 := unhexUpper(token[i+1])
		lo, ok2 := unhexUpper(token[i+2])
		if !ok1 || !ok2 {
			return "", false
		}
		v := hi<<4 | lo
		if plainTokenByte(v) {
			return "", false // not canonical
		}
		b.WriteByte(v)
		i += 2
	}
	return b.String(), true
}

// unhexUpper is the value of an upper-case hex digit.
func unhexUpper(c byte) (byte, bool) {
	i := strings.IndexByte(upperHex, c)
	return byte(i), i >= 0
}
