// The REST API (/rest/v1) with the official client's query builder. The Go
// tests TestSupabaseJS and TestSupabaseJSServe start the nodes, create the
// rest_items table and pass FLUXBASE_A, ANON_KEY, REST_A_ID, REST_A_TOKEN
// and REST_B_TOKEN in the environment.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { createClient } from '@supabase/supabase-js'
import WebSocket from 'ws'
import pg from 'pg'

const { FLUXBASE_A, FLUXBASE_B, ANON_KEY, DATABASE_URL, REST_A_ID, REST_A_TOKEN, REST_B_TOKEN } = process.env
if (!FLUXBASE_A || !ANON_KEY || !REST_A_ID || !REST_A_TOKEN || !REST_B_TOKEN) {
  throw new Error('FLUXBASE_A, ANON_KEY, REST_A_ID, REST_A_TOKEN and REST_B_TOKEN must be set (run through go test ./e2e)')
}

function client(url, token) {
  // Node 20 has no global WebSocket; the client builds its realtime part
  // even when only REST is used.
  const opts = { auth: { persistSession: false, autoRefreshToken: false }, realtime: { transport: WebSocket } }
  if (token) opts.accessToken = async () => token
  return createClient(url, ANON_KEY, opts)
}

const anon = client(FLUXBASE_A)
const a = client(FLUXBASE_A, REST_A_TOKEN)
const b = client(FLUXBASE_B ?? FLUXBASE_A, REST_B_TOKEN)

const db = new pg.Client({ connectionString: DATABASE_URL })
await db.connect()
after(() => db.end())

// Rows every test starts from: three of user A's and one shared.
test('insert returns the rows, owned by the caller', async () => {
  const { data, error, status } = await a.from('rest_items').insert([
    { title: 'alpha', n: 1, tags: ['x', 'y'], meta: { k: 'v', depth: { d: 1 } } },
    { title: 'Beta', n: 2, tags: ['y'], meta: null },
    { title: 'gamma', n: 3, tags: [], meta: { k: 'w' } },
  ]).select()
  assert.equal(error, null)
  assert.equal(status, 201)
  assert.deepEqual(data.map((r) => r.title), ['alpha', 'Beta', 'gamma'])
  assert.ok(data.every((r) => r.owner === REST_A_ID && typeof r.id === 'number'))
  await db.query(`insert into rest_items (owner, title, n) values (null, 'shared', 10)`)
})

test('filters, order, range and count', async () => {
  let r = await a.from('rest_items').select('title').eq('n', 2)
  assert.deepEqual(r.data, [{ title: 'Beta' }])

  r = await a.from('rest_items').select('title').in('n', [1, 3]).order('n', { ascending: false })
  assert.deepEqual(r.data.map((x) => x.title), ['gamma', 'alpha'])

  r = await a.from('rest_items').select('n', { count: 'exact' }).order('n').range(0, 1)
  assert.equal(r.error, null)
  assert.equal(r.count, 4) // three own and the shared one
  assert.deepEqual(r.data, [{ n: 1 }, { n: 2 }])

  r = await a.from('rest_items').select('title').or('n.eq.1,title.eq.gamma').order('id')
  assert.deepEqual(r.data.map((x) => x.title), ['alpha', 'gamma'])

  r = await a.from('rest_items').select('title').contains('tags', ['y']).ilike('title', '%b%')
  assert.deepEqual(r.data, [{ title: 'Beta' }])

  r = await a.from('rest_items').select('title').is('meta', null).not('owner', 'is', null)
  assert.deepEqual(r.data, [{ title: 'Beta' }])

  r = await a.from('rest_items').select('title, kind:meta->>k').filter('meta->>k', 'eq', 'w')
  assert.deepEqual(r.data, [{ title: 'gamma', kind: 'w' }])

  r = await a.from('rest_items').select('n').gte('n', 2).lt('n', 10).order('n')
  assert.deepEqual(r.data, [{ n: 2 }, { n: 3 }])

  const { count, error } = await a.from('rest_items').select('*', { count: 'exact', head: true })
  assert.equal(error, null)
  assert.equal(count, 4)
})

