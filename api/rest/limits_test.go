package rest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/fluxbase/fluxbase/api"
	"github.com/fluxbase/fluxbase/auth"
	"github.com/fluxbase/fluxbase/internal/apitest"
	"github.com/fluxbase/fluxbase/pgrole"
)

// This file holds the tests of the REST surface's limits: statement
// timeouts by role, the row cap, streamed answers, the grammar's bounds,
// body deadlines, and the wrong answers found beside them.

// limitsEnv is the surface over a database made with setup, served
// behind the real edge with a readiness check on the pool.
type limitsEnv struct {
	*restEnv
}

func newLimitsEnv(t *testing.T, setup string, cfg Config, edge api.Config) *limitsEnv {
	t.Helper()
	pool := apitest.NewDB(t, setup)
	return newLimitsEnvOn(t, pool, cfg, edge)
}

func newLimitsEnvOn(t *testing.T, pool *pgxpool.Pool, cfg Config, edge api.Config) *limitsEnv {
	t.Helper()
	if cfg.Pool == nil {
		cfg.Pool = pool
	}
	if cfg.Roles == nil {
		roles, err := pgrole.LoadRoles(context.Background(), pool)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Roles = roles
	}
	edge.Surfaces = []api.Surface{New(cfg)}
	edge.Checks = append(edge.Checks, api.NamedCheck{Name: "database", Check: func(ctx context.Context) error { return pool.Ping(ctx) }})
	srv := httptest.NewServer(api.New(edge, apitest.Verifier(t), zap.NewNop(), prometheus.NewRegistry()))
	t.Cleanup(srv.Close)
	return &limitsEnv{&restEnv{srv: srv, pool: pool, anon: apitest.Key(t, auth.RoleAnon), service: apitest.Key(t, auth.RoleServiceRole)}}
}

// boundedClient gives up on a request after d, so that a test of a
// server that hangs fails instead of hanging.
func boundedClient(d time.Duration) *http.Client { return &http.Client{Timeout: d} }

