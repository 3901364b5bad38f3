package rest

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fluxbase/fluxbase/api"
	"github.com/fluxbase/fluxbase/pgrole"
)

// This file serves /rest/v1/rpc/<function>: POST with the arguments as a
// JSON object, or GET with them as query parameters (in a read-only
// transaction). Arguments are matched by name against the function's
// overloads in pg_proc and converted by PostgreSQL itself
// (json_to_record with the function's argument types), so arrays, json
// and every other type arrive as the function declares them.

var (
	errRPCNotFound  = &api.Error{Status: http.StatusNotFound, Code: "PGRST202", Message: "Could not find the function with the given arguments"}
	errRPCAmbiguous = &api.Error{Status: http.StatusMultipleChoices, Code: "PGRST203", Message: "Could not choose the best candidate function between several overloads"}
)

// function is what a call needs of one function in pg_proc.
type function struct {
	inputs    []funcArg // the input arguments, in order
	required  int       // the first required inputs have no default
	set       bool      // returns a set
	composite bool      // returns rows (a row type, a table or record)
	void      bool
	outputs   []string // the columns of the rows it returns, when known
}

// funcArg is an input argument; a variadic one takes an array (a JSON
// array in a POST, the parameter repeated in a GET), as PostgREST.
type funcArg struct {
	name, typ string
	variadic  bool
}

// lookupFunctions lists the overloads of schema.name.
func lookupFunctions(ctx context.Context, q pgx.Tx, schema, name string) ([]function, error) {
	rows, err := q.Query(ctx, `select coalesce(p.proargnames, '{}')::text[], coalesce(p.proargmodes::text[], '{}'),
	  array(select pg_catalog.format_type(t, null) from unnest(coalesce(p.proallargtypes, p.proargtypes::oid[])) with ordinality u(t, i) order by i),
	  p.pronargs - p.pronargdefaults, p.proretset,
	  rt.typtype = 'c' or p.prorettype = 'pg_catalog.record'::pg_catalog.regtype,
	  p.prorettype = 'pg_catalog.void'::pg_catalog.regtype,
	  array(select a.attname::text from pg_catalog.pg_attribute a
	        where a.attrelid = rt.typrelid and a.attnum > 0 and not a.attisdropped order by a.attnum)
	from pg_catalog.pg_proc p
	join pg_catalog.pg_namespace n on n.oid = p.pronamespace
	join pg_catalog.pg_type rt on rt.oid = p.prorettype
	where n.nspname = $1 and p.proname = $2 and p.prokind = 'f'`, pgx.QueryExecModeExec, schema, name)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (function, error) {
		var names, modes, types, outs []string
		var f function
		if err := r.Scan(&names, &modes, &types, &f.required, &f.set, &f.composite, &f.void, &f.outputs); err != nil {
			return f, err
		}
		for i, typ := range types {
			mode := "i"
			if i < len(modes) {
				mode = modes[i]
			}
			if mode == "o" || mode == "t" || mode == "b" {
				if i < len(names) {
					outs = append(outs, names[i])
				}
			}
			if mode != "i" && mode != "b" && mode != "v" {
				continue // an output column
			}
			a := funcArg{typ: typ, variadic: mode == "v"}
			if i < len(names) {
				a.name = names[i]
			}
			f.inputs = append(f.inputs, a)
		}
		if len(f.outputs) == 0 && f.composite {
			f.outputs = outs // a record of OUT or TABLE arguments; none for a bare record
		}
		return f, nil
	})
}

// accepts reports whether f can be called with exactly the named args.
func (f *function) accepts(args map[string]json.RawMessage) bool {
	given := 0
	for i, a := range f.inputs {
		if _, ok := args[a.name]; ok && a.name != "" {
			given++
		} else if i < f.required {
			return false
		}
	}
	return given == len(args)
}

// inputNames are the names any overload takes, for telling a GET's
// arguments from its filters: true for a variadic argument.
func inputNames(fs []function) map[string]bool {
	names := map[string]bool{}
	for _, f := range fs {
		for _, a := range f.inputs {
			if a.name != "" {
				names[a.name] = names[a.name] || a.variadic
			}
		}
	}
	return names
}

