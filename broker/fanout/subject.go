package fanout

import (
	"github.com/fluxbase/fluxbase/change"
)

// This file names the bus subjects of broadcast and presence.

// subject is the bus subject of kind ("broadcast" or "presence") on topic
// k: SubjectPrefix, kind, pub or priv, and the topic escaped as one token
// by the rule of change subjects (change.EscapeToken).
func (h *Hub) subject(kind string, k topicKey) string {
	vis := "pub"
	if k.private {
		vis = "priv"
	}
	return h.cfg.SubjectPrefix + kind + "." + vis + "." + change.EscapeToken(k.name)
}