func (e *limitsEnv) get(t *testing.T, c *http.Client, path, key string) (restResp, error) {
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+path, nil)
	req.Header.Set("apikey", key)
	resp, err := c.Do(req)
	if err != nil {
		return restResp{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return restResp{status: resp.StatusCode, header: resp.Header, body: b}, err
}

// Finding 6: four anonymous requests with a regular expression that takes
// minutes held every connection of the pool, so nothing else (readiness
// included) was answered. Now the anon role's statement_timeout (3 s,
// from the migrations, applied to each request's transaction) cancels
// them: each answers 57014 as PostgREST does, gives its connection back,
// and the requests queued behind them are answered.
func TestRESTStatementTimeoutFreesThePool(t *testing.T) {
	t.Parallel()
	pool := apitest.NewDB(t, `
create table slow (id int primary key, s text);
grant select on slow to anon;
insert into slow select 1, string_agg(md5(g::text), '') from generate_series(1, 100) g;`)
	cfg := pool.Config()
	cfg.MaxConns = 4
	small, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(small.Close)
	e := newLimitsEnvOn(t, small, Config{}, api.Config{ReadyTimeout: 60 * time.Second})
	client := boundedClient(60 * time.Second)

	// The expression backtracks for minutes on the 3,200 characters.
	const slowPath = `/rest/v1/slow?select=id&s=match.(.{2,})(.*)%5C1%5C2%5C1`
	var wg sync.WaitGroup
	slowResults := make([]restResp, small.Config().MaxConns)
	slowErrs := make([]error, len(slowResults))
	for i := range slowResults {
		wg.Add(1)
		go func() {
			defer wg.Done()
			slowResults[i], slowErrs[i] = e.get(t, client, slowPath, e.anon)
		}()
	}
	// Every connection is taken before the others ask.
	deadline := time.Now().Add(30 * time.Second)
	for small.Stat().AcquiredConns() < small.Config().MaxConns && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := small.Stat().AcquiredConns(); n < small.Config().MaxConns {
		t.Fatalf("%d of %d connections taken by the slow requests", n, small.Config().MaxConns)
	}
	ready, readyErr := e.get(t, client, "/ready", e.anon)
	read, readErr := e.get(t, client, "/rest/v1/slow?select=id", e.anon)
	wg.Wait()
	for i, r := range slowResults {
		if slowErrs[i] != nil {
			t.Fatalf("slow request %d: %v", i, slowErrs[i])
		}
		if r.status != http.StatusInternalServerError || r.code(t) != "57014" {
			t.Errorf("slow request %d: status %d body %s, want 500 57014", i, r.status, r.body)
		}
	}
	if readyErr != nil || ready.status != http.StatusOK {
		t.Errorf("/ready behind the slow requests: %v, status %d %s", readyErr, ready.status, ready.body)
	}
	if readErr != nil || read.status != http.StatusOK || string(read.body) != `[{"id":1}]` {
		t.Errorf("a read behind the slow requests: %v, status %d %s", readErr, read.status, read.body)
	}
	if n := small.Stat().AcquiredConns(); n != 0 {
		t.Errorf("%d connections still taken after every answer", n)
	}
}

// Finding 7, the cap: a read answers at most MaxRows rows (PostgREST's
// db-max-rows; Supabase's default is 1000), whatever limit, Range or
// offset it asks for, and Content-Range says which rows those are; an rpc
// returning rows is capped too.
func TestRESTMaxRows(t *testing.T) {
	t.Parallel()
	e := newLimitsEnv(t, `
create table many (id int primary key);
grant select on many to anon;
insert into many select g from generate_series(1, 2500) g;
create function many_rows() returns setof many language sql stable as 'select * from many order by id';
create function many_ids() returns setof int language sql stable as 'select id from many order by id';`, Config{}, api.Config{})
	cases := []struct {
		path, prefer, rangeHeader string
		status                    int
		rows                      int
		contentRange              string
	}{
		{"/many?order=id", "", "", 200, 1000, "0-999/*"},
		{"/many?order=id", "count=exact", "", 206, 1000, "0-999/2500"},
		{"/many?order=id&limit=5000", "", "", 200, 1000, "0-999/*"},
		{"/many?order=id&limit=10", "", "", 200, 10, "0-9/*"},
		{"/many?order=id&offset=2000", "count=exact", "", 206, 500, "2000-2499/2500"},
		{"/many?order=id", "", "0-9223372036854775807", 200, 1000, "0-999/*"},
		{"/many?order=id", "", "100-", 200, 1000, "100-1099/*"},
		{"/rpc/many_rows?order=id", "", "", 200, 1000, "0-999/*"},
		{"/rpc/many_ids", "", "", 200, 1000, "0-999/*"},
	}
	for _, c := range cases {
		h := []string{}
		if c.prefer != "" {
			h = append(h, "Prefer", c.prefer)
		}
		if c.rangeHeader != "" {
			h = append(h, "Range", c.rangeHeader)
		}
		r := e.do(t, "GET", c.path, e.anon, "", h...)
		var rows []any
		if err := json.Unmarshal(r.body, &rows); err != nil {
			t.Errorf("%s: status %d body %.200s", c.path, r.status, r.body)
			continue
		}
		if r.status != c.status || len(rows) != c.rows || r.header.Get("Content-Range") != c.contentRange {
			t.Errorf("%s %s %s: status %d, %d rows, Content-Range %q; want %d, %d rows, %q",
				c.path, c.prefer, c.rangeHeader, r.status, len(rows), r.header.Get("Content-Range"), c.status, c.rows, c.contentRange)
		}
	}
}

// Finding 7, the memory: a read's rows are copied to the response as
// PostgreSQL sends them, so serving an answer of 64 MiB allocates a small
// part of it, not the answer two or three times over.
func TestRESTReadIsStreamed(t *testing.T) { // not parallel: it reads the process's allocation counter
	const rows, width = 4096, 16 << 10
	e := newLimitsEnv(t, fmt.Sprintf(`
create table big (id int primary key, body text);
insert into big select g, repeat('x', %d) from generate_series(1, %d) g;`, width, rows), Config{MaxRows: -1}, api.Config{})
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/rest/v1/big?select=id,body&order=id", nil)
	req.Header.Set("apikey", e.service) // no statement timeout: streaming under -race outlasts anon's
	req.Header.Set("Accept-Encoding", "identity")
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	resp, err := boundedClient(2 * time.Minute).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	// The client counts the bytes and the rows' objects without holding
	// them, so the allocations measured are the server's.
	var body objectCounter
	_, err = io.Copy(&body, resp.Body)
	resp.Body.Close()
	runtime.ReadMemStats(&after)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("status %d: %v", resp.StatusCode, err)
	}
	if body.objects != rows || body.bytes < rows*width || body.first != '[' || body.last != ']' {
		t.Fatalf("%d objects in %d bytes, from %q to %q; want %d rows of %d bytes in an array", body.objects, body.bytes, body.first, body.last, rows, width)
	}
	// Buffered, the server held the answer three times over: as
	// PostgreSQL's one value, as a string and as bytes. Streamed, it
	// reuses pgx's pooled buffers, of which the race detector makes the
	// pool drop a share.
	alloc, bound := after.TotalAlloc-before.TotalAlloc, uint64(body.bytes)/16
	if raceEnabled {
		bound = uint64(body.bytes)
	}
	if alloc > bound {
		t.Errorf("serving %d MiB allocated %d MiB", body.bytes>>20, alloc>>20)
	}
	t.Logf("serving %d MiB allocated %d KiB", body.bytes>>20, alloc>>10)
}

