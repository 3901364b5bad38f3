package replication

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fluxbase/fluxbase/change"
	"github.com/fluxbase/fluxbase/internal/pgtest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// sessionSettings make a decoding session print values the way the reader's
// replication connection asks for them (see replicationParams).
var sessionSettings = []string{
	"set timezone = 'UTC'",
	"set datestyle = 'ISO, MDY'",
	"set intervalstyle = 'postgres'",
	"set extra_float_digits = 3",
	"set bytea_output = 'hex'",
}

// collector is a sink that keeps everything.
type collector struct {
	events    []event
	commits   []commitInfo
	positions []change.LSN
}

func (c *collector) event(ev event) error        { c.events = append(c.events, ev); return nil }
func (c *collector) commit(ci commitInfo) error  { c.commits = append(c.commits, ci); return nil }
func (c *collector) position(l change.LSN) error { c.positions = append(c.positions, l); return nil }

// goldenScenario is DDL, then statements whose changes are decoded.
type goldenScenario struct {
	name  string
	setup []string
	run   []string
}

var goldenScenarios = []goldenScenario{
	{
		name: "types",
		setup: []string{
			`create type mood as enum ('sad', 'ok', 'happy')`,
			`create domain posint as int4 check (value > 0)`,
			`create domain email as text`,
			`create table everything (
				id bigint primary key,
				i2 int2, i4 int4, i8 int8, f4 float4, f8 float8,
				n numeric, n_big numeric, n_scale numeric(10,2), n_nan numeric,
				b bool, t text, vc varchar(20), c char(3), u uuid,
				j json, jb jsonb,
				ts timestamp, tstz timestamptz, d date, tm time, tmtz timetz, iv interval,
				by bytea, m mood, p posint, e email,
				ia int4[], ta text[], ia2 int4[], ia_lb int4[], ma mood[], ja jsonb[],
				tsa timestamptz[], ba bool[], na numeric[], bya bytea[], pa posint[],
				ip inet, money money, bx box[]
			)`,
		},
		run: []string{
			`insert into everything values (
				1,
				-32768, 2147483647, 9223372036854775807, 1.5, 0.1,
				'12.5', '123456789012345678901234567890.123', '1.50', 'NaN',
				true, e'line\nbreak "quoted" \\ tab\t é ✓', 'varchar', 'ab', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
				'{"a": [1, 2, {"b": null}], "s": "x"}', '{"k": 1, "arr": [true, false], "nested": {"deep": "v"}}',
				'2024-02-29 13:14:15.123456', '2024-02-29 13:14:15.5+05:30', '2024-02-29', '13:14:15', '13:14:15+02', '1 year 2 mons 3 days 04:05:06.5',
				'\x00ff10', 'happy', 42, 'a@b.c',
				'{1,2,NULL,4}', '{"plain","with space","with,comma","with\"quote","with\\backslash",NULL,"NULL",""}', '{{1,2},{3,4}}', '[0:1]={7,8}', '{sad,happy}', array['{"x": 1}'::jsonb, '[1, 2]'],
				array['2024-01-01 00:00:00+00'::timestamptz, null], '{t,f}', '{1.5,NaN,12345678901234567890}', array['\x01'::bytea, '\x'], '{1,2}',
				'192.168.0.1/24', 12.34, array[box '((0,0),(1,1))', box '((2,2),(3,3))']
			)`,
			`insert into everything (id) values (2)`,
			`insert into everything (id, f4, f8, tstz, ts, d) values (3, 'NaN', '-Infinity', 'infinity', '-infinity', '0044-03-15 BC')`,
			`insert into everything (id, f8, n, ia, ta) values (4, 1e-7, '-0.000000000000001', '{}', '{}')`,
		},
	},
	{
		name: "operations",
		setup: []string{
			`create table items (id int primary key, name text, qty int)`,
			`create table notes (id int primary key, body text)`,
		},
		run: []string{
			`insert into items values (1, 'one', 10)`,
			// A transaction with several changes: tx_index 0..3, tx_last on the
			// last one only.
			`begin; insert into items values (2, 'two', 20); update items set qty = 11 where id = 1;
			  insert into notes values (1, 'note'); delete from items where id = 2; commit`,
			// Default replica identity: an update that keeps the key sends no
			// old row; one that changes the key sends the old key.
			`update items set name = 'uno' where id = 1`,
			`update items set id = 100 where id = 1`,
			`delete from items where id = 100`,
			// One event per truncated table, in one transaction.
			`truncate items, notes`,
			// A rolled-back transaction leaves nothing.
			`begin; insert into items values (999, 'never', 0); rollback`,
		},
	},
	{
		name: "identity",
		setup: []string{
			`create table full_t (id int primary key, a text, b int)`,
			`alter table full_t replica identity full`,
			`create table idx_t (id int primary key, code text not null, v int)`,
			`create unique index idx_t_code on idx_t (code)`,
			`alter table idx_t replica identity using index idx_t_code`,
			`create table nopk (a int, b text)`,
			`alter table nopk replica identity full`,
		},
		run: []string{
			`insert into full_t values (1, 'x', 1)`,
			`update full_t set b = 2 where id = 1`,
			`delete from full_t where id = 1`,
			`insert into idx_t values (1, 'c1', 1)`,
			`update idx_t set code = 'c2' where id = 1`,
			`delete from idx_t where id = 1`,
			`insert into nopk values (1, 'no key')`,
			`delete from nopk`,
		},
	},
	{
		name: "toast",
		setup: []string{
			`create table docs (id int primary key, title text, body text)`,
			`create table docs_full (id int primary key, title text, body text)`,
			`alter table docs_full replica identity full`,
			// Stored out of line and uncompressed, so a long value is TOASTed.
			`alter table docs alter column body set storage external`,
			`alter table docs_full alter column body set storage external`,
		},
		run: []string{
			`insert into docs values (1, 'short', repeat('x', 3000))`,
			`update docs set title = 'renamed' where id = 1`,
			`insert into docs_full values (1, 'short', repeat('y', 3000))`,
			`update docs_full set title = 'renamed' where id = 1`,
		},
	},
	{
		name: "ddl",
		setup: []string{
			`create table evolving (id int primary key, a text)`,
		},
		run: []string{
			`insert into evolving values (1, 'before')`,
			`alter table evolving add column b int default 7`,
			`insert into evolving values (2, 'added', 8)`,
			`alter table evolving drop column a`,
			`insert into evolving values (3, 9)`,
			`alter table evolving alter column b type bigint`,
			`update evolving set b = 10 where id = 3`,
		},
	},
}

