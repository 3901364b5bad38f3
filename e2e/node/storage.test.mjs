// Storage (/storage/v1) with the official client's storage part: every
// call, against two nodes that share their files — uploads through node
// A, reads through node B. The Go test TestSupabaseJSStorage starts the
// nodes (on local files, then on S3), writes the row-level policies of
// the private bucket and passes FLUXBASE_A, FLUXBASE_B, ANON_KEY,
// SERVICE_KEY, STORAGE_A_ID, STORAGE_A_TOKEN, STORAGE_B_ID and
// STORAGE_B_TOKEN.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { createClient } from '@supabase/supabase-js'
import WebSocket from 'ws'
import * as tus from 'tus-js-client'

const { FLUXBASE_A, FLUXBASE_B, ANON_KEY, SERVICE_KEY, STORAGE_A_ID, STORAGE_A_TOKEN, STORAGE_B_ID, STORAGE_B_TOKEN } = process.env
if (!FLUXBASE_A || !FLUXBASE_B || !ANON_KEY || !SERVICE_KEY || !STORAGE_A_ID || !STORAGE_A_TOKEN || !STORAGE_B_TOKEN) {
  throw new Error('FLUXBASE_A, FLUXBASE_B, ANON_KEY, SERVICE_KEY and the STORAGE_* users must be set (run through go test ./e2e)')
}

function client(url, key, token) {
  const opts = { auth: { persistSession: false, autoRefreshToken: false }, realtime: { transport: WebSocket } }
  if (token) opts.accessToken = async () => token
  return createClient(url, key, opts).storage
}

const serviceA = client(FLUXBASE_A, SERVICE_KEY)
const serviceB = client(FLUXBASE_B, SERVICE_KEY)
const anonB = client(FLUXBASE_B, ANON_KEY)
const userA = client(FLUXBASE_A, ANON_KEY, STORAGE_A_TOKEN)
const userAonB = client(FLUXBASE_B, ANON_KEY, STORAGE_A_TOKEN)
const userB = client(FLUXBASE_B, ANON_KEY, STORAGE_B_TOKEN)
const mine = (name) => `${STORAGE_A_ID}/${name}`

const realtimeClients = []
function realtime(url, token) {
  const c = createClient(url, ANON_KEY, { auth: { persistSession: false, autoRefreshToken: false }, realtime: { transport: WebSocket }, accessToken: async () => token })
  realtimeClients.push(c)
  return c
}
after(async () => {
  for (const c of realtimeClients) await c.removeAllChannels()
})

function subscribed(channel) {
  return new Promise((resolve, reject) => {
    channel.subscribe((status, err) => {
      if (status === 'SUBSCRIBED') resolve()
      else if (status === 'CHANNEL_ERROR' || status === 'TIMED_OUT') reject(err ?? new Error(status))
    })
  })
}

async function waitFor(what, cond, ms = 20000) {
  const end = Date.now() + ms
  while (Date.now() < end) {
    if (cond()) return
    await new Promise((r) => setTimeout(r, 25))
  }
  throw new Error(`timed out waiting for ${what}`)
}

function refused(r, statusCode, code) {
  assert.ok(r.error, `expected an error ${code}, got data ${JSON.stringify(r.data)}`)
  assert.equal(r.error.statusCode, statusCode, r.error.message)
  if (code) assert.equal(r.error.code, code, r.error.message)
}

