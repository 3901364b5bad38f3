// Package rest is the /rest/v1 surface: PostgREST's dialect over the
// tables, views and functions of the exposed schemas — GET, HEAD, POST,
// PATCH and DELETE on /<table> and calls on /rpc/<function> — as
// @supabase/postgrest-js speaks it. It owns the URL grammar (query.go),
// the SQL it compiles to (sql.go, embed.go, rpc.go) and the handlers
// (this file), and answers errors in PostgREST's shape and codes.
//
// Each request runs in one transaction as the token's role with its
// claims in request.jwt.claims (see pgrole), so grants and row-level
// security decide what it sees and changes, exactly as for PostgREST. It
// does not verify tokens (the edge's guard does, before every route) and
// imports no other surface.
package rest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/fluxbase/fluxbase/api"
	"github.com/fluxbase/fluxbase/auth"
	"github.com/fluxbase/fluxbase/pgrole"
)

// Prefix is where the surface is served.
const Prefix = "/rest/v1"

// Config configures the REST API; zero values mean defaults.
type Config struct {
	// Pool is the primary: it runs every write, and the reads when there
	// are no replicas or none answers.
	Pool *pgxpool.Pool
	// Replicas, when given, run the reads (GET and HEAD on tables and
	// functions) in turn. A read that cannot connect to its replica goes
	// to the primary. Replicas lag: a read right after a write may not
	// see it.
	Replicas []*pgxpool.Pool
	// Schemas are the schemas clients may name with Accept-Profile and
	// Content-Profile; the first is the default. Default ["public"].
	Schemas []string
	// MaxBodyBytes bounds a request body. Default 10 MiB.
	MaxBodyBytes int64
	// MaxRows bounds the rows of an answer, as PostgREST's db-max-rows: a
	// read (its top level, not its embedded resources) and a function's
	// rows stop there, whatever limit or Range they ask, and
	// Content-Range tells which rows came. Default 1000, Supabase's; -1
	// for no bound.
	MaxRows int
	// MaxQueryBytes bounds a request's query string. Default 32 KiB.
	MaxQueryBytes int
	// MaxEmbedDepth bounds the nesting of embedded resources in select=.
	// Default 8.
	MaxEmbedDepth int
	// MaxFilterDepth bounds the nesting of or/and logic trees. Default 16.
	MaxFilterDepth int
	// Roles are the roles' own settings (their statement_timeout, say),
	// applied to every request's transaction; nil applies none.
	Roles *pgrole.Roles
	Log   *zap.Logger
}

// handler serves the surface's routes.
type handler struct {
	cfg     Config
	next    atomic.Uint64 // the replica of the next read
	columns columnCache
}

