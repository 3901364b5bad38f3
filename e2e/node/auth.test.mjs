// The auth API (/auth/v1) with the official client's auth-js, then REST and
// realtime used with the sessions it gives, under auth.uid() policies. The
// Go tests TestSupabaseJS and TestSupabaseJSServe start two nodes, create
// the auth_js_notes table and pass FLUXBASE_A, FLUXBASE_B, ANON_KEY and
// SERVICE_KEY in the environment.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { createClient } from '@supabase/supabase-js'
import WebSocket from 'ws'

const { FLUXBASE_A, FLUXBASE_B, ANON_KEY, SERVICE_KEY } = process.env
if (!FLUXBASE_A || !FLUXBASE_B || !ANON_KEY || !SERVICE_KEY) {
  throw new Error('FLUXBASE_A, FLUXBASE_B, ANON_KEY and SERVICE_KEY must be set (run through go test ./e2e)')
}

const clients = []
function client(url, key = ANON_KEY) {
  const c = createClient(url, key, {
    auth: { persistSession: false, autoRefreshToken: false },
    realtime: { transport: WebSocket, heartbeatIntervalMs: 5000 },
  })
  clients.push(c)
  return c
}
after(async () => {
  for (const c of clients) await c.removeAllChannels()
})

// Each run signs up its own addresses: the Go tests share one database
// between the in-process and the serve runs only in name.
const run = Date.now().toString(36)
const email = `ann-${run}@example.com`
const password = 'correct horse battery'

const a = client(FLUXBASE_A)
const b = client(FLUXBASE_B)
let user

test('signUp returns a session for an autoconfirmed address', async () => {
  const { data, error } = await a.auth.signUp({ email: `  ${email.toUpperCase()} `, password, options: { data: { name: 'Ann' } } })
  assert.equal(error, null)
  assert.ok(data.session?.access_token && data.session.refresh_token && data.session.expires_in === 3600)
  assert.equal(data.user.email, email)
  assert.equal(data.user.user_metadata.name, 'Ann')
  assert.equal(data.user.identities.length, 1)
  assert.equal(data.user.identities[0].provider, 'email')
  assert.deepEqual(data.user.app_metadata, { provider: 'email', providers: ['email'] })
  user = data.user

  const again = await a.auth.signUp({ email, password })
  assert.equal(again.error?.code, 'user_already_exists')
  assert.equal(again.error?.status, 422)
  const weak = await a.auth.signUp({ email: `weak-${run}@example.com`, password: '123' })
  assert.equal(weak.error?.code, 'weak_password')
  assert.equal(weak.error?.name, 'AuthWeakPasswordError')
  assert.deepEqual(weak.error?.reasons, ['length'])
})

test('signInWithPassword: one answer for wrong passwords and unknown users', async () => {
  const wrong = await b.auth.signInWithPassword({ email, password: 'not it' })
  const unknown = await b.auth.signInWithPassword({ email: `nobody-${run}@example.com`, password: 'not it' })
  for (const r of [wrong, unknown]) {
    assert.equal(r.error?.code, 'invalid_credentials')
    assert.equal(r.error?.status, 400)
    assert.equal(r.error?.message, 'Invalid login credentials')
  }
  const { data, error } = await b.auth.signInWithPassword({ email, password })
  assert.equal(error, null)
  assert.equal(data.user.id, user.id)
  assert.equal(data.session.user.id, user.id)
})

test('getUser, updateUser and refreshSession', async () => {
  let r = await b.auth.getUser()
  assert.equal(r.error, null)
  assert.equal(r.data.user.id, user.id)

  r = await b.auth.updateUser({ data: { name: null, plan: 'pro' } })
  assert.equal(r.error, null)
  assert.deepEqual(r.data.user.user_metadata, { plan: 'pro' })

  const before = (await b.auth.getSession()).data.session
  const refreshed = await b.auth.refreshSession()
  assert.equal(refreshed.error, null)
  assert.notEqual(refreshed.data.session.refresh_token, before.refresh_token)
  assert.equal(refreshed.data.user.user_metadata.plan, 'pro')
  const claims = JSON.parse(Buffer.from(refreshed.data.session.access_token.split('.')[1], 'base64url'))
  assert.equal(claims.sub, user.id)
  assert.equal(claims.role, 'authenticated')
  assert.equal(claims.aal, 'aal1')
  assert.equal(claims.amr[0].method, 'password')
  assert.equal(claims.user_metadata.plan, 'pro')
  assert.ok(claims.session_id)
})

function subscribed(channel) {
  return new Promise((resolve, reject) => {
    channel.subscribe((status, err) => {
      if (status === 'SUBSCRIBED') resolve()
      else if (status === 'CHANNEL_ERROR' || status === 'TIMED_OUT') reject(err ?? new Error(status))
    })
  })
}

