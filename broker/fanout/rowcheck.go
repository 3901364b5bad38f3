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
// (Access, cached for AccessTTL, with the rule of its row-level policies)
// and the row-level checks of a batch, asked of the Authorizer by claims
// group and chunk. The rule is docs/ARCHITECTURE.md's "Realtime
// authorization": a change is judged on the row image it carries, never
// on the row as the table holds it when it is delivered or replayed.

// Access is what a role may read of a table.
type Access struct {
	// Columns the role may SELECT; empty means the table is not readable.
	Columns map[string]bool
	// RLS is whether row-level security filters the role's reads.
	RLS bool
	// Policy is the rule row-level security reads rows by, when RLS is
	// set. Nil means the Authorizer does not say which columns its rule
	// reads: images are then sent with every column they have, and no old
	// row is judged (a DELETE goes out with its key only, an UPDATE's
	// old_record is its key).
	Policy *Policy
}

// Policy is the SELECT rule of row-level security for one role on one
// table: the USING expressions of the policies that apply to the role,
// combined as PostgreSQL combines them.
type Policy struct {
	// Expr is the rule, an SQL boolean expression over a row of the table
	// that names the row by the table's own name; "" when no permissive
	// policy applies, so that no row passes.
	Expr string
	// Columns are the columns Expr reads; an image without one of them
	// cannot be judged. WholeRow is set when Expr reads the row as a
	// whole, which takes every column.
	Columns  []string
	WholeRow bool
}

// Authorizer answers the hub's authorization questions, normally from the
// database. A nil Authorizer lets every subscriber read everything.
type Authorizer interface {
	// Access returns what role may read of schema.table.
	Access(ctx context.Context, role, schema, table string) (*Access, error)
	// VisibleMany reports, for each of claims and each row image (a JSON
	// object of a row's columns: those acc.Policy reads, or all it has),
	// whether the row passes the row-level policies acc was read with, as
	// role with those claims: the answer for claims[c] and rows[k] is
	// [c][k]. The rows are judged as they are given, not as the table
	// holds them.
	VisibleMany(ctx context.Context, role string, acc *Access, claims []json.RawMessage, schema, table string, rows []json.RawMessage) ([][]bool, error)
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

// image names a row image of a change of the batch that a check judges:
// its new row, or its old one.
type image struct {
	change int // index into the batch
	old    bool
}

// authGroup is the channels of one claims group reading one table in a
// batch: the row images it needs judged and their answers.
type authGroup struct {
	auth    *Auth
	access  *Access
	schema  string
	table   string
	last    int     // the last change whose images were added; -1 for none
	checks  []image // in batch order, a change's new image before its old
	visible []bool  // the answers, by position in checks; nil if unknown
}

// judged reports whether image (i, old) was put to the check, and
// whether it passed.
func (g *authGroup) judged(i int, old bool) (asked, passed bool) {
	want := image{i, old}
	n := sort.Search(len(g.checks), func(n int) bool {
		c := g.checks[n]
		return c.change > i || c.change == i && (c.old || !old)
	})
	if n == len(g.checks) || g.checks[n] != want {
		return false, false
	}
	return true, n < len(g.visible) && g.visible[n]
}

// sees reports whether the group may see change i, an ev, under
// row-level security, and whether its old_record must be cut to the key:
// an insert or update when its new row passed, with an update's old row
// when that passed too; a delete when its old row passed, or, when the
// replica identity did not log what the policies read, with its key only,
// as Supabase sends it.
func (g *authGroup) sees(i int, ev string) (allow, oldKey bool) {
	switch ev {
	case "DELETE":
		asked, passed := g.judged(i, true)
		if !asked {
			return true, true
		}
		return passed, false
	case "UPDATE":
		_, passed := g.judged(i, false)
		_, oldPassed := g.judged(i, true)
		return passed, !oldPassed
	default:
		_, passed := g.judged(i, false)
		return passed, false
	}
}

// rowCheck is one VisibleMany call: claims groups of one role that need
// the same images of one table judged by the same rule.
type rowCheck struct {
	role, schema, table string
	access              *Access
	rows                []json.RawMessage
	groups              []*authGroup
}

// checkRows answers the row-level checks of a batch: the groups of one
// role that need the same images of one table judged are asked about
// together, AuthChunk groups a call (one statement for the table, the
// role and the chunk), with up to AuthParallel calls at once. It returns
// when every answer is in.
func (h *Hub) checkRows(ctx context.Context, changes []*Change, groups []*authGroup) {
	type setKey struct {
		access              *Access
		role, schema, table string
		images              string
	}
	sets := map[setKey]*rowCheck{}
	var order []*rowCheck
	var buf []byte
	for _, g := range groups {
		if len(g.checks) == 0 {
			continue
		}
		buf = buf[:0]
		for _, im := range g.checks {
			buf = strconv.AppendInt(append(buf, ','), int64(im.change), 10)
			if im.old {
				buf = append(buf, 'o')
			}
		}
		k := setKey{g.access, g.auth.Role, g.schema, g.table, string(buf)}
		rc := sets[k]
		if rc == nil {
			rc = &rowCheck{role: g.auth.Role, schema: g.schema, table: g.table, access: g.access, rows: make([]json.RawMessage, len(g.checks))}
			for n, im := range g.checks {
				rc.rows[n], _ = changes[im.change].image(g.access.Policy, im.old)
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
	vis, err := h.authz.VisibleMany(ctx, c.role, c.access, claims, c.schema, c.table, c.rows)
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