// New returns the surface. Every route needs a key (api.NeedKey): the
// role a request runs as is its token's, anon for the anon key.
func New(cfg Config) api.Surface {
	if len(cfg.Schemas) == 0 {
		cfg.Schemas = []string{"public"}
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = 10 << 20
	}
	if cfg.MaxRows == 0 {
		cfg.MaxRows = 1000
	}
	if cfg.MaxQueryBytes == 0 {
		cfg.MaxQueryBytes = defaultGrammarLimits.queryBytes
	}
	if cfg.MaxEmbedDepth == 0 {
		cfg.MaxEmbedDepth = defaultGrammarLimits.embedDepth
	}
	if cfg.MaxFilterDepth == 0 {
		cfg.MaxFilterDepth = defaultGrammarLimits.filterDepth
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	h := &handler{cfg: cfg}
	route := func(method, pattern string, fn http.HandlerFunc) api.Route {
		return api.Route{Method: method, Pattern: pattern, Access: api.NeedKey, Handler: fn}
	}
	return api.Surface{Prefix: Prefix, Routes: []api.Route{
		route(http.MethodGet, "/{table}", h.read),
		route(http.MethodHead, "/{table}", h.read),
		route(http.MethodPost, "/{table}", h.insert),
		route(http.MethodPatch, "/{table}", h.update),
		route(http.MethodDelete, "/{table}", h.delete),
		route(http.MethodPost, "/rpc/{fn}", h.rpc),
		route(http.MethodGet, "/rpc/{fn}", h.rpc),
	}}
}

// The REST surface's own errors, in PostgREST's codes.
var (
	errRESTParse       = &api.Error{Status: http.StatusBadRequest, Code: "PGRST100", Message: "Could not parse the request"}
	errRESTBody        = &api.Error{Status: http.StatusBadRequest, Code: "PGRST102", Message: "Empty or invalid json"}
	errRESTRange       = &api.Error{Status: http.StatusRequestedRangeNotSatisfiable, Code: "PGRST103", Message: "Requested range not satisfiable"}
	errRESTSchema      = &api.Error{Status: http.StatusNotAcceptable, Code: "PGRST106", Message: "The schema must be one of the exposed schemas"}
	errRESTMediaType   = &api.Error{Status: http.StatusUnsupportedMediaType, Code: "PGRST107", Message: "The request body must be application/json"}
	errRESTSingle      = &api.Error{Status: http.StatusNotAcceptable, Code: "PGRST116", Message: "JSON object requested, multiple (or no) rows returned"}
	errRESTTooLarge    = &api.Error{Status: http.StatusRequestEntityTooLarge, Code: "PGRST413", Message: "Request body too large"}
	errRESTNoPK        = &api.Error{Status: http.StatusBadRequest, Code: "PGRST120", Message: "An upsert needs on_conflict or a primary key"}
	mediaSingleObject  = "application/vnd.pgrst.object+json"
	restContentTypeOut = "application/json; charset=utf-8"
)

// request is what every method needs from an HTTP request.
type request struct {
	claims *auth.Claims
	schema string
	name   string // the table or function
	rel    string // both, quoted
	q      *restQuery
	prefs  prefer
	single bool
	tables map[string]string // the table behind each alias of its statement but _t
	sets   []string          // the columns an update sets from its body
}

// prefer holds the Prefer header's settings that change the answer.
type prefer struct {
	ret        string // "representation", "minimal" or "headers-only"
	count      string // "exact", "planned" or "estimated"; every count is exact
	resolution string // "merge-duplicates" or "ignore-duplicates"
}

// parsePrefer reads the preferences; one given more than once takes its
// last value.
func parsePrefer(values []string) prefer {
	var p prefer
	for _, v := range values {
		for part := range strings.SplitSeq(v, ",") {
			k, val, _ := strings.Cut(strings.TrimSpace(part), "=")
			switch {
			case k == "return" && (val == "representation" || val == "minimal" || val == "headers-only"):
				p.ret = val
			case k == "count" && (val == "exact" || val == "planned" || val == "estimated"):
				p.count = val
			case k == "resolution" && (val == "merge-duplicates" || val == "ignore-duplicates"):
				p.resolution = val
			}
		}
	}
	return p
}

// applied is the Preference-Applied header: each preference taken, once,
// however often the request repeats it.
func (p prefer) applied() string {
	var out []string
	for _, kv := range [][2]string{{"return", p.ret}, {"count", p.count}, {"resolution", p.resolution}} {
		if kv[1] != "" {
			out = append(out, kv[0]+"="+kv[1])
		}
	}
	return strings.Join(out, ", ")
}

// prepare parses what every method shares; profile is the header that
// names the schema (Accept-Profile for reads, Content-Profile for writes).
func (h *handler) prepare(w http.ResponseWriter, r *http.Request, profile string) (*request, bool) {
	schema, e := h.schemaOf(r, profile)
	if e == nil {
		var req *request
		if req, e = h.newRequest(r, schema, chi.URLParam(r, "table"), r.URL.RawQuery); e == nil {
			req.applyPreferences(w)
			return req, true
		}
	}
	api.WriteError(w, e)
	return nil, false
}

// schemaOf is the schema the profile header names, or the default.
func (h *handler) schemaOf(r *http.Request, profile string) (string, *api.Error) {
	p := r.Header.Get(profile)
	if p == "" {
		return h.cfg.Schemas[0], nil
	}
	if !slices.Contains(h.cfg.Schemas, p) {
		return "", errRESTSchema.With(fmt.Sprintf("exposed schemas: %s", strings.Join(h.cfg.Schemas, ", ")))
	}
	return p, nil
}

// newRequest is the request on schema.name with the filters and
// modifiers of query.
func (h *handler) newRequest(r *http.Request, schema, name, query string) (*request, *api.Error) {
	if strings.IndexByte(name, 0) >= 0 {
		return nil, errRESTParse.With(fmt.Sprintf("the name %q has a NUL byte", name))
	}
	q, err := parseRestQueryLimited(query, h.grammar())
	if err != nil {
		return nil, parseFailure(err)
	}
	return &request{
		claims: api.Claims(r),
		schema: schema,
		name:   name,
		rel:    pgx.Identifier{schema, name}.Sanitize(),
		q:      q,
		prefs:  parsePrefer(r.Header.Values("Prefer")),
		single: strings.Contains(r.Header.Get("Accept"), mediaSingleObject),
	}, nil
}

// grammar is the limits of the URL grammar.
func (h *handler) grammar() grammarLimits {
	return grammarLimits{queryBytes: h.cfg.MaxQueryBytes, embedDepth: h.cfg.MaxEmbedDepth, filterDepth: h.cfg.MaxFilterDepth}
}

// capRows is limit within MaxRows; a negative limit is none.
func (h *handler) capRows(limit int) int {
	if h.cfg.MaxRows > 0 && (limit < 0 || limit > h.cfg.MaxRows) {
		return h.cfg.MaxRows
	}
	return limit
}

// checkColumns refuses a request that reads as a column a name that is
// not one (see columnCache).
func (h *handler) checkColumns(ctx context.Context, db rowsQuerier, req *request) error {
	need := req.q.namedColumns(req.name)
	for _, c := range req.sets { // read from the body's record as _b."c"
		if !slices.Contains(need[req.name], c) {
			need[req.name] = append(need[req.name], c)
		}
	}
	if len(need) == 0 {
		return nil
	}
	return h.columns.check(ctx, db, req.schema, need)
}

// resolveEmbeds finds the relationships of the select list's embedded
// resources, when it has any.
func (req *request) resolveEmbeds(ctx context.Context, db rowsQuerier) error {
	if !hasEmbeds(req.q.selects) {
		return nil
	}
	return resolveEmbeds(ctx, db, req.schema, req.name, req.q.selects)
}

// applyPreferences tells the client which of its preferences were taken.
func (req *request) applyPreferences(w http.ResponseWriter) {
	if a := req.prefs.applied(); a != "" {
		w.Header().Set("Preference-Applied", a)
	}
}

func parseFailure(err error) *api.Error {
	var pe *parseError
	if errors.As(err, &pe) {
		e := errRESTParse.With(pe.msg)
		if pe.details != "" {
			e.Hint = pe.details
		}
		return e
	}
	return errRESTParse.With(err.Error())
}

func (h *handler) read(w http.ResponseWriter, r *http.Request) {
	req, ok := h.prepare(w, r, "Accept-Profile")
	if !ok {
		return
	}
	limit, offset, err := pageOf(req.q, r.Header.Get("Range"))
	if err != nil {
		api.WriteError(w, errRESTRange.With(err.Error()))
		return
	}
	limit = h.capRows(limit)
	err = h.onReader(func(pool *pgxpool.Pool) error {
		return h.readOnce(r.Context(), pool, w, r, req, limit, offset)
	})
	var broken *streamError
	switch {
	case errors.As(err, &broken):
		// The status and some rows are sent: the client must not take
		// what it got for the whole answer, so the connection is cut.
		if r.Context().Err() == nil { // else the client went away
			h.cfg.Log.Warn("rest read failed while streaming", zap.Error(broken.err))
		}
		panic(http.ErrAbortHandler)
	case err != nil:
		h.fail(w, req, err)
	}
}

// streamError is a read that failed after its answer began.
type streamError struct{ err error }

func (e *streamError) Error() string { return "streaming the answer: " + e.err.Error() }
func (e *streamError) Unwrap() error { return e.err }

// readOnce runs a read in one round trip and streams its answer: the role
// with its settings and claims, the count and the page are sent as one
// pipeline with one Sync, which PostgreSQL runs as one implicit
// transaction, so the settings made local to it hold for the statements
// after them and end with it. The page answers a row a JSON object, each
// with the page's length, so the headers are written from the first row
// and every row is copied to the client as it arrives: the server holds
// one row at a time, whatever the answer's size. The page's columns are
// always (text, bigint), so a statement the connection keeps prepared
// stays valid when the table changes.
func (h *handler) readOnce(ctx context.Context, pool *pgxpool.Pool, w http.ResponseWriter, r *http.Request, req *request, limit, offset int) error {
	if err := req.resolveEmbeds(ctx, pool); err != nil {
		return err
	}
	if err := h.checkColumns(ctx, pool, req); err != nil {
		return err
	}
	page := readSQL(req.rel, req.q, limit, offset)
	req.tables = page.tables
	b := &pgx.Batch{}
	as := h.runAs(req.claims)
	as.ReadOnly = true
	as.Queue(b)
	if req.prefs.count != "" {
		c := countSQL(req.rel, req.q)
		b.Queue(c.b.String(), c.args...)
	}
	b.Queue(page.b.String(), page.args...)
	br := pool.SendBatch(ctx, b)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return fmt.Errorf("switch to role %s: %w", req.claims.Role, err)
	}
	total := int64(-1)
	if req.prefs.count != "" {
		if err := br.QueryRow().Scan(&total); err != nil {
			return err
		}
	}
	rows, err := br.Query()
	if err != nil {
		return err
	}
	defer rows.Close()
	var n int64
	more := rows.Next()
	if more {
		if err := rows.Scan(nil, &n); err != nil {
			return err
		}
	} else if err := rows.Err(); err != nil {
		return err
	}
	if req.single && n != 1 {
		return errRESTSingle.With(fmt.Sprintf("The result contains %d rows", n))
	}
	if total >= 0 && offset > 0 && int64(offset) >= total && total > 0 {
		return errRESTRange.With(fmt.Sprintf("offset %d is past the %d rows", offset, total))
	}
	status := http.StatusOK
	if total >= 0 && n < total && (offset > 0 || n > 0) {
		status = http.StatusPartialContent
	}
	w.Header().Set("Content-Range", contentRange(offset, n, total))
	if req.single {
		w.Header().Set("Content-Type", mediaSingleObject+"; charset=utf-8")
	} else {
		w.Header().Set("Content-Type", restContentTypeOut)
	}
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return nil
	}
	if err := copyRows(w, rows, more, !req.single); err != nil {
		return &streamError{err}
	}
	if err := br.Close(); err != nil {
		return &streamError{err}
	}
	return nil
}