// A read that fails after its status and first rows were sent (its
// statement timeout passes while the client is slow to read) cuts the
// connection: the client never gets a 200 with an array that merely ends
// early. Failing before, it answers the error as usual.
func TestRESTStreamFailureCutsTheAnswer(t *testing.T) {
	t.Parallel()
	pool := apitest.NewDB(t, `
create table wide (id int primary key, body text);
grant select on wide to anon;
insert into wide select g, repeat('y', 16384) from generate_series(1, 4096) g;
do $$ begin execute format('alter role anon in database %I set statement_timeout = %L', current_database(), '1s'); end $$;`)
	e := newLimitsEnvOn(t, pool, Config{MaxRows: -1}, api.Config{})
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/rest/v1/wide?select=id,body&order=id", nil)
	req.Header.Set("apikey", e.anon)
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := boundedClient(2 * time.Minute).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(string(b), `"57014"`) {
			t.Fatalf("status %d: %s", resp.StatusCode, b)
		}
		t.Skip("the statement timed out before its first row; nothing was streamed") // the timeout came first
	}
	time.Sleep(3 * time.Second) // longer than the statement may run: PostgreSQL blocks on the full socket
	b, err := io.ReadAll(resp.Body)
	var rows []json.RawMessage
	if err == nil && json.Unmarshal(b, &rows) == nil {
		t.Fatalf("a read cut by its statement timeout answered a whole array of %d rows", len(rows))
	}
	if err == nil {
		t.Fatalf("the body ended cleanly after %d bytes of a cut answer", len(b))
	}
}

// objectCounter counts the bytes written to it and the JSON objects they
// open (the test's rows hold no braces in their text).
type objectCounter struct {
	bytes, objects int
	first, last    byte
}

func (c *objectCounter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if c.bytes == 0 {
		c.first = p[0]
	}
	c.bytes += len(p)
	c.last = p[len(p)-1]
	c.objects += bytes.Count(p, []byte("{"))
	return len(p), nil
}

