package fanout

import (
	"context"
	"encoding/json"
	"fmt"
	"math/bits"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// This file authorizes deliveries: what a role may read of a table
// (Access, cached for AccessTTL) and the row-level checks of a batch,
// asked of the Authorizer by claims group and chunk.

// Access is what a role may read of a table.
type Access struct {
	// Columns the role may SELECT; empty means the table is not readable.
	Columns map[string]bool
	// RLS is whether row-level security filters the role's reads.
	RLS bool
}

// Authorizer answers the hub's authorization questions, normally from the
// database. A nil Authorizer lets every subscriber read everything.
type Authorizer interface {
	// Access returns what role may read of schema.table.
	Access(ctx context.Context, role, schema, table string) (*Access, error)
	// VisibleMany reports, for each of claims and each primary key (a
	// JSON object of the key columns), whether a SELECT on schema.table as
	// role with those claims returns that row: the answer for claims[c]
	// and keys[k] is [c][k].
	VisibleMany(ctx context.Context, role string, claims []json.RawMessage, schema, table string, keys []json.RawMessage) ([][]bool, error)
}

// Auth is the identity a channel reads as.
type Auth struct {
	Role   string
	Claims json.RawMessage
	// Bypass skips every check (the service role).
	Bypass bool

	k string // key, made once when a channel takes the Auth on
}

// key groups channels that may read the same rows: those with the same
// role and claims. The whole claims are the key, not a digest of them,
// so two users can never share answers by a collision.
func (a *Auth) key() string {
	if a.k == "" {
		return a.makeKey()
	}
	return a.k
}

func (a *Auth) makeKey() string { return a.Role + "\x00" + string(a.Claims) }

type accessKey struct{ role, schema, table string }

type accessEntry struct {
	a       *Access
	err     error
	expires time.Time
}

// authGroup is the channels of one claims group reading one table in a
// batch: the changes that need a row-level check and their answers.
type authGroup struct {
	auth    *Auth
	access  *Access
	schema  string
	table   string
	changes []int  // ascending indexes into the batch needing a row check
	visible []bool // the answers, by position in changes; nil if unknown
}

// sees reports whether the row check let the group see change i.
func (g *authGroup) sees(i int) bool {
	n := sort.SearchInts(g.changes, i)
	return n < len(g.changes) && g.changes[n] == i && n < len(g.visible) && g.visible[n]
}

// rowCheck is one VisibleMany call: claims groups of one role that need
// the same changes of one table checked.
type rowCheck struct {
	role, schema, table string
	keys                []json.RawMessage
	groups              []*authGroup
}

// checkRows answers the row-level checks of a batch: the groups of one
// role that need the same changes of one table checked are asked about
// together, AuthChunk groups a call, with up to AuthParallel calls at
// once. It returns when every answer is in.
func (h *Hub) checkRows(ctx context.Context, changes []*Change, groups []*authGroup) {
	type setKey struct{ role, schema, table, changes string }
	sets := map[setKey]*rowCheck{}
	var order []*rowCheck
	var buf []byte
	for _, g := range groups {
		if len(g.changes) == 0 {
			continue
		}
		buf = buf[:0]
		for _, i := range g.changes {
			buf = strconv.AppendInt(append(buf, ','), int64(i), 10)
		}
		k := setKey{g.auth.Role, g.schema, g.table, string(buf)}
		rc := sets[k]
		if rc == nil {
			rc = &rowCheck{role: g.auth.Role, schema: g.schema, table: g.table, keys: make([]json.RawMessage, len(g.changes))}
			for n, i := range g.changes {
				rc.keys[n] = changes[i].PK.AppendObject(nil, nil)
			}
			sets[k] = rc
			order = append(order, rc)
		}
		rc.groups = append(rc.groups, g)
	}
	var calls []rowCheck
	for _, rc := range order {
		for lo := 0; lo < len(rc.groups); lo += h.cfg.AuthChunk {
			c := *rc
			c.groups = rc.groups[lo:min(lo+h.cfg.AuthChunk, len(rc.groups))]
			calls = append(calls, c)
		}
	}
	if len(calls) == 1 {
		h.checkChunk(ctx, calls[0], splitBudget(len(calls[0].groups)))
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(h.cfg.AuthParallel, len(calls)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n := int(next.Add(1)) - 1
				if n >= len(calls) {
					return
				}
				h.checkChunk(ctx, calls[n], splitBudget(len(calls[n].groups)))
			}
		}()
	}
	wg.Wait()
}

// splitBudget is how many times a failing check of n groups may be split:
// enough to single out a couple of groups whose claims make the policy
// fail, few enough that a policy failing for everyone costs a few dozen
// calls, not one per group.
func splitBudget(n int) int { return 2 * bits.Len(uint(n)) }

// checkChunk makes one VisibleMany call and files its answers in the
// groups. A call that fails is split in halves and each retried, while
// the budget lasts, so one group whose claims make the policy fail (a sub
// that is not a uuid, say) does not cost the others their changes; the
// groups left without an answer see nothing.
func (h *Hub) checkChunk(ctx context.Context, c rowCheck, budget int) int {
	claims := make([]json.RawMessage, len(c.groups))
	for n, g := range c.groups {
		claims[n] = g.auth.Claims
	}
	vis, err := h.authz.VisibleMany(ctx, c.role, claims, c.schema, c.table, c.keys)
	if err == nil && len(vis) != len(claims) {
		err = fmt.Errorf("%d answers for %d claims", len(vis), len(claims))
	}
	if err == nil {
		for n, g := range c.groups {
			g.visible = vis[n]
		}
		return budget
	}
	if len(c.groups) > 1 && budget > 0 && ctx.Err() == nil {
		half := len(c.groups) / 2
		a, b := c, c
		a.groups, b.groups = c.groups[:half], c.groups[half:]
		budget = h.checkChunk(ctx, a, budget-1)
		return h.checkChunk(ctx, b, budget)
	}
	h.log.Warn("row-level check failed; not delivering", zap.String("table", c.schema+"."+c.table),
		zap.String("role", c.role), zap.Int("claims_groups", len(c.groups)), zap.Error(err))
	return budget
}

func (h *Hub) tableAccess(ctx context.Context, role, schema, table string) (*Access, error) {
	k := accessKey{role, schema, table}
	now := time.Now()
	h.accessMu.Lock()
	e, ok := h.access[k]
	h.accessMu.Unlock()
	if ok && now.Before(e.expires) {
		return e.a, e.err
	}
	a, err := h.authz.Access(ctx, role, schema, table)
	ttl := h.cfg.AccessTTL
	if err != nil {
		ttl = time.Second // retry soon
	}
	h.accessMu.Lock()
	h.access[k] = accessEntry{a: a, err: err, expires: now.Add(ttl)}
	h.accessMu.Unlock()
	return a, err
}

// InvalidateAccess drops every cached table access, so grants and
// revokes take effect at once.
func (h *Hub) InvalidateAccess() {
	h.accessMu.Lock()
	clear(h.access)
	h.accessMu.Unlock()
}