// copyRows writes the JSON objects of rows (the first already read when
// more), as an array when array.
func copyRows(w io.Writer, rows pgx.Rows, more, array bool) error {
	if array {
		if _, err := io.WriteString(w, "["); err != nil {
			return err
		}
	}
	for i := 0; more; i++ {
		if i > 0 {
			if _, err := io.WriteString(w, ","); err != nil {
				return err
			}
		}
		if _, err := w.Write(rows.RawValues()[0]); err != nil {
			return err
		}
		more = rows.Next()
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if array {
		_, err := io.WriteString(w, "]")
		return err
	}
	return nil
}

// onReader runs read on the next replica, or on the primary when there is
// none or the replica cannot be reached.
func (h *handler) onReader(read func(*pgxpool.Pool) error) error {
	if len(h.cfg.Replicas) == 0 {
		return read(h.cfg.Pool)
	}
	replica := h.cfg.Replicas[(h.next.Add(1)-1)%uint64(len(h.cfg.Replicas))]
	err := read(replica)
	var unreachable *pgconn.ConnectError
	if errors.As(err, &unreachable) {
		h.cfg.Log.Warn("read replica unreachable; reading from the primary", zap.Error(err))
		return read(h.cfg.Pool)
	}
	return err
}

// pageOf is the page asked for by limit and offset, or else by a Range
// header ("first-last" items).
func pageOf(q *restQuery, rangeHeader string) (limit, offset int, err error) {
	limit, offset = q.limit, q.offset
	if rangeHeader == "" || q.limit >= 0 || q.offset > 0 {
		return limit, offset, nil
	}
	spec := strings.TrimPrefix(rangeHeader, "items=")
	first, last, ok := strings.Cut(spec, "-")
	a, err := strconv.Atoi(first)
	if !ok || err != nil || a < 0 {
		return 0, 0, fmt.Errorf("malformed Range %q", rangeHeader)
	}
	if last == "" {
		return -1, a, nil
	}
	b, err := strconv.Atoi(last)
	if err != nil || b < a {
		return 0, 0, fmt.Errorf("malformed Range %q", rangeHeader)
	}
	if b-a == math.MaxInt { // every item there can be: b-a+1 would overflow
		return -1, a, nil
	}
	return b - a + 1, a, nil
}

// contentRange is PostgREST's Content-Range: first-last/total, with * for
// an empty page or an unknown total.
func contentRange(offset int, n, total int64) string {
	t := "*"
	if total >= 0 {
		t = strconv.FormatInt(total, 10)
	}
	if n == 0 {
		return "*/" + t
	}
	return fmt.Sprintf("%d-%d/%s", offset, int64(offset)+n-1, t)
}

// prepareWrite is prepare for a request with a JSON body.
func (h *handler) prepareWrite(w http.ResponseWriter, r *http.Request) (*request, []byte, bool) {
	req, ok := h.prepare(w, r, "Content-Profile")
	if !ok {
		return nil, nil, false
	}
	body, ok := h.body(w, r, "")
	return req, body, ok
}

func (h *handler) insert(w http.ResponseWriter, r *http.Request) {
	req, body, ok := h.prepareWrite(w, r)
	if !ok {
		return
	}
	rows, cols, err := rowsOf(body, req.q.columns)
	if err != nil {
		api.WriteError(w, errRESTBody.With(err.Error()))
		return
	}
	var c *conflict
	if req.prefs.resolution != "" {
		c = &conflict{target: req.q.onConflict, ignore: req.prefs.resolution == "ignore-duplicates"}
	}
	h.mutate(w, r, req, http.StatusCreated, func(ctx context.Context, tx pgx.Tx) (*sqlText, error) {
		if c != nil && len(c.target) == 0 {
			pk, err := primaryKey(ctx, tx, req.rel)
			if err != nil {
				return nil, err
			}
			if len(pk) == 0 {
				return nil, errRESTNoPK
			}
			c.target = pk
		}
		return insertSQL(req.rel, cols, rows, c, req.q, req.representation()), nil
	})
}

func (h *handler) update(w http.ResponseWriter, r *http.Request) {
	req, body, ok := h.prepareWrite(w, r)
	if !ok {
		return
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil || obj == nil {
		api.WriteError(w, errRESTBody.With("PATCH takes one JSON object"))
		return
	}
	cols := req.q.columns
	if len(cols) == 0 {
		cols = sortedKeys(obj)
	}
	if len(cols) == 0 {
		api.WriteError(w, errRESTBody.With("nothing to update: the object has no keys"))
		return
	}
	if k := nulKey(cols); k != "" {
		api.WriteError(w, errRESTBody.With(fmt.Sprintf("the key %q has a NUL byte", k)))
		return
	}
	req.sets = cols
	h.mutate(w, r, req, http.StatusOK, func(context.Context, pgx.Tx) (*sqlText, error) {
		return updateSQL(req.rel, cols, body, req.q, req.representation()), nil
	})
}

func (h *handler) delete(w http.ResponseWriter, r *http.Request) {
	req, ok := h.prepare(w, r, "Content-Profile")
	if !ok {
		return
	}
	h.mutate(w, r, req, http.StatusOK, func(context.Context, pgx.Tx) (*sqlText, error) {
		return deleteSQL(req.rel, req.q, req.representation()), nil
	})
}

// representation reports whether the changed rows are sent back.
func (req *request) representation() bool { return req.prefs.ret == "representation" || req.single }

// mutate runs a data-changing statement built by build in a transaction
// and answers with its rows or its count. With a single object asked for,
// anything but one row rolls the change back.
func (h *handler) mutate(w http.ResponseWriter, r *http.Request, req *request, status int, build func(context.Context, pgx.Tx) (*sqlText, error)) {
	var rows []byte
	var n int64
	err := h.write(r.Context(), req.claims, func(tx pgx.Tx) error {
		if err := req.resolveEmbeds(r.Context(), tx); err != nil {
			return err
		}
		if err := h.checkColumns(r.Context(), tx, req); err != nil {
			return err
		}
		s, err := build(r.Context(), tx)
		if err != nil {
			return err
		}
		req.tables = s.tables
		if err := queryPair(r.Context(), tx, s, &rows, &n); err != nil {
			return err
		}
		if req.single && n != 1 {
			return errRESTSingle.With(fmt.Sprintf("The result contains %d rows", n))
		}
		return nil
	})
	if err != nil {
		h.fail(w, req, err)
		return
	}
	w.Header().Set("Content-Range", contentRange(0, n, -1))
	if !req.representation() {
		if status == http.StatusOK {
			status = http.StatusNoContent
		}
		w.WriteHeader(status)
		return
	}
	h.answer(w, r, req, status, rows, n, false)
}

// answer writes rows (a JSON array of n rows) as an array or, when a
// single object was asked for, as that object.
func (h *handler) answer(w http.ResponseWriter, r *http.Request, req *request, status int, rows []byte, n int64, checkSingle bool) {
	if req.single {
		if checkSingle && n != 1 {
			api.WriteError(w, errRESTSingle.With(fmt.Sprintf("The result contains %d rows", n)))
			return
		}
		rows = unwrapArray(rows)
		w.Header().Set("Content-Type", mediaSingleObject+"; charset=utf-8")
	} else {
		w.Header().Set("Content-Type", restContentTypeOut)
	}
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(rows)
	}
}

// unwrapArray is the element of a one-element JSON array, as json_agg
// writes it.
func unwrapArray(rows []byte) []byte {
	rows = bytes.TrimSpace(rows)
	return bytes.TrimSuffix(bytes.TrimPrefix(rows, []byte("[")), []byte("]"))
}

// queryPair runs s, which answers one row of (JSON text, count).
func queryPair(ctx context.Context, tx pgx.Tx, s *sqlText, rows *[]byte, n *int64) error {
	var text string
	args := append([]any{pgx.QueryExecModeExec}, s.args...)
	if err := tx.QueryRow(ctx, s.b.String(), args...).Scan(&text, n); err != nil {
		return err
	}
	*rows = []byte(text)
	return nil
}

// write runs fn in a transaction as the claims' role, with the claims in
// request.jwt.claims (what auth.uid() and auth.jwt() read), and commits
// when fn succeeds. Its statements go unprepared (QueryExecModeExec), one
// round trip each, so connections keep nothing for the many shapes
// writes take.
func (h *handler) write(ctx context.Context, claims *auth.Claims, fn func(pgx.Tx) error) error {
	return pgrole.Tx(ctx, h.cfg.Pool, h.runAs(claims), fn)
}

// runAs is who a request with claims runs as: its role, with the role's
// own settings (its statement_timeout, say), and its claims.
func (h *handler) runAs(c *auth.Claims) pgrole.As {
	return h.cfg.Roles.As(c.Role, c.Raw)
}

// body reads a JSON request body within MaxBodyBytes; an empty one is
// empty, when that is not "", and invalid otherwise.
func (h *handler) body(w http.ResponseWriter, r *http.Request, empty string) ([]byte, bool) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			api.WriteError(w, errRESTMediaType.With(fmt.Sprintf("got %q", ct)))
			return nil, false
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		var edge *api.Error
		switch {
		case errors.As(err, &tooLarge):
			api.WriteError(w, errRESTTooLarge.With(fmt.Sprintf("the limit is %d bytes", h.cfg.MaxBodyBytes)))
		case errors.As(err, &edge): // the body did not arrive in time
			api.WriteError(w, edge)
		default:
			api.WriteError(w, errRESTBody.With("could not read the body"))
		}
		return nil, false
	}
	if len(bytes.TrimSpace(body)) == 0 && empty != "" {
		return []byte(empty), true
	}
	if !json.Valid(body) {
		api.WriteError(w, errRESTBody)
		return nil, false
	}
	return body, true
}