test('buckets: create, get, list, update', async () => {
  let r = await serviceA.createBucket('e2e-pub', { public: true })
  assert.equal(r.error, null)
  assert.deepEqual(r.data, { name: 'e2e-pub' })
  r = await serviceA.createBucket('e2e-docs', { public: false, fileSizeLimit: '1MB', allowedMimeTypes: ['text/*', 'image/*', 'application/json'] })
  assert.equal(r.error, null)
  refused(await serviceA.createBucket('e2e-docs'), '409', 'BucketAlreadyExists')
  refused(await anonB.createBucket('e2e-anon'), '403', 'AccessDenied')

  r = await serviceB.getBucket('e2e-docs')
  assert.equal(r.error, null)
  assert.equal(r.data.public, false)
  assert.equal(r.data.file_size_limit, 1 << 20)
  assert.deepEqual(r.data.allowed_mime_types, ['text/*', 'image/*', 'application/json'])
  refused(await serviceB.getBucket('e2e-none'), '404', 'NoSuchBucket')

  r = await serviceB.listBuckets()
  assert.equal(r.error, null)
  assert.deepEqual(r.data.map((b) => b.id).sort(), ['e2e-docs', 'e2e-pub'])

  await serviceA.createBucket('e2e-tmp', { public: false })
  r = await serviceA.updateBucket('e2e-tmp', { public: true, fileSizeLimit: 2048, allowedMimeTypes: ['text/plain'] })
  assert.equal(r.error, null)
  r = await serviceB.getBucket('e2e-tmp')
  assert.equal(r.data.public, true)
  assert.equal(r.data.file_size_limit, 2048)
})

test('upload through one node, download through the other', async () => {
  let r = await userA.from('e2e-docs').upload(mine('hello.txt'), 'hello from A', { contentType: 'text/plain', metadata: { lang: 'en' } })
  assert.equal(r.error, null)
  assert.equal(r.data.path, mine('hello.txt'))
  assert.equal(r.data.fullPath, `e2e-docs/${mine('hello.txt')}`)
  assert.ok(r.data.id)

  r = await userAonB.from('e2e-docs').download(mine('hello.txt'))
  assert.equal(r.error, null)
  assert.equal(await r.data.text(), 'hello from A')

  // A Blob goes as a multipart form.
  const blob = new Blob([JSON.stringify({ n: 1 })], { type: 'application/json' })
  r = await userA.from('e2e-docs').upload(mine('data/one.json'), blob, { cacheControl: '120' })
  assert.equal(r.error, null)
  refused(await userA.from('e2e-docs').upload(mine('data/one.json'), blob), '409', 'KeyAlreadyExists')
  r = await userA.from('e2e-docs').upload(mine('data/one.json'), new Blob(['{"n":2}'], { type: 'application/json' }), { upsert: true })
  assert.equal(r.error, null)
  r = await userA.from('e2e-docs').update(mine('data/one.json'), '{"n":3}', { contentType: 'application/json' })
  assert.equal(r.error, null)
  r = await userAonB.from('e2e-docs').download(mine('data/one.json'))
  assert.deepEqual(JSON.parse(await r.data.text()), { n: 3 })
})

test('info and exists', async () => {
  let r = await userAonB.from('e2e-docs').info(mine('hello.txt'))
  assert.equal(r.error, null)
  assert.equal(r.data.size, 12)
  assert.equal(r.data.contentType, 'text/plain')
  assert.equal(r.data.bucketId, 'e2e-docs')
  assert.deepEqual(r.data.metadata, { lang: 'en' })
  assert.ok(r.data.etag && r.data.version && r.data.lastModified)

  r = await userA.from('e2e-docs').exists(mine('hello.txt'))
  assert.equal(r.data, true)
  r = await userA.from('e2e-docs').exists(mine('nope.txt'))
  assert.equal(r.data, false)
})

test('list one folder level, search, sort and page', async () => {
  await userA.from('e2e-docs').upload(mine('data/two.json'), '{}', { contentType: 'application/json' })
  await userA.from('e2e-docs').upload(mine('data/deep/three.json'), '{}', { contentType: 'application/json' })
  let r = await userAonB.from('e2e-docs').list(STORAGE_A_ID)
  assert.equal(r.error, null)
  assert.deepEqual(r.data.map((e) => e.name), ['data', 'hello.txt'])
  const folder = r.data[0]
  assert.equal(folder.id, null)
  assert.equal(folder.metadata, null)
  assert.ok(r.data[1].id && r.data[1].metadata.size === 12)

  r = await userAonB.from('e2e-docs').list(mine('data'), { sortBy: { column: 'name', order: 'desc' } })
  assert.deepEqual(r.data.map((e) => e.name), ['two.json', 'one.json', 'deep'])
  r = await userAonB.from('e2e-docs').list(mine('data'), { search: 'tw' })
  assert.deepEqual(r.data.map((e) => e.name), ['two.json'])
  r = await userAonB.from('e2e-docs').list(mine('data'), { limit: 1, offset: 1 })
  assert.deepEqual(r.data.map((e) => e.name), ['one.json'])
})