// decodeScenario runs a scenario on a fresh database and decodes its
// changes through pg_logical_slot_get_binary_changes, the same pgoutput the
// reader streams, so the decoder is tested without the read loop.
func decodeScenario(t *testing.T, sc goldenScenario) *collector {
	t.Helper()
	ctx := context.Background()
	url := pgtest.NewDB(t)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	// The test cluster commits asynchronously, and decoding stops at the
	// WAL flush pointer: commit synchronously so every change is decodable.
	for _, s := range append([]string{"set synchronous_commit = on"}, append(sc.setup,
		`create publication p for tables in schema public`,
		`select pg_create_logical_replication_slot('`+slotFor(url)+`', 'pgoutput')`)...) {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	for _, s := range sc.run {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	for _, s := range sessionSettings {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	rows, err := conn.Query(ctx, `select lsn::text, data from pg_logical_slot_get_binary_changes('`+slotFor(url)+`', null, null,
		'proto_version', '1', 'publication_names', 'p', 'messages', 'true')`)
	if err != nil {
		t.Fatal(err)
	}
	type msg struct {
		lsn  string
		data []byte
	}
	msgs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (msg, error) {
		var m msg
		err := r.Scan(&m.lsn, &m.data)
		return m, err
	})
	if err != nil {
		t.Fatal(err)
	}
	side, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer side.Close(ctx)
	out := &collector{}
	d := newDecoder(newTypeCache(catalogTypeLookup(side)), out, nil)
	d.lookupPK = catalogPKLookup(side)
	for _, m := range msgs {
		lsn, err := change.ParseLSN(m.lsn)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.decode(ctx, lsn, m.data); err != nil {
			t.Fatalf("decode %q at %s: %v", m.data, m.lsn, err)
		}
	}
	return out
}

func TestGolden(t *testing.T) {
	for _, sc := range goldenScenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			out := decodeScenario(t, sc)
			changes := checkEvents(t, out.events)
			compareGolden(t, sc.name, changes)
		})
	}
}