test('single and maybeSingle', async () => {
  let r = await a.from('rest_items').select('title').eq('n', 1).single()
  assert.deepEqual(r.data, { title: 'alpha' })
  r = await a.from('rest_items').select('title').gt('n', 0).single()
  assert.equal(r.error?.code, 'PGRST116')
  r = await a.from('rest_items').select('title').eq('n', 99).maybeSingle()
  assert.equal(r.error, null)
  assert.equal(r.data, null)
})

test('update, upsert and delete', async () => {
  let r = await a.from('rest_items').update({ done: true }).eq('n', 1).select('title, done')
  assert.deepEqual(r.data, [{ title: 'alpha', done: true }])

  const { data: [gamma] } = await a.from('rest_items').select('id').eq('n', 3)
  r = await a.from('rest_items').upsert({ id: gamma.id, title: 'gamma 2', n: 3 }).select('title')
  assert.equal(r.error, null)
  assert.deepEqual(r.data, [{ title: 'gamma 2' }])

  r = await a.from('rest_items').delete().eq('n', 2).select('title')
  assert.deepEqual(r.data, [{ title: 'Beta' }])
  const { rows } = await db.query(`select count(*)::int as n from rest_items where title = 'Beta'`)
  assert.equal(rows[0].n, 0)
})

test('row-level security: other users and anon', async () => {
  let r = await b.from('rest_items').select('title').order('id')
  assert.deepEqual(r.data, [{ title: 'shared' }]) // none of A's rows

  r = await b.from('rest_items').update({ title: 'taken' }).eq('n', 1).select()
  assert.deepEqual(r.data, [])

  r = await b.from('rest_items').insert({ title: 'as someone else', owner: REST_A_ID })
  assert.equal(r.error?.code, '42501')
  assert.equal(r.status, 403)

  r = await anon.from('rest_items').select('title')
  assert.deepEqual(r.data, [{ title: 'shared' }])
  r = await anon.from('rest_items').insert({ title: 'anon' })
  assert.equal(r.error?.code, '42501')
  assert.equal(r.status, 401)
})

test('errors in PostgREST shape', async () => {
  let r = await a.from('no_such_table').select()
  assert.equal(r.status, 404)
  assert.equal(r.error?.code, '42P01')
  r = await a.from('rest_items').select('nope')
  assert.equal(r.status, 400)
  assert.equal(r.error?.code, '42703')
  r = await a.from('rest_items').insert({ n: 5 }) // title is not null
  assert.equal(r.error?.code, '23502')
})

test('rpc: a scalar, and rows with filters, as the caller', async () => {
  let r = await a.rpc('rest_add', { a: 2, b: 3 })
  assert.equal(r.error, null)
  assert.equal(r.data, 5)
  r = await a.rpc('rest_items_over', { min: 1 }).select('title').order('n')
  assert.equal(r.error, null)
  assert.deepEqual(r.data, [{ title: 'gamma 2' }, { title: 'shared' }])
  r = await b.rpc('rest_items_over', { min: 0 }).select('title')
  assert.deepEqual(r.data, [{ title: 'shared' }]) // row-level security applies inside
  r = await a.rpc('rest_add', { a: 1 })
  assert.equal(r.error?.code, 'PGRST202')
})

test('embedded resources through foreign keys', async () => {
  const { data: [item] } = await a.from('rest_items').select('id').eq('n', 3)
  let r = await a.from('rest_notes').insert([{ item_id: item.id, body: 'n1' }, { item_id: item.id, body: 'n2' }])
  assert.equal(r.error, null)
  r = await a.from('rest_items').select('title, rest_notes(body)').eq('n', 3)
  assert.equal(r.error, null)
  assert.deepEqual(r.data, [{ title: 'gamma 2', rest_notes: [{ body: 'n1' }, { body: 'n2' }] }])
  r = await a.from('rest_notes').select('body, item:rest_items(title)').eq('body', 'n2').single()
  assert.deepEqual(r.data, { body: 'n2', item: { title: 'gamma 2' } })
  r = await b.from('rest_notes').select('body, item:rest_items(title)').eq('body', 'n2')
  assert.deepEqual(r.data, [{ body: 'n2', item: null }]) // B may read the note, not the item
})