test('REST and realtime with the session, under auth.uid() policies', async () => {
  const got = []
  const ch = b.channel(`notes-${run}`).on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'auth_js_notes' },
    (p) => got.push(p.new))
  await subscribed(ch)

  // A's own session (the one from signUp) writes on node A.
  const { data, error } = await a.from('auth_js_notes').insert({ body: 'mine' }).select()
  assert.equal(error, null)
  assert.equal(data[0].owner, user.id)

  // Someone else sees none of it, on REST or realtime.
  const eve = client(FLUXBASE_A)
  const signed = await eve.auth.signUp({ email: `eve-${run}@example.com`, password })
  assert.equal(signed.error, null)
  const theirs = await eve.from('auth_js_notes').select('body')
  assert.deepEqual(theirs.data, [])
  await eve.from('auth_js_notes').insert({ body: 'eve' })

  const mine = await b.from('auth_js_notes').select('body')
  assert.deepEqual(mine.data, [{ body: 'mine' }])
  for (let i = 0; i < 200 && got.length === 0; i++) await new Promise((r) => setTimeout(r, 50))
  assert.deepEqual(got.map((n) => n.body), ['mine'])
  await b.removeChannel(ch)
})

test('signOut ends the session on every node', async () => {
  const token = (await a.auth.getSession()).data.session.access_token
  const { error } = await a.auth.signOut({ scope: 'local' })
  assert.equal(error, null)
  assert.equal((await a.auth.getSession()).data.session, null)
  // The old token, used raw on the other node.
  let status
  for (let i = 0; i < 200; i++) {
    const res = await fetch(`${FLUXBASE_B}/rest/v1/auth_js_notes`, { headers: { apikey: ANON_KEY, Authorization: `Bearer ${token}` } })
    status = res.status
    if (status === 401) break
    await new Promise((r) => setTimeout(r, 10))
  }
  assert.equal(status, 401)
  // b's session (another sign-in) lives on, until it signs out too.
  assert.equal((await b.auth.getUser()).error, null)
  assert.equal((await b.auth.signOut()).error, null)
  assert.equal((await b.auth.getSession()).data.session, null)
  // auth-js turns GoTrue's 403 session_not_found into this error.
  const r = await b.auth.getUser(token)
  assert.equal(r.error?.name, 'AuthSessionMissingError')
})

test('signInAnonymously', async () => {
  const anon = client(FLUXBASE_B)
  const { data, error } = await anon.auth.signInAnonymously({ options: { data: { theme: 'dark' } } })
  assert.equal(error, null)
  assert.equal(data.user.is_anonymous, true)
  assert.equal(data.user.email, '')
  assert.equal(data.user.user_metadata.theme, 'dark')
  const ins = await anon.from('auth_js_notes').insert({ body: 'anonymous' }).select()
  assert.equal(ins.error, null)
  assert.equal(ins.data[0].owner, data.user.id)
})

test('admin: create with a password hash, list with paging, get, ban, delete', async () => {
  const admin = client(FLUXBASE_A, SERVICE_KEY)
  // OpenBSD's bcrypt test vector: "U*U" at cost 5.
  const created = await admin.auth.admin.createUser({
    email: `imported-${run}@example.com`, password_hash: '$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW',
    email_confirm: true, app_metadata: { tenant: 't1' },
  })
  assert.equal(created.error, null)
  const id = created.data.user.id
  assert.equal(created.data.user.app_metadata.tenant, 't1')

  const imported = client(FLUXBASE_B)
  const login = await imported.auth.signInWithPassword({ email: `imported-${run}@example.com`, password: 'U*U' })
  assert.equal(login.error, null)

  const dup = await admin.auth.admin.createUser({ email: `imported-${run}@example.com` })
  assert.equal(dup.error?.code, 'email_exists')

  const page = await admin.auth.admin.listUsers({ page: 1, perPage: 2 })
  assert.equal(page.error, null)
  assert.equal(page.data.users.length, 2)
  assert.ok(page.data.total >= 4)
  assert.equal(page.data.nextPage, 2)
  assert.ok(page.data.lastPage >= 2)
  assert.equal(page.data.users[0].id, id) // newest first

  const one = await admin.auth.admin.getUserById(id)
  assert.equal(one.data.user.email, `imported-${run}@example.com`)

  const banned = await admin.auth.admin.updateUserById(id, { ban_duration: '1h' })
  assert.equal(banned.error, null)
  assert.ok(banned.data.user.banned_until)
  const after = await imported.auth.getUser()
  assert.equal(after.error?.name, 'AuthSessionMissingError')
  const retry = await imported.auth.signInWithPassword({ email: `imported-${run}@example.com`, password: 'U*U' })
  assert.equal(retry.error?.code, 'user_banned')

  const del = await admin.auth.admin.deleteUser(id)
  assert.equal(del.error, null)
  const gone = await admin.auth.admin.getUserById(id)
  assert.equal(gone.error?.status, 404)
  assert.equal(gone.error?.code, 'user_not_found')

  const refused = await a.auth.admin.listUsers()
  assert.equal(refused.error?.code, 'not_admin')
})