// checkEvents decodes events, checks each against its envelope (position,
// subject) and the encoding round trip, then checks the transactions.
func checkEvents(t *testing.T, events []event) []change.Event {
	t.Helper()
	var changes []change.Event
	for i, ev := range events {
		if !json.Valid(ev.data) {
			t.Fatalf("event %d is not valid JSON: %s", i, ev.data)
		}
		var c change.Event
		if err := json.Unmarshal(ev.data, &c); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if again := c.AppendJSON(nil); !bytes.Equal(again, ev.data) {
			t.Fatalf("event %d does not survive a decode/encode round trip:\n%s\n%s", i, ev.data, again)
		}
		if c.Position() != ev.pos || ev.subject != change.Subject(c.Schema, c.Table, string(c.Op)) {
			t.Fatalf("event %d: pos %v subject %s, change says %v %s.%s.%s", i, ev.pos, ev.subject, c.Position(), c.Schema, c.Table, c.Op)
		}
		changes = append(changes, c)
	}
	checkTransactions(t, changes)
	return changes
}

// checkTransactions asserts what golden files mask: commit order, the
// transaction fields and tx_index/tx_last.
func checkTransactions(t *testing.T, changes []change.Event) {
	t.Helper()
	for i, c := range changes {
		if c.XID == 0 || c.CommitTS.IsZero() || c.LSN == 0 || c.LSN > c.CommitLSN {
			t.Fatalf("change %d: xid %d commit_ts %v lsn %s commit_lsn %s", i, c.XID, c.CommitTS, c.LSN, c.CommitLSN)
		}
		if i == 0 {
			if c.TxIndex != 0 {
				t.Fatalf("first change has tx_index %d", c.TxIndex)
			}
			continue
		}
		prev := changes[i-1]
		sameTx := prev.CommitLSN == c.CommitLSN
		switch {
		case sameTx && (prev.TxLast || c.TxIndex != prev.TxIndex+1 || c.XID != prev.XID || c.LSN < prev.LSN || !c.CommitTS.Equal(prev.CommitTS)):
			t.Fatalf("change %d breaks its transaction: %+v after %+v", i, c.Position(), prev.Position())
		case !sameTx && (!prev.TxLast || c.TxIndex != 0 || c.CommitLSN < prev.CommitLSN):
			t.Fatalf("change %d starts a transaction badly: %+v (tx_last before: %v)", i, c.Position(), prev.TxLast)
		}
	}
	if n := len(changes); n > 0 && !changes[n-1].TxLast {
		t.Fatal("last change is not tx_last")
	}
}

// compareGolden masks the fields that differ from run to run (LSNs, xid,
// commit time) and compares with testdata/golden/<name>.json.
func compareGolden(t *testing.T, name string, changes []change.Event) {
	t.Helper()
	var buf bytes.Buffer
	buf.WriteString("[\n")
	for i, c := range changes {
		c.CommitLSN, c.LSN, c.XID, c.CommitTS = 0, 0, 0, time.Time{}
		buf.WriteString("  ")
		if err := json.Indent(&buf, c.AppendJSON(nil), "  ", "  "); err != nil {
			t.Fatal(err)
		}
		if i < len(changes)-1 {
			buf.WriteString(",")
		}
		buf.WriteString("\n")
	}
	buf.WriteString("]\n")
	path := filepath.Join("testdata", "golden", name+".json")
	if *update {
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(want, buf.Bytes()) {
		t.Errorf("%s differs from the decoded changes (run with -update after checking):\n%s", path, diffLines(string(want), buf.String()))
	}
}

// diffLines shows the first lines that differ.
func diffLines(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	shown := 0
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			b.WriteString("line " + itoa(i+1) + ":\n  want " + wl + "\n  got  " + gl + "\n")
			if shown++; shown == 10 {
				break
			}
		}
	}
	return b.String()
}

func itoa(i int) string { return strconv.Itoa(i) }

// slotFor names a test slot after the test's database: slot names are
// cluster-wide, databases are per test.
func slotFor(dbURL string) string {
	u, err := url.Parse(dbURL)
	if err != nil {
		panic(err)
	}
	return "s_" + strings.TrimPrefix(u.Path, "/")
}