// Finding 10: the grammar is bounded (the query string's length, the
// depth of embedding and of logic trees), a request past a bound answers
// PGRST100 before anything is asked of the database, and embedded
// resources cost one catalog query per request, not one per level.
func TestRESTGrammarLimits(t *testing.T) {
	t.Parallel()
	pool := apitest.NewDB(t, `
create table a (id int primary key, parent int references a);
grant select on a to anon;
insert into a values (1, null), (2, 1), (3, 2);`)
	var mu sync.Mutex
	catalog := 0
	cfg := pool.Config()
	cfg.ConnConfig.Tracer = queryCounter(func(sql string) {
		if strings.Contains(sql, "pg_constraint") {
			mu.Lock()
			catalog++
			mu.Unlock()
		}
	})
	counted, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(counted.Close)
	e := newLimitsEnvOn(t, counted, Config{MaxEmbedDepth: 4, MaxFilterDepth: 4, MaxQueryBytes: 4096}, api.Config{})

	r := e.do(t, "GET", "/a?select=id,kids:a!parent(id,kids:a!parent(id,kids:a!parent(id)))&id=eq.1", e.anon, "")
	if r.status != 200 || string(r.body) != `[{"id":1,"kids":[{"id":2,"kids":[{"id":3,"kids":[]}]}]}]` {
		t.Fatalf("three levels: status %d %s", r.status, r.body)
	}
	if catalog != 1 {
		t.Errorf("three levels of embedding ran %d catalog queries, want 1", catalog)
	}

	deep := func(open, leaf, close string, n int) string {
		return strings.Repeat(open, n) + leaf + strings.Repeat(close, n)
	}
	for _, c := range []struct{ name, path string }{
		{"embedding past the depth", "/a?select=" + deep("a(", "id", ")", 5)},
		{"a 60 KB embedding", "/a?select=" + deep("a(", "id", ")", 20000)},
		{"logic past the depth", "/a?or=(" + deep("or(", "id.eq.1", ")", 5) + ")"},
		{"15,000 levels of logic", "/a?or=(" + deep("or(", "id.eq.1", ")", 15000) + ")"},
		{"a long query string", "/a?id=in.(" + strings.Repeat("1,", 3000) + "1)"},
	} {
		catalog = 0
		r := e.do(t, "GET", c.path, e.anon, "")
		if r.status != 400 || r.code(t) != "PGRST100" {
			t.Errorf("%s: status %d body %.300s", c.name, r.status, r.body)
		}
		if catalog != 0 {
			t.Errorf("%s: %d catalog queries before the refusal", c.name, catalog)
		}
	}
	for _, c := range []struct{ name, path string }{
		{"embedding at the depth", "/a?select=" + deep("a!parent(", "id", ")", 4)},
		{"logic at the depth", "/a?or=(" + deep("or(", "id.eq.1", ")", 3) + ")"},
	} {
		if r := e.do(t, "GET", c.path, e.anon, ""); r.status != 200 {
			t.Errorf("%s: status %d body %.300s", c.name, r.status, r.body)
		}
	}
}

// queryCounter is a pgx tracer that tells every statement's text.
type queryCounter func(sql string)

func (q queryCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	q(data.SQL)
	return ctx
}
func (q queryCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (q queryCounter) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return ctx
}
func (q queryCounter) TraceBatchQuery(_ context.Context, _ *pgx.Conn, data pgx.TraceBatchQueryData) {
	q(data.SQL)
}
func (q queryCounter) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

// Finding 12: a body that trickles in is cut at the edge's body deadline
// with 408, nothing is written, and other requests are answered
// meanwhile.
func TestRESTTricklingBodiesAreCut(t *testing.T) {
	t.Parallel()
	e := newLimitsEnv(t, restSchema, Config{}, api.Config{BodyTimeout: time.Second})
	const clients = 300
	addr := strings.TrimPrefix(e.srv.URL, "http://")
	var wg sync.WaitGroup
	statuses := make([]string, clients)
	stop := time.Now().Add(60 * time.Second) // a client that is never cut gives up here
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i] = trickle(addr, e.service, stop)
		}()
	}
	// Answered while the trickling clients wait.
	r := e.do(t, "GET", "/todos?select=id&id=eq.1", e.service, "")
	if r.status != 200 {
		t.Errorf("a read among trickling bodies: status %d %s", r.status, r.body)
	}
	wg.Wait()
	cut := 0
	for _, s := range statuses {
		if s == "408" || s == "closed" {
			cut++
		} else {
			t.Errorf("a trickling client: %s", s)
			break
		}
	}
	if cut != clients {
		t.Errorf("%d of %d trickling clients cut", cut, clients)
	}
	var n int
	if err := e.pool.QueryRow(context.Background(), "select count(*) from todos").Scan(&n); err != nil || n != 5 {
		t.Errorf("todos after the trickling inserts: %d, %v", n, err)
	}
}