// RFC 6238 in a few lines, apart from the server's code: HMAC-SHA1 of
// the 30-second step, six digits.
import { createHmac } from 'node:crypto'
function totp(secret, at = Date.now()) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567'
  let bits = ''
  for (const c of secret.replace(/=+$/, '')) bits += alphabet.indexOf(c).toString(2).padStart(5, '0')
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)))
  const step = Buffer.alloc(8)
  step.writeBigUInt64BE(BigInt(Math.floor(at / 30000)))
  const mac = createHmac('sha1', key).update(step).digest()
  const off = mac[mac.length - 1] & 0x0f
  return String((mac.readUInt32BE(off) & 0x7fffffff) % 1000000).padStart(6, '0')
}

test('MFA with TOTP: enroll, challenge, verify to aal2, a policy that needs aal2, unenroll', async () => {
  const c = client(FLUXBASE_A)
  const signed = await c.auth.signUp({ email: `mfa-${run}@example.com`, password })
  assert.equal(signed.error, null)
  await c.from('auth_js_secrets').insert({ body: 'aal2 only' })
  const enrolled = await c.auth.mfa.enroll({ factorType: 'totp', friendlyName: 'phone' })
  assert.equal(enrolled.error, null)
  assert.ok(enrolled.data.totp.qr_code.startsWith('data:image/svg+xml;utf-8,<svg'))
  assert.ok(enrolled.data.totp.uri.startsWith('otpauth://totp/'))
  const factorId = enrolled.data.id
  const dup = await c.auth.mfa.enroll({ factorType: 'totp', friendlyName: 'phone' })
  assert.equal(dup.error?.code, 'mfa_factor_name_conflict')

  let aal = await c.auth.mfa.getAuthenticatorAssuranceLevel()
  assert.equal(aal.data.currentLevel, 'aal1')
  // aal1 cannot read the row.
  assert.deepEqual((await c.from('auth_js_secrets').select('body')).data, [])

  let ch = await c.auth.mfa.challenge({ factorId })
  assert.equal(ch.error, null)
  const wrong = await c.auth.mfa.verify({ factorId, challengeId: ch.data.id, code: totp(enrolled.data.totp.secret) === '000000' ? '111111' : '000000' })
  assert.equal(wrong.error?.code, 'mfa_verification_failed')
  const verified = await c.auth.mfa.verify({ factorId, challengeId: ch.data.id, code: totp(enrolled.data.totp.secret) })
  assert.equal(verified.error, null)
  const again = await c.auth.mfa.verify({ factorId, challengeId: ch.data.id, code: totp(enrolled.data.totp.secret) })
  assert.equal(again.error?.code, 'mfa_challenge_expired')

  aal = await c.auth.mfa.getAuthenticatorAssuranceLevel()
  assert.equal(aal.data.currentLevel, 'aal2')
  assert.deepEqual(aal.data.currentAuthenticationMethods.map((m) => m.method).sort(), ['password', 'totp'])
  assert.deepEqual((await c.from('auth_js_secrets').select('body')).data, [{ body: 'aal2 only' }])
  const factors = await c.auth.mfa.listFactors()
  assert.equal(factors.data.totp.length, 1)
  assert.equal(factors.data.totp[0].status, 'verified')

  // A refresh keeps aal2; a new sign-in starts at aal1 with aal2 next.
  const refreshed = await c.auth.refreshSession()
  assert.equal(JSON.parse(Buffer.from(refreshed.data.session.access_token.split('.')[1], 'base64url')).aal, 'aal2')
  const other = client(FLUXBASE_B)
  await other.auth.signInWithPassword({ email: `mfa-${run}@example.com`, password })
  aal = await other.auth.mfa.getAuthenticatorAssuranceLevel()
  assert.equal(aal.data.currentLevel, 'aal1')
  assert.equal(aal.data.nextLevel, 'aal2')
  const refused = await other.auth.mfa.unenroll({ factorId })
  assert.equal(refused.error?.code, 'insufficient_aal')

  const gone = await c.auth.mfa.unenroll({ factorId })
  assert.equal(gone.error, null)
  assert.equal(gone.data.id, factorId)
  assert.equal((await c.auth.mfa.listFactors()).data.all.length, 0)
})