func (h *handler) rpc(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "fn")
	if strings.IndexByte(name, 0) >= 0 {
		api.WriteError(w, errRESTParse.With(fmt.Sprintf("the name %q has a NUL byte", name)))
		return
	}
	get := r.Method == http.MethodGet
	profile := "Content-Profile"
	if get {
		profile = "Accept-Profile"
	}
	schema, e := h.schemaOf(r, profile)
	if e != nil {
		api.WriteError(w, e)
		return
	}
	body := []byte("{}")
	if !get {
		var ok bool
		if body, ok = h.body(w, r, "{}"); !ok {
			return
		}
	}
	var out []byte
	var n int64
	var called function
	var req *request
	call := func(tx pgx.Tx) error {
		fs, err := lookupFunctions(r.Context(), tx, schema, name)
		if err != nil {
			return err
		}
		query := r.URL.RawQuery
		args := map[string]json.RawMessage{}
		if get {
			query, args = splitArgs(query, inputNames(fs))
		} else if err := json.Unmarshal(body, &args); err != nil || args == nil {
			return errRESTBody.With("the arguments must be a JSON object")
		}
		var e *api.Error
		if req, e = h.newRequest(r, schema, name, query); e != nil {
			return e
		}
		var match []function
		for _, f := range fs {
			if f.accepts(args) {
				match = append(match, f)
			}
		}
		switch len(match) {
		case 0:
			return errRPCNotFound.With(fmt.Sprintf("%s.%s(%s)", schema, name, strings.Join(slices.Sorted(maps.Keys(args)), ", ")))
		case 1:
		default:
			return errRPCAmbiguous
		}
		called = match[0]
		if !called.composite && (len(req.q.where) > 0 || len(req.q.order) > 0 || req.q.selects != nil) {
			return errRESTParse.With("filters, order and select apply only to functions that return rows")
		}
		if err := req.resolveEmbeds(r.Context(), tx); err != nil {
			return err
		}
		if err := h.checkCallColumns(r.Context(), tx, req, called); err != nil {
			return err
		}
		raw, _ := json.Marshal(args)
		return queryPair(r.Context(), tx, callSQL(req.rel, called, args, raw, req.q, h.capRows(req.q.limit)), &out, &n)
	}
	var err error
	if get {
		as := h.runAs(api.Claims(r))
		as.ReadOnly = true
		err = h.onReader(func(pool *pgxpool.Pool) error { return pgrole.Tx(r.Context(), pool, as, call) })
	} else {
		err = h.write(r.Context(), api.Claims(r), call)
	}
	if err != nil {
		h.fail(w, &request{claims: api.Claims(r)}, err)
		return
	}
	req.applyPreferences(w)
	switch {
	case called.void:
		w.WriteHeader(http.StatusNoContent)
	case called.set:
		w.Header().Set("Content-Range", contentRange(req.q.offset, n, -1))
		h.answer(w, r, req, http.StatusOK, out, n, true)
	case called.composite: // one row, as an object
		out = unwrapArray(out)
		if n == 0 {
			out = []byte("null")
		}
		fallthrough
	default: // one value
		w.Header().Set("Content-Type", restContentTypeOut)
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(out)
	}
}

// checkCallColumns is checkColumns for a call: the names read from the
// function's rows must be its output columns (when the catalog tells them:
// a bare record's are unknown), those of embedded resources their
// tables'.
func (h *handler) checkCallColumns(ctx context.Context, db rowsQuerier, req *request, f function) error {
	need := req.q.namedColumns(req.name)
	own := need[req.name]
	delete(need, req.name)
	if len(f.outputs) > 0 {
		for _, c := range own {
			if !slices.Contains(f.outputs, c) {
				return errUndefinedColumn(req.name, c)
			}
		}
	}
	if len(need) == 0 {
		return nil
	}
	return h.columns.check(ctx, db, req.schema, need)
}

// splitArgs takes a GET call's arguments out of its query string: the
// parameters named like an input of the function (names, true for a
// variadic one, whose repeated values make its array). Their values are
// text, which PostgreSQL reads as the argument's type.
func splitArgs(raw string, names map[string]bool) (string, map[string]json.RawMessage) {
	args := map[string]json.RawMessage{}
	lists := map[string][]string{}
	var rest []string
	for part := range strings.SplitSeq(raw, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		key, err1 := url.QueryUnescape(k)
		val, err2 := url.QueryUnescape(v)
		variadic, input := names[key]
		switch {
		case err1 != nil || err2 != nil || !input:
			rest = append(rest, part)
		case variadic:
			lists[key] = append(lists[key], val)
		default:
			args[key], _ = json.Marshal(val)
		}
	}
	for key, vals := range lists {
		args[key], _ = json.Marshal(vals)
	}
	return strings.Join(rest, "&"), args
}

// callSQL calls f with the given args (raw is them as one JSON object),
// converted to the argument types by json_to_record; a function returning
// a set answers at most limit rows (none when negative).
func callSQL(fn string, f function, args map[string]json.RawMessage, raw []byte, q *restQuery, limit int) *sqlText {
	s := newSQL(q)
	var from strings.Builder
	var defs, call []string
	for _, a := range f.inputs {
		if _, ok := args[a.name]; !ok || a.name == "" {
			continue
		}
		defs = append(defs, quoteIdent(a.name)+" "+a.typ)
		arg := quoteIdent(a.name) + " := _a." + quoteIdent(a.name)
		if a.variadic {
			arg = "variadic " + arg // named notation passes the array itself
		}
		call = append(call, arg)
	}
	if len(defs) > 0 {
		from.WriteString("pg_catalog.json_to_record(" + s.param(string(raw), "json") + ") as _a(" + strings.Join(defs, ", ") + "), lateral ")
	}
	from.WriteString(fn + "(" + strings.Join(call, ", ") + ")")
	switch {
	case f.composite:
		s.aggregate(q.selects, from.String(), func() {
			s.where(q.where)
			s.orderBy(q.order)
			s.page(limit, q.offset)
		})
	case f.set:
		s.w("select coalesce(json_agg(_s._v), '[]')::text, count(*) from (select _t as _v from ", from.String(), " _t")
		s.page(limit, q.offset)
		s.w(") _s")
	case f.void:
		s.w("select 'null', count(*) from ", from.String(), " _t")
	default:
		s.w("select pg_catalog.to_json(_t)::text, 1::int8 from ", from.String(), " _t")
	}
	return s
}