// rowsOf checks an insert's body (an object or an array of objects) and
// returns it as an array with the columns to insert: those of columns=,
// or the keys of the objects, which must then all have the same keys.
func rowsOf(body []byte, columns []string) ([]byte, []string, error) {
	body = bytes.TrimSpace(body)
	var objs []map[string]json.RawMessage
	if len(body) > 0 && body[0] == '{' {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(body, &obj); err != nil {
			return nil, nil, errors.New("the body must be a JSON object or an array of objects")
		}
		objs = []map[string]json.RawMessage{obj}
		body = append(append([]byte("["), body...), ']')
	} else if err := json.Unmarshal(body, &objs); err != nil {
		return nil, nil, errors.New("the body must be a JSON object or an array of objects")
	}
	for _, o := range objs {
		if o == nil {
			return nil, nil, errors.New("the body must be a JSON object or an array of objects")
		}
	}
	if len(columns) > 0 {
		return body, columns, nil
	}
	if len(objs) == 0 {
		return body, nil, nil
	}
	cols := sortedKeys(objs[0])
	if k := nulKey(cols); k != "" {
		return nil, nil, fmt.Errorf("the key %q has a NUL byte", k)
	}
	for _, o := range objs[1:] {
		if !slices.Equal(sortedKeys(o), cols) {
			return nil, nil, errors.New("all object keys must match")
		}
	}
	if len(cols) == 0 && len(objs) > 1 {
		return nil, nil, errors.New("objects without keys can only be inserted one at a time")
	}
	return body, cols, nil
}

