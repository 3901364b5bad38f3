package realtime

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/fluxbase/fluxbase/broker/fanout"
)

// benchUsers is how many distinct users (claims groups) the benchmarks
// check at once.
const benchUsers = 10000

// benchSQL makes public.msgs, 100,000 rows in 10,001 rooms; each of the
// 10,000 users is a member of room 1 and of a room of its own, and owns
// the rows of its room. Rows 10001 to 10005 are in room 1 and public.
const benchSQL = msgsSQL + `
insert into public.members select 1, ('00000000-0000-0000-0000-' || lpad(n::text, 12, '0'))::uuid
  from generate_series(1, 10000) n;
insert into public.members select n + 1, ('00000000-0000-0000-0000-' || lpad(n::text, 12, '0'))::uuid
  from generate_series(1, 10000) n;
insert into public.msgs (id, room_id, owner, body)
  select n, 1 + n % 10001, ('00000000-0000-0000-0000-' || lpad((n % 10001)::text, 12, '0'))::uuid, 'hello'
  from generate_series(1, 100000) n;
update public.msgs set visibility = 'public', room_id = 1 where id between 10001 and 10005;
analyze public.msgs, public.members;
create policy member on public.msgs for select to authenticated
  using (exists (select 1 from public.members m where m.room_id = msgs.room_id and m.user_id = auth.uid()));
create policy owner on public.msgs for select to authenticated
  using (owner = auth.uid() or visibility = 'public');
`

var benchPolicies = []string{"member", "owner"}

// usePolicy leaves only the named policy of benchSQL in force.
func usePolicy(b *testing.B, az *pgAuthorizer, name string) {
	ctx := context.Background()
	if _, err := az.pool.Exec(ctx, `alter table public.msgs disable row level security`); err != nil {
		b.Fatal(err)
	}
	for _, p := range benchPolicies {
		if p != name {
			if _, err := az.pool.Exec(ctx, `drop policy if exists `+p+` on public.msgs`); err != nil {
				b.Fatal(err)
			}
		}
	}
	if _, err := az.pool.Exec(ctx, `alter table public.msgs enable row level security`); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkVisibleMany measures one VisibleMany call for 10,000 users,
// each seeing every row image, under a membership policy and an owner-or-public
// policy; ns/group is the time per claims group.
func BenchmarkVisibleMany(b *testing.B) {
	claims := make([]json.RawMessage, benchUsers)
	for n := range claims {
		claims[n] = json.RawMessage(fmt.Sprintf(`{"sub":%q,"role":"authenticated","aud":"authenticated"}`, userID(n+1)))
	}
	for _, policy := range benchPolicies {
		b.Run(policy, func(b *testing.B) {
			az := &pgAuthorizer{pool: newAuthDB(b, benchSQL)}
			usePolicy(b, az, policy)
			acc := access(b, az, "msgs")
			for _, nkeys := range []int{1, 5} {
				b.Run(fmt.Sprintf("keys=%d", nkeys), func(b *testing.B) {
					// The rows' images as the hub sends them: the columns
					// the policy reads.
					keys := storedImages(b, az.pool, fmt.Sprintf(`select jsonb_strip_nulls(to_jsonb(m)) from public.msgs m
where id between 10001 and %d order by id`, 10000+nkeys))
					for k, img := range keys {
						keys[k] = onlyColumns(b, img, acc.Policy.Columns)
					}
					ctx := context.Background()
					for b.Loop() {
						vis, err := az.VisibleMany(ctx, "authenticated", acc, claims, "public", "msgs", keys)
						if err != nil {
							b.Fatal(err)
						}
						if len(vis) != benchUsers || !vis[benchUsers-1][nkeys-1] {
							b.Fatal("a user does not see a row it may read")
						}
					}
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchUsers), "ns/group")
				})
			}
		})
	}
}

// BenchmarkHubRowLevelSecurity measures the hub dispatching a batch of 1
// or 5 inserts to 10,000 subscribers, each a different user under the
// membership policy, with the default chunks and parallelism on a pool of
// 4 connections: the row-level checks, encoding and queueing together.
func BenchmarkHubRowLevelSecurity(b *testing.B) {
	pool := newAuthDB(b, benchSQL)
	az := &pgAuthorizer{pool: pool}
	usePolicy(b, az, "member")
	h := fanout.New(fanout.Config{QueueFrames: 1 << 20, QueueBytes: 1 << 30}, nil, nil, az, nil)
	defer h.Close()
	clients := make([]*fanout.Client, benchUsers)
	for n := range clients {
		clients[n] = h.NewClient(fanout.V2)
		_, err := clients[n].Join(fanout.JoinSpec{Topic: "realtime:room-1",
			Changes: []fanout.Binding{{ID: 1, Event: "*", Schema: "public", Table: "msgs"}},
			Auth:    fanout.Auth{Role: "authenticated", Claims: json.RawMessage(fmt.Sprintf(`{"sub":%q,"role":"authenticated"}`, userID(n+1)))}})
		if err != nil {
			b.Fatal(err)
		}
	}
	ctx := context.Background()
	var seq uint64
	for _, nchanges := range []int{1, 5} {
		b.Run(fmt.Sprintf("changes=%d", nchanges), func(b *testing.B) {
			var frames []fanout.Frame
			delivered := 0
			for b.Loop() {
				batch := make([]fanout.Msg, nchanges)
				for k := range batch {
					seq++
					batch[k] = fanout.Msg{Seq: seq, Data: msgsChange(10001+k, 1, userID(0), "public")}
				}
				h.Dispatch(ctx, batch)
				b.StopTimer()
				for _, c := range clients {
					frames = c.Queue.Take(frames)
					delivered += len(frames)
				}
				b.StartTimer()
			}
			if delivered != b.N*nchanges*benchUsers {
				b.Fatalf("%d deliveries, want %d", delivered, b.N*nchanges*benchUsers)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchUsers), "ns/group")
			b.ReportMetric(float64(delivered)/b.Elapsed().Seconds(), "deliveries/s")
		})
	}
}

// onlyColumns is the image img with only the columns cols.
func onlyColumns(b *testing.B, img json.RawMessage, cols []string) json.RawMessage {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(img, &m); err != nil {
		b.Fatal(err)
	}
	out := map[string]json.RawMessage{}
	for _, c := range cols {
		if v, ok := m[c]; ok {
			out[c] = v
		}
	}
	js, err := json.Marshal(out)
	if err != nil {
		b.Fatal(err)
	}
	return js
}
