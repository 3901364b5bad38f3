// Realtime across two Fluxbase nodes with the official client. The Go test
// TestSupabaseJS starts the nodes and passes their URLs in the environment:
// FLUXBASE_A, FLUXBASE_B (base URLs), ANON_KEY, DATABASE_URL.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { createClient } from '@supabase/supabase-js'
import WebSocket from 'ws'
import pg from 'pg'

const { FLUXBASE_A, FLUXBASE_B, ANON_KEY, DATABASE_URL, USER_A_ID, USER_A_TOKEN, USER_B_ID, USER_B_TOKEN } = process.env
if (!FLUXBASE_A || !FLUXBASE_B || !ANON_KEY || !DATABASE_URL) {
  throw new Error('FLUXBASE_A, FLUXBASE_B, ANON_KEY and DATABASE_URL must be set (run through go test ./e2e -run TestSupabaseJS)')
}

const clients = []
// Node 20 has no global WebSocket: hand the client the ws package.
// token, when given, is the user's access token (the accessToken option,
// as with third-party auth: no auth/v1 session is involved).
function client(url, token) {
  const opts = {
    realtime: { transport: WebSocket, heartbeatIntervalMs: 5000 },
  }
  if (token) opts.accessToken = async () => token
  else opts.auth = { persistSession: false, autoRefreshToken: false }
  const c = createClient(url, ANON_KEY, opts)
  clients.push(c)
  return c
}

const db = new pg.Client({ connectionString: DATABASE_URL })
await db.connect()
after(async () => {
  for (const c of clients) await c.removeAllChannels()
  await db.end()
})

function subscribed(channel) {
  return new Promise((resolve, reject) => {
    channel.subscribe((status, err) => {
      if (status === 'SUBSCRIBED') resolve()
      else if (status === 'CHANNEL_ERROR' || status === 'TIMED_OUT') reject(err ?? new Error(status))
    })
  })
}

// waitFor polls cond until it holds or the time is up.
async function waitFor(what, cond, ms = 10000) {
  const end = Date.now() + ms
  while (Date.now() < end) {
    if (cond()) return
    await new Promise((r) => setTimeout(r, 25))
  }
  throw new Error(`timed out waiting for ${what}`)
}