// trickle posts a body one byte at a time and tells how it ended: the
// status the server answered, "closed", or what else happened.
func trickle(addr, key string, stop time.Time) string {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return "dial: " + err.Error()
	}
	defer conn.Close()
	body := `[{"title":"` + strings.Repeat("t", 200) + `"}]`
	fmt.Fprintf(conn, "POST /rest/v1/todos HTTP/1.1\r\nHost: x\r\napikey: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", key, len(body))
	answered := make(chan string, 1)
	go func() {
		_ = conn.SetReadDeadline(stop)
		line, err := bufio.NewReader(conn).ReadString('\n')
		switch {
		case err == io.EOF || err != nil && strings.Contains(err.Error(), "reset"):
			answered <- "closed"
		case err != nil:
			answered <- "read: " + err.Error()
		default:
			f := strings.Fields(line)
			if len(f) < 2 {
				answered <- "status line " + line
			} else {
				answered <- f[1]
			}
		}
	}()
	for i := 0; i < len(body); i++ {
		select {
		case s := <-answered:
			return s
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(stop) {
			break
		}
		if _, err := conn.Write([]byte{body[i]}); err != nil {
			break
		}
	}
	return <-answered
}

// The wrong answers found beside the findings, each as PostgREST answers.
func TestRESTWrongAnswers(t *testing.T) {
	t.Parallel()
	e := newLimitsEnv(t, restSchema+`
create table profiles (id bigint generated by default as identity primary key, name text, secret text);
revoke all on profiles from anon, authenticated;
grant select (id, name), insert (name) on profiles to authenticated;
grant usage on sequence profiles_id_seq to authenticated;
create function join_words(variadic words text[]) returns text language sql immutable as $$select array_to_string(words, ' ')$$;
create function count_words(sep text, variadic words text[]) returns int language sql immutable as $$select cardinality(words)$$;
create function todo_rows() returns setof todos language sql stable as 'select * from todos';
create function pairs() returns table (a int, b text) language sql immutable as $$select 1, 'one'$$;`,
		Config{MaxRows: 3}, api.Config{})
	user := userToken(t, "11111111-1111-1111-1111-111111111111")

	t.Run("return=representation under column grants", func(t *testing.T) {
		r := e.do(t, "POST", "/profiles?select=id,name", user, `{"name":"ann"}`, "Prefer", "return=representation")
		if r.status != 201 || string(r.body) != `[{"id":1,"name":"ann"}]` {
			t.Errorf("status %d body %s", r.status, r.body)
		}
		// Every column, as PostgREST: a column the role may not read is refused.
		r = e.do(t, "POST", "/profiles", user, `{"name":"bob"}`, "Prefer", "return=representation")
		if r.status != 403 || r.code(t) != "42501" {
			t.Errorf("select=*: status %d body %s", r.status, r.body)
		}
	})
	t.Run("apikey in the query is no filter", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/rest/v1/todos?select=id&order=id&limit=2&apikey="+e.anon, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != `[{"id":1},{"id":2}]` {
			t.Errorf("status %d body %s", resp.StatusCode, b)
		}
	})
	t.Run("Range without overflow", func(t *testing.T) {
		r := e.do(t, "GET", "/todos?select=id&order=id", e.service, "", "Range", "0-9223372036854775807")
		if r.status != 200 || string(r.body) != `[{"id":1},{"id":2},{"id":3}]` || r.header.Get("Content-Range") != "0-2/*" {
			t.Errorf("status %d body %s range %q", r.status, r.body, r.header.Get("Content-Range"))
		}
		r = e.do(t, "GET", "/todos?select=id&order=id", e.service, "", "Range", "9223372036854775807-9223372036854775807")
		if r.status != 200 || string(r.body) != `[]` {
			t.Errorf("the last item: status %d body %s", r.status, r.body)
		}
		r = e.do(t, "GET", "/todos?select=id", e.service, "", "Range", "0-99999999999999999999")
		if r.status != 416 || r.code(t) != "PGRST103" {
			t.Errorf("past int64: status %d body %s", r.status, r.body)
		}
	})
	t.Run("variadic functions", func(t *testing.T) {
		r := e.do(t, "POST", "/rpc/join_words", e.anon, `{"words":["a","b","c"]}`)
		if r.status != 200 || string(r.body) != `"a b c"` {
			t.Errorf("POST: status %d body %s", r.status, r.body)
		}
		r = e.do(t, "GET", "/rpc/join_words?words=a&words=b", e.anon, "")
		if r.status != 200 || string(r.body) != `"a b"` {
			t.Errorf("GET: status %d body %s", r.status, r.body)
		}
		r = e.do(t, "GET", "/rpc/count_words?sep=-&words=x", e.anon, "")
		if r.status != 200 || string(r.body) != `1` {
			t.Errorf("GET with one value: status %d body %s", r.status, r.body)
		}
	})
	t.Run("errors name the table, not an alias", func(t *testing.T) {
		for _, path := range []string{"/todos?select=titl", "/todos?titl=eq.1", "/todos?order=titl"} {
			r := e.do(t, "GET", path, e.service, "")
			var pe struct{ Code, Message string }
			_ = json.Unmarshal(r.body, &pe)
			if r.status != 400 || pe.Code != "42703" || !strings.Contains(pe.Message, "titl") || strings.Contains(string(r.body), "_t") {
				t.Errorf("%s: status %d body %s", path, r.status, r.body)
			}
		}
	})
	t.Run("a name that is not a column is refused", func(t *testing.T) {
		for _, path := range []string{"/todos?select=count", "/todos?select=row_to_json", "/todos?select=id,x:row_to_json", "/todos?order=row_to_json", "/todos?row_to_json=neq.x", "/todos?select=id&or=(count.gt.0)",
			"/rpc/todo_rows?select=count", "/rpc/todo_rows?order=row_to_json", "/rpc/pairs?select=a,row_to_json"} {
			r := e.do(t, "GET", path, e.service, "")
			if r.status != 400 || r.code(t) != "42703" {
				t.Errorf("%s: status %d body %.300s", path, r.status, r.body)
			}
		}
	})
	t.Run("the columns of a function's rows are columns", func(t *testing.T) {
		r := e.do(t, "GET", "/rpc/todo_rows?select=id&order=id&limit=1", e.service, "")
		if r.status != 200 || string(r.body) != `[{"id":1}]` {
			t.Errorf("status %d body %s", r.status, r.body)
		}
		r = e.do(t, "GET", "/rpc/pairs?select=b", e.service, "")
		if r.status != 200 || string(r.body) != `[{"b":"one"}]` {
			t.Errorf("status %d body %s", r.status, r.body)
		}
	})
	t.Run("an update's keys are columns", func(t *testing.T) {
		r := e.do(t, "PATCH", "/todos?id=eq.1", e.service, `{"row_to_json":"x"}`)
		if r.status != 400 || r.code(t) != "42703" {
			t.Errorf("status %d body %s", r.status, r.body)
		}
	})
	t.Run("NUL in a body's keys", func(t *testing.T) {
		r := e.do(t, "PATCH", "/todos?id=eq.3", e.service, `{"ti\u0000tle":"renamed"}`)
		if r.status != 400 || r.code(t) != "PGRST102" {
			t.Errorf("PATCH: status %d body %s", r.status, r.body)
		}
		r = e.do(t, "POST", "/todos", e.service, `{"ti\u0000tle":"added"}`)
		if r.status != 400 || r.code(t) != "PGRST102" {
			t.Errorf("POST: status %d body %s", r.status, r.body)
		}
		var n int
		if err := e.pool.QueryRow(context.Background(), "select count(*) from todos where title in ('renamed', 'added')").Scan(&n); err != nil || n != 0 {
			t.Errorf("%d rows written through a key with a NUL, %v", n, err)
		}
	})
	t.Run("NUL in names", func(t *testing.T) {
		for _, path := range []string{"/to%00dos", "/todos?select=ti%00tle", "/todos?ti%00tle=eq.x", "/rpc/join%00_words"} {
			r := e.do(t, "GET", path, e.service, "")
			if r.status != 400 || r.code(t) != "PGRST100" {
				t.Errorf("%s: status %d body %.300s", path, r.status, r.body)
			}
		}
	})
	t.Run("Preference-Applied once each", func(t *testing.T) {
		prefer := strings.TrimSuffix(strings.Repeat("count=exact, return=minimal, ", 1000), ", ")
		r := e.do(t, "GET", "/todos?select=id", e.service, "", "Prefer", prefer, "Prefer", "count=exact")
		got := r.header.Get("Preference-Applied")
		if strings.Count(got, "count=exact") != 1 || len(got) > 64 {
			t.Errorf("Preference-Applied %.200q", got)
		}
	})
}