test('move and copy, across buckets too', async () => {
  let r = await userA.from('e2e-docs').move(mine('data/two.json'), mine('moved.json'))
  assert.equal(r.error, null)
  assert.equal((await userAonB.from('e2e-docs').exists(mine('data/two.json'))).data, false)
  r = await userA.from('e2e-docs').copy(mine('hello.txt'), mine('copy.txt'))
  assert.equal(r.error, null)
  assert.equal(r.data.path, `e2e-docs/${mine('copy.txt')}`) // storage-api's Key: the bucket and the name
  r = await userAonB.from('e2e-docs').download(mine('copy.txt'))
  assert.equal(await r.data.text(), 'hello from A')

  r = await serviceA.from('e2e-docs').copy(mine('hello.txt'), 'shared/hello.txt', { destinationBucket: 'e2e-pub' })
  assert.equal(r.error, null)
  r = await serviceA.from('e2e-docs').move(mine('copy.txt'), 'moved/copy.txt', { destinationBucket: 'e2e-pub' })
  assert.equal(r.error, null)
  r = await serviceB.from('e2e-pub').download('moved/copy.txt')
  assert.equal(await r.data.text(), 'hello from A')
})

test('public URLs: read without a key; a private bucket is not public', async () => {
  const { data } = serviceB.from('e2e-pub').getPublicUrl('shared/hello.txt')
  let res = await fetch(data.publicUrl)
  assert.equal(res.status, 200)
  assert.equal(await res.text(), 'hello from A')
  const etag = res.headers.get('etag')
  assert.ok(etag)
  res = await fetch(data.publicUrl, { headers: { 'If-None-Match': etag } })
  assert.equal(res.status, 304)
  res = await fetch(data.publicUrl, { headers: { Range: 'bytes=6-9' } })
  assert.equal(res.status, 206)
  assert.equal(await res.text(), 'from')
  res = await fetch(serviceB.from('e2e-pub').getPublicUrl('shared/hello.txt', { download: 'greeting.txt' }).data.publicUrl)
  assert.match(res.headers.get('content-disposition'), /^attachment; filename="greeting.txt"/)

  res = await fetch(anonB.from('e2e-docs').getPublicUrl(mine('hello.txt')).data.publicUrl)
  assert.equal(res.status, 400)
  const body = await res.json()
  assert.equal(body.code, 'NoSuchBucket')
})

test('signed download and upload URLs', async () => {
  let r = await userA.from('e2e-docs').createSignedUrl(mine('hello.txt'), 60)
  assert.equal(r.error, null)
  let res = await fetch(r.data.signedUrl.replace(FLUXBASE_A, FLUXBASE_B))
  assert.equal(res.status, 200)
  assert.equal(await res.text(), 'hello from A')
  const tampered = r.data.signedUrl.replace('hello.txt', 'moved.json')
  res = await fetch(tampered)
  assert.equal(res.status, 400)
  assert.equal((await res.json()).code, 'InvalidSignature')

  r = await userA.from('e2e-docs').createSignedUrls([mine('hello.txt'), `${STORAGE_B_ID}/nope.txt`], 60)
  assert.equal(r.error, null)
  assert.equal(r.data.length, 2)
  assert.ok(r.data[0].signedUrl && r.data[0].error === null)
  assert.ok(r.data[1].error)
  res = await fetch(r.data[0].signedUrl)
  assert.equal(await res.text(), 'hello from A')

  r = await userA.from('e2e-docs').createSignedUploadUrl(mine('by-url.txt'))
  assert.equal(r.error, null)
  const up = await anonB.from('e2e-docs').uploadToSignedUrl(mine('by-url.txt'), r.data.token, 'sent by URL', { contentType: 'text/plain' })
  assert.equal(up.error, null)
  assert.equal(up.data.fullPath, `e2e-docs/${mine('by-url.txt')}`)
  r = await userAonB.from('e2e-docs').download(mine('by-url.txt'))
  assert.equal(await r.data.text(), 'sent by URL')
})