test('a filtered subscriber on node B receives exactly the matching changes written through node A', async () => {
  const sub = client(FLUXBASE_B)
  const got = []
  const ch = sub
    .channel('todos-ann')
    .on('postgres_changes', { event: '*', schema: 'public', table: 'todos', filter: 'owner=eq.ann' }, (p) => got.push(p))
  await subscribed(ch)

  // Writes go to the database through node A's side of the world; REST
  // is not part of this test, so they are plain SQL.
  const { rows } = await db.query(`insert into todos (owner, title) values ('ann', 'write tests') returning id`)
  const annId = rows[0].id
  await db.query(`insert into todos (owner, title) values ('bob', 'not for ann')`)
  await db.query(`update todos set title = 'write more tests', done = true where id = $1`, [annId])
  await db.query(`update todos set title = 'still not for ann' where owner = 'bob'`)
  await db.query(`delete from todos where id = $1`, [annId])
  await db.query(`delete from todos where owner = 'bob'`)

  await waitFor('three changes', () => got.length >= 3)
  await new Promise((r) => setTimeout(r, 500)) // nothing else may follow
  assert.deepEqual(got.map((p) => p.eventType), ['INSERT', 'UPDATE', 'DELETE'])
  for (const p of got) {
    assert.equal(p.schema, 'public')
    assert.equal(p.table, 'todos')
    assert.match(p.commit_timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
    assert.equal(p.errors, null)
  }
  assert.deepEqual(got[0].new, { id: annId, owner: 'ann', title: 'write tests', done: false })
  assert.deepEqual(got[0].old, {})
  assert.equal(got[1].new.title, 'write more tests')
  assert.equal(got[1].new.done, true)
  assert.equal(got[1].old.title, 'write tests') // replica identity full
  assert.deepEqual(got[2].new, {})
  assert.equal(got[2].old.id, annId)
})

test('broadcast reaches a client on the other node', async () => {
  const a = client(FLUXBASE_A)
  const b = client(FLUXBASE_B)
  const got = []
  const chA = a.channel('room-1').on('broadcast', { event: 'cursor' }, (m) => got.push(m))
  await subscribed(chA)
  const chB = b.channel('room-1', { config: { broadcast: { ack: true } } })
  await subscribed(chB)
  const res = await chB.send({ type: 'broadcast', event: 'cursor', payload: { x: 10, y: 20 } })
  assert.equal(res, 'ok')
  await waitFor('the broadcast', () => got.length === 1)
  assert.deepEqual(got[0].payload, { x: 10, y: 20 })
  assert.equal(got[0].event, 'cursor')
  // The sender did not ask for self: only A got it.
  const self = []
  chB.on('broadcast', { event: 'cursor' }, (m) => self.push(m))
  await new Promise((r) => setTimeout(r, 300))
  assert.equal(self.length, 0)
})

test('presence syncs across nodes and reports leaves', async () => {
  const a = client(FLUXBASE_A)
  const b = client(FLUXBASE_B)
  const chA = a.channel('lobby', { config: { presence: { key: 'ann' } } })
  chA.on('presence', { event: 'sync' }, () => {})
  await subscribed(chA)
  assert.equal(await chA.track({ status: 'online' }), 'ok')

  const leaves = []
  const chB = b.channel('lobby', { config: { presence: { key: 'bob' } } })
  chB.on('presence', { event: 'sync' }, () => {})
  chB.on('presence', { event: 'leave' }, (l) => leaves.push(l))
  await subscribed(chB)
  assert.equal(await chB.track({ status: 'away' }), 'ok')

  await waitFor('both in B\'s state', () => Object.keys(chB.presenceState()).length === 2)
  await waitFor('both in A\'s state', () => Object.keys(chA.presenceState()).length === 2)
  assert.equal(chB.presenceState().ann[0].status, 'online')
  assert.equal(chA.presenceState().bob[0].status, 'away')

  await a.removeChannel(chA)
  await waitFor('ann\'s leave on B', () => leaves.some((l) => l.key === 'ann'))
  await waitFor('ann gone from B\'s state', () => !chB.presenceState().ann)
})

test('row-level security: each signed-in user receives only its own rows, without unreadable columns', { skip: !USER_A_TOKEN && 'no user tokens given' }, async () => {
  const a = client(FLUXBASE_A, USER_A_TOKEN)
  const b = client(FLUXBASE_B, USER_B_TOKEN)
  // The client fetches the token asynchronously; joins wait for it here.
  await a.realtime.setAuth()
  await b.realtime.setAuth()
  const gotA = []
  const gotB = []
  const chA = a.channel('notes-a').on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'notes' }, (p) => gotA.push(p))
  const chB = b.channel('notes-b').on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'notes' }, (p) => gotB.push(p))
  await subscribed(chA)
  await subscribed(chB)
  for (const owner of [USER_A_ID, USER_B_ID, USER_A_ID]) {
    await db.query(`insert into notes (owner, body, secret) values ($1, 'hello', 'classified')`, [owner])
  }
  await waitFor('A\'s two rows', () => gotA.length >= 2)
  await waitFor('B\'s row', () => gotB.length >= 1)
  await new Promise((r) => setTimeout(r, 500))
  assert.equal(gotA.length, 2)
  assert.equal(gotB.length, 1)
  for (const p of gotA) assert.equal(p.new.owner, USER_A_ID)
  assert.equal(gotB[0].new.owner, USER_B_ID)
  for (const p of [...gotA, ...gotB]) assert.equal('secret' in p.new, false)

  // A role without SELECT on the table is refused at join.
  const anon = client(FLUXBASE_B)
  const refused = anon.channel('notes-anon').on('postgres_changes', { event: '*', schema: 'public', table: 'notes' }, () => {})
  await assert.rejects(subscribed(refused), /no SELECT privilege/)
  await anon.removeChannel(refused)
})