// nulKey is the first of keys with a NUL byte, which a quoted identifier
// would drop (ti\x00tle would name title), or "".
func nulKey(keys []string) string {
	for _, k := range keys {
		if strings.IndexByte(k, 0) >= 0 {
			return k
		}
	}
	return ""
}

func sortedKeys(m map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// primaryKey lists rel's primary key columns, for an upsert without
// on_conflict.
func primaryKey(ctx context.Context, tx pgx.Tx, rel string) ([]string, error) {
	rows, err := tx.Query(ctx, `select a.attname from pg_catalog.pg_index i
		join pg_catalog.pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey)
		where i.indrelid = $1::regclass and i.indisprimary order by array_position(i.indkey, a.attnum)`,
		pgx.QueryExecModeExec, rel)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// fail answers err: the REST surface's own errors as they are, database
// errors in PostgREST's shape with its status for their SQLSTATE.
func (h *handler) fail(w http.ResponseWriter, req *request, err error) {
	var e *api.Error
	if errors.As(err, &e) {
		api.WriteError(w, e)
		return
	}
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		api.WriteError(w, &api.Error{Status: pgStatus(pg, req.claims), Code: pg.Code, Message: req.unalias(pg.Message),
			Details: nullIfEmpty(req.unalias(pg.Detail)), Hint: nullIfEmpty(req.unalias(pg.Hint))})
		return
	}
	if errors.Is(err, context.Canceled) {
		return // the client went away
	}
	h.cfg.Log.Error("rest request failed", zap.Error(err))
	api.WriteError(w, api.ErrInternal)
}

// aliasPattern is a reference to a column through one of the aliases the
// statements give their relations (_t, _t1, ...).
var aliasPattern = regexp.MustCompile(`\b_t[0-9]*\.`)

// unalias writes a database message's aliases as the tables they stand
// for, which is what the client named: column todos.titl, not _t.titl.
func (req *request) unalias(msg string) string {
	if req == nil || req.name == "" || !strings.Contains(msg, "_t") {
		return msg
	}
	return aliasPattern.ReplaceAllStringFunc(msg, func(ref string) string {
		alias := strings.TrimSuffix(ref, ".")
		if alias == "_t" {
			return req.name + "."
		}
		if t, ok := req.tables[alias]; ok {
			return t + "."
		}
		return ref
	})
}

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// pgStatus is PostgREST's HTTP status for a SQLSTATE.
func pgStatus(pg *pgconn.PgError, claims *auth.Claims) int {
	switch pg.Code {
	case "42501": // insufficient privilege
		if claims.Role == auth.RoleAnon {
			return http.StatusUnauthorized
		}
		return http.StatusForbidden
	case "42P01", "42883": // undefined table, undefined function
		return http.StatusNotFound
	case "23505", "23503", "40001", "40P01": // unique, foreign key, serialization, deadlock
		return http.StatusConflict
	case "25006": // read-only transaction
		return http.StatusMethodNotAllowed
	case "57P01": // terminated by an administrator
		return http.StatusServiceUnavailable
	}
	switch pg.Code[:2] {
	case "08", "53": // connection, resources
		return http.StatusServiceUnavailable
	case "57": // operator intervention: a statement timeout (57014), say
		return http.StatusInternalServerError
	case "XX": // internal
		return http.StatusInternalServerError
	}
	return http.StatusBadRequest // data, integrity, syntax, raised exceptions
}