test('row-level security: by folder and owner; anonymous reads of a private bucket refused', async () => {
  refused(await userB.from('e2e-docs').download(mine('hello.txt')), '404', 'NoSuchKey')
  refused(await userB.from('e2e-docs').upload(mine('intruder.txt'), 'x', { contentType: 'text/plain' }), '403', 'AccessDenied')
  refused(await userB.from('e2e-docs').createSignedUrl(mine('hello.txt'), 60), '404', 'NoSuchKey')
  refused(await userB.from('e2e-docs').createSignedUploadUrl(mine('intruder.txt')), '403', 'AccessDenied')
  refused(await anonB.from('e2e-docs').download(mine('hello.txt')), '404', 'NoSuchKey')
  let r = await userB.from('e2e-docs').list(STORAGE_A_ID)
  assert.deepEqual(r.data, [])
  r = await userB.from('e2e-docs').remove([mine('hello.txt')])
  assert.deepEqual(r.data, [])
  r = await userB.from('e2e-docs').upload(`${STORAGE_B_ID}/own.txt`, 'mine', { contentType: 'text/plain' })
  assert.equal(r.error, null)
})

test('image transformations: download and public URLs with transform', async () => {
  // A 1×1 PNG, scaled to 4×3 (fill) and read back: the size is in the
  // PNG header, bytes 16 to 24.
  const png = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==', 'base64')
  const dims = (buf) => [buf.readUInt32BE(16), buf.readUInt32BE(20)]
  assert.equal((await userA.from('e2e-docs').upload(mine('dot.png'), png, { contentType: 'image/png' })).error, null)
  let r = await userAonB.from('e2e-docs').download(mine('dot.png'), { transform: { width: 4, height: 3, resize: 'fill' } })
  assert.equal(r.error, null)
  assert.deepEqual(dims(Buffer.from(await r.data.arrayBuffer())), [4, 3])
  refused(await userB.from('e2e-docs').download(mine('dot.png'), { transform: { width: 4 } }), '404', 'NoSuchKey')

  await serviceA.from('e2e-pub').upload('dot.png', png, { contentType: 'image/png' })
  const { data } = anonB.from('e2e-pub').getPublicUrl('dot.png', { transform: { width: 5, height: 5 } })
  assert.match(data.publicUrl, /\/render\/image\/public\//)
  const res = await fetch(data.publicUrl)
  assert.equal(res.status, 200)
  assert.equal(res.headers.get('content-type'), 'image/png')
  assert.deepEqual(dims(Buffer.from(await res.arrayBuffer())), [5, 5])
})

test('a resumable (TUS) upload interrupted on node A is finished on node B', async () => {
  const data = Buffer.alloc(600 << 10)
  for (let i = 0; i < data.length; i++) data[i] = i % 251
  const options = (endpoint, extra) => ({
    endpoint: `${endpoint}/storage/v1/upload/resumable`,
    headers: { authorization: `Bearer ${STORAGE_A_TOKEN}`, apikey: ANON_KEY, 'x-upsert': 'true' },
    metadata: { bucketName: 'e2e-docs', objectName: mine('resumable.bin'), contentType: 'image/png', cacheControl: '3600' },
    chunkSize: 256 << 10,
    retryDelays: [],
    ...extra,
  })
  // Node A takes the first chunk, then the client goes away.
  let url
  await new Promise((resolve, reject) => {
    const up = new tus.Upload(data, options(FLUXBASE_A, {
      onChunkComplete: (_size, sent) => {
        if (sent >= 256 << 10) {
          url = up.url
          up.abort().then(resolve, reject)
        }
      },
      onError: reject,
      onSuccess: () => reject(new Error('the upload finished before it was interrupted')),
    }))
    up.start()
  })
  assert.ok(url)
  // It resumes on node B, from the offset B reports.
  const onB = url.replace(FLUXBASE_A, FLUXBASE_B)
  let resumedAt = -1
  await new Promise((resolve, reject) => {
    const up = new tus.Upload(data, options(FLUXBASE_B, {
      uploadUrl: onB,
      onProgress: (sent) => { if (resumedAt < 0) resumedAt = sent },
      onError: reject,
      onSuccess: resolve,
    }))
    up.start()
  })
  assert.ok(resumedAt >= 256 << 10, `resumed at ${resumedAt}`)
  const r = await userAonB.from('e2e-docs').download(mine('resumable.bin'))
  assert.equal(r.error, null)
  assert.ok(Buffer.from(await r.data.arrayBuffer()).equals(data))
})

test('limits: size and MIME type', async () => {
  refused(await userA.from('e2e-docs').upload(mine('big.txt'), 'x'.repeat((1 << 20) + 1), { contentType: 'text/plain' }), '413', 'EntityTooLarge')
  refused(await userA.from('e2e-docs').upload(mine('doc.pdf'), 'pdf', { contentType: 'application/pdf' }), '415', 'InvalidMimeType')
  assert.equal((await userA.from('e2e-docs').exists(mine('big.txt'))).data, false)
})

test('uploads are changes of storage.objects, seen by realtime as row-level security allows', async () => {
  const gotA = []
  const gotB = []
  const ra = realtime(FLUXBASE_B, STORAGE_A_TOKEN)
  const rb = realtime(FLUXBASE_B, STORAGE_B_TOKEN)
  // The token is fetched asynchronously; the joins must carry it.
  await ra.realtime.setAuth()
  await rb.realtime.setAuth()
  const chA = ra.channel('objects-a')
    .on('postgres_changes', { event: 'INSERT', schema: 'storage', table: 'objects' }, (p) => gotA.push(p))
  const chB = rb.channel('objects-b')
    .on('postgres_changes', { event: 'INSERT', schema: 'storage', table: 'objects' }, (p) => gotB.push(p))
  await subscribed(chA)
  await subscribed(chB)
  assert.equal((await userA.from('e2e-docs').upload(mine('live.txt'), 'live', { contentType: 'text/plain' })).error, null)
  assert.equal((await userB.from('e2e-docs').upload(`${STORAGE_B_ID}/live.txt`, 'live', { contentType: 'text/plain' })).error, null)
  await waitFor("A's upload on A's channel", () => gotA.some((p) => p.new.name === mine('live.txt')))
  await waitFor("B's upload on B's channel", () => gotB.some((p) => p.new.name === `${STORAGE_B_ID}/live.txt`))
  // B's own change came after A's on the log: had A's been allowed to B,
  // it would be here by now.
  assert.ok(gotB.every((p) => p.new.owner_id === STORAGE_B_ID), JSON.stringify(gotB))
  assert.ok(gotA.every((p) => p.new.owner_id === STORAGE_A_ID), JSON.stringify(gotA))
  assert.equal(gotA.find((p) => p.new.name === mine('live.txt')).new.bucket_id, 'e2e-docs')
})

test('remove, empty and delete buckets', async () => {
  let r = await userA.from('e2e-docs').remove([mine('hello.txt'), mine('moved.json'), mine('never.txt')])
  assert.equal(r.error, null)
  assert.deepEqual(r.data.map((o) => o.name).sort(), [mine('hello.txt'), mine('moved.json')])
  refused(await serviceA.deleteBucket('e2e-pub'), '409', 'BucketNotEmpty')
  r = await serviceA.emptyBucket('e2e-pub')
  assert.equal(r.error, null)
  r = await serviceB.deleteBucket('e2e-pub')
  assert.equal(r.error, null)
  refused(await serviceB.getBucket('e2e-pub'), '404', 'NoSuchBucket')
})
