package fanout

import (
	"strings"
)

// This file names the bus subjects of broadcast and presence.

func (h *Hub) subject(kind string, k topicKey) string {
	vis := "pub"
	if k.private {
		vis = "priv"
	}
	return h.cfg.SubjectPrefix + kind + "." + vis + "." + escapeToken(k.name)
}

// escapeToken makes a topic a single NATS subject token, reversibly:
// letters, digits, '_' and '-' stay, every other byte becomes %XX.
func escapeToken(s string) string {
	if s == "" {
		return "%"
	}
	var b strings.Builder
	const hexu = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexu[c>>4])
		b.WriteByte(hexu[c&0xf])
	}
	return b.String()
}
