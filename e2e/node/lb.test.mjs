// supabase-js through a load balancer in front of three Fluxbase nodes,
// with no stickiness. The Go test TestLoadBalancers starts the nodes and
// the load balancer and passes in the environment: LB_URL, ANON_KEY, and
// NODE_PIDS ("name=pid,..."), the nodes' processes, so this test can drain
// the node its websocket landed on with SIGTERM.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { createClient } from '@supabase/supabase-js'
import WebSocket from 'ws'

const { LB_URL, ANON_KEY, NODE_PIDS } = process.env
if (!LB_URL || !ANON_KEY || !NODE_PIDS) {
  throw new Error('LB_URL, ANON_KEY and NODE_PIDS must be set (run through go test ./e2e -run TestLoadBalancers)')
}
const pids = Object.fromEntries(NODE_PIDS.split(',').map((kv) => kv.split('=')))

// The node behind each response, from the X-Fluxbase-Node header: the
// websocket's from its upgrade response, REST's from each response.
const sockets = [] // { node, closeCode }
class RecordingSocket extends WebSocket {
  constructor(...args) {
    super(...args)
    const s = { node: null, closeCode: null }
    sockets.push(s)
    this.on('upgrade', (res) => { s.node = res.headers['x-fluxbase-node'] })
    this.on('close', (code) => { s.closeCode = code })
  }
}
const restNodes = []
async function recordingFetch(input, init) {
  const res = await fetch(input, init)
  restNodes.push(res.headers.get('x-fluxbase-node'))
  return res
}

const supabase = createClient(LB_URL, ANON_KEY, {
  auth: { persistSession: false, autoRefreshToken: false },
  global: { fetch: recordingFetch },
  realtime: { transport: RecordingSocket, heartbeatIntervalMs: 5000 },
})
after(() => supabase.removeAllChannels())

async function waitFor(what, cond, ms = 60000) {
  const end = Date.now() + ms
  while (Date.now() < end) {
    if (cond()) return
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error(`timed out waiting for ${what}`)
}

test('realtime and REST work through the load balancer without stickiness, and survive a drain', async () => {
  const titles = []
  let subscribed = 0
  supabase
    .channel('lb')
    .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'lb_items' }, (c) => titles.push(c.new.title))
    .subscribe((status) => { if (status === 'SUBSCRIBED') subscribed++ })
  await waitFor('the channel to subscribe', () => subscribed === 1)
  const first = sockets[0].node
  assert.ok(pids[first], `the websocket's node ${first} is one of ${Object.keys(pids)}`)

  // REST goes wherever the balancer sends it: not only to the websocket's
  // node, and everything works.
  for (let i = 0; i < 6; i++) {
    const { error } = await supabase.from('lb_items').select('id').limit(1)
    assert.equal(error, null)
  }
  const { error: insertError } = await supabase.from('lb_items').insert({ title: 'before' })
  assert.equal(insertError, null)
  assert.ok(restNodes.every((n) => pids[n]), `REST answered by ${restNodes}`)
  assert.ok(restNodes.some((n) => n !== first), `every REST call went to the websocket's node ${first}: ${restNodes}`)
  assert.ok(new Set(restNodes).size >= 2, `REST used one node only: ${restNodes}`)
  await waitFor('the insert on the subscription', () => titles.includes('before'))

  // Drain the websocket's node. The client is told to go away (1001),
  // reconnects through the balancer to another node and joins again;
  // REST keeps answering meanwhile.
  process.kill(Number(pids[first]), 'SIGTERM')
  let reads = 0
  while (subscribed < 2) {
    const { error } = await supabase.from('lb_items').select('id').limit(1)
    assert.equal(error, null, `a read during the drain failed: ${JSON.stringify(error)}`)
    reads++
    await new Promise((r) => setTimeout(r, 100))
    assert.ok(reads < 600, 'the channel did not join again within a minute')
  }
  assert.equal(sockets[0].closeCode, 1001, 'the drained node closes with 1001 (going away)')
  const now = sockets.at(-1).node
  assert.ok(pids[now] && now !== first, `the channel joined again on ${now}, not on another node than ${first}`)

  const { error: afterError } = await supabase.from('lb_items').insert({ title: 'after' })
  assert.equal(afterError, null)
  await waitFor('the insert after the drain on the subscription', () => titles.includes('after'))
  assert.deepEqual(titles, ['before', 'after'])
  console.log(JSON.stringify({ first, now, reads, restNodes: [...new Set(restNodes)] }))
})
