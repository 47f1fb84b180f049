// A relying party built with openid-client (panva), against a running keyward
// and the example login app:
//
//   node rp.mjs ISSUER CLIENT_ID CLIENT_SECRET|- RP_BASE JAR USER_CMD...
//
// The client is registered with redirect URI RP_BASE/callback and post-logout
// redirect URI RP_BASE/logged-out (nothing needs to listen there: the scripted
// browser stops at the first redirect to RP_BASE).
// CLIENT_SECRET "-" makes it a public client (token_endpoint_auth_method none,
// PKCE only). USER_CMD is the scripted browser (user.py) that takes an
// authorization URL through keyward's login and consent pages and prints the
// redirect back to us; the relying party itself is all openid-client: discovery,
// PKCE S256, state and nonce, the code grant with the library's own ID token
// validation (iss, aud, exp, nonce, signature against the JWKS via
// enableNonRepudiationChecks), userinfo, refresh, the end-session URL, and the
// device authorization grant (RFC 8628: initiateDeviceAuthorization, the user
// confirming the code on keyward's device page, pollDeviceAuthorizationGrant).
//
// Prints "ok STEP" per step passed; the first failure prints "FAIL STEP: why"
// and exits 1.
import { execFileSync } from 'node:child_process'
import * as client from 'openid-client'

const [issuer, clientId, secret, rpBase, jar, ...userCmd] = process.argv.slice(2)
const redirectUri = `${rpBase}/callback`
const postLogoutUri = `${rpBase}/logged-out`
const SCOPE = 'openid profile email offline_access'

let step = 'start'
const ok = (s) => console.log(`ok   ${s}`)
function assert(cond, why) {
  if (!cond) throw new Error(why)
}

// The user at the browser: opens `url`, logs in (remember me: `remember`),
// consents, and stops at the first redirect to `stop`.
function user(url, remember = '1', stop = rpBase) {
  const out = execFileSync(userCmd[0], [...userCmd.slice(1), jar, url.href, stop, 'alice', 'alice-demo-password', remember], {
    encoding: 'utf8',
  })
  return JSON.parse(out)
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

function header(jwt) {
  return JSON.parse(Buffer.from(jwt.split('.')[0], 'base64url').toString())
}

async function expectOAuthError(p, code) {
  try {
    await p
  } catch (e) {
    const got = e.error ?? e.cause?.error ?? e.code
    assert(got === code, `expected ${code}, got ${got}: ${e.message}`)
    return
  }
  throw new Error(`expected ${code}, the call succeeded`)
}

async function login(config, extra = {}) {
  const verifier = client.randomPKCECodeVerifier()
  const nonce = client.randomNonce()
  const state = client.randomState()
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri,
    scope: SCOPE,
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    nonce,
    state,
    ...extra,
  })
  const seen = user(url)
  return { verifier, nonce, state, seen, callback: new URL(seen.callback) }
}

async function main() {
  step = 'discovery'
  const auth = secret === '-' ? client.None() : client.ClientSecretBasic(secret)
  const config = await client.discovery(new URL(issuer), clientId, undefined, auth, {
    execute: [client.allowInsecureRequests, client.enableNonRepudiationChecks],
  })
  const meta = config.serverMetadata()
  assert(meta.issuer === issuer, `issuer ${meta.issuer}`)
  assert(meta.code_challenge_methods_supported?.includes('S256'), 'S256 not advertised')
  assert(!meta.code_challenge_methods_supported?.includes('plain'), 'plain advertised')
  for (const k of ['authorization_endpoint', 'token_endpoint', 'userinfo_endpoint', 'end_session_endpoint', 'jwks_uri']) {
    assert(meta[k], `${k} missing`)
  }
  ok(step)

  step = 'code flow with PKCE S256 (login and consent pages)'
  const first = await login(config)
  assert(first.seen.pages.includes('login') && first.seen.pages.includes('consent'), `pages ${first.seen.pages}`)
  assert(first.callback.searchParams.get('iss') === issuer, `callback iss ${first.callback.searchParams.get('iss')}`)
  const tokens = await client.authorizationCodeGrant(config, first.callback, {
    pkceCodeVerifier: first.verifier,
    expectedNonce: first.nonce,
    expectedState: first.state,
    idTokenExpected: true,
  })
  ok(step)

  step = 'ID token validated by openid-client (iss, aud, nonce, signature via JWKS)'
  const claims = tokens.claims()
  assert(claims.sub === 'alice', `sub ${claims.sub}`)
  assert([claims.aud].flat().includes(clientId), `aud ${claims.aud}`)
  assert(claims.nonce === first.nonce, 'nonce')
  assert(typeof claims.auth_time === 'number', 'auth_time missing')
  assert(header(tokens.id_token).typ === 'JWT', `ID token typ ${header(tokens.id_token).typ}`)
  assert(header(tokens.access_token).typ === 'at+jwt', `access token typ ${header(tokens.access_token).typ}`)
  ok(step)

  step = 'userinfo'
  const info = await client.fetchUserInfo(config, tokens.access_token, claims.sub)
  assert(info.sub === 'alice', `userinfo sub ${info.sub}`)
  assert(info.email === 'alice@example.com', `userinfo email ${info.email}`)
  assert(info.name === 'Alice Example', `userinfo name ${info.name}`)
  ok(step)

  step = 'refresh (offline_access)'
  assert(tokens.refresh_token, 'no refresh token although offline_access was granted')
  const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token)
  assert(refreshed.access_token && refreshed.access_token !== tokens.access_token, 'no new access token')
  assert(refreshed.refresh_token && refreshed.refresh_token !== tokens.refresh_token, 'refresh token not rotated')
  const info2 = await client.fetchUserInfo(config, refreshed.access_token, claims.sub)
  assert(info2.sub === 'alice', 'userinfo after refresh')
  ok(step)

  step = 'code replay refused, and it revokes what the code issued'
  await expectOAuthError(
    client.authorizationCodeGrant(config, first.callback, {
      pkceCodeVerifier: first.verifier,
      expectedNonce: first.nonce,
      expectedState: first.state,
    }),
    'invalid_grant',
  )
  try {
    await client.fetchUserInfo(config, tokens.access_token, claims.sub)
    throw new Error('the access token still works after the code replay')
  } catch (e) {
    assert(e instanceof client.WWWAuthenticateChallengeError || e.status === 401, `userinfo after replay: ${e.message}`)
  }
  await expectOAuthError(client.refreshTokenGrant(config, refreshed.refresh_token), 'invalid_grant')
  ok(step)

  step = 'wrong PKCE verifier refused'
  const second = await login(config)
  assert(!second.seen.pages.includes('login'), `remembered login showed the login form again: ${second.seen.pages}`)
  await expectOAuthError(
    client.authorizationCodeGrant(config, second.callback, {
      pkceCodeVerifier: client.randomPKCECodeVerifier(),
      expectedNonce: second.nonce,
      expectedState: second.state,
    }),
    'invalid_grant',
  )
  ok(step)

  step = 'RP-initiated logout'
  const logoutState = client.randomState()
  const out = user(
    client.buildEndSessionUrl(config, {
      id_token_hint: tokens.id_token,
      post_logout_redirect_uri: postLogoutUri,
      state: logoutState,
    }),
  )
  const back = new URL(out.callback)
  assert(back.origin + back.pathname === postLogoutUri, `logout went to ${out.callback}`)
  assert(back.searchParams.get('state') === logoutState, 'logout state')
  ok(step)

  step = 'after logout the login page is shown again'
  const third = await login(config)
  assert(third.seen.pages.includes('login'), `no login form after logout: ${third.seen.pages}`)
  const t3 = await client.authorizationCodeGrant(config, third.callback, {
    pkceCodeVerifier: third.verifier,
    expectedNonce: third.nonce,
    expectedState: third.state,
    idTokenExpected: true,
  })
  assert(t3.claims().sub === 'alice', 'sub after logout and login')
  ok(step)

  step = 'device authorization grant (RFC 8628): discovery and the device endpoint'
  const deviceGrant = 'urn:ietf:params:oauth:grant-type:device_code'
  assert(meta.device_authorization_endpoint, 'device_authorization_endpoint missing')
  assert(meta.grant_types_supported?.includes(deviceGrant), 'device grant not advertised')
  const da = await client.initiateDeviceAuthorization(config, { scope: 'openid profile offline_access' })
  assert(/^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$/.test(da.user_code), `user_code ${da.user_code}`)
  assert(da.verification_uri === `${issuer}/device`, `verification_uri ${da.verification_uri}`)
  assert(da.interval === 5 && da.expires_in === 600, `interval ${da.interval}, expires_in ${da.expires_in}`)
  ok(step)

  step = 'device grant: the library polls (authorization_pending) while the user confirms the code, logs in and consents'
  // Count what the token endpoint answers the library's polls.
  let pending = 0
  config[client.customFetch] = async (url, options) => {
    const res = await fetch(url, options)
    if (String(url).endsWith('/oauth2/token') && res.status === 400) {
      const body = await res.clone().json().catch(() => ({}))
      if (body.error === 'authorization_pending') pending++
    }
    return res
  }
  const polling = client.pollDeviceAuthorizationGrant(config, da)
  // The user starts once the library was told authorization_pending.
  for (let i = 0; i < 100 && pending === 0; i++) await sleep(100)
  assert(pending > 0, 'no poll was answered authorization_pending')
  const callback = `${issuer}/device/callback`
  const onDevice = user(new URL(da.verification_uri_complete), '0', callback)
  assert(onDevice.pages.includes('device'), `the device page was not shown: ${onDevice.pages}`)
  const done = await fetch(onDevice.callback)
  const page = await done.text()
  assert(done.status === 200 && page.includes('Device connected'), `callback ${done.status}: ${page.slice(0, 200)}`)
  const dt = await polling
  const dclaims = dt.claims()
  assert(dclaims.sub === 'alice', `device sub ${dclaims.sub}`)
  assert([dclaims.aud].flat().includes(clientId), `device aud ${dclaims.aud}`)
  assert(dt.refresh_token, 'no refresh token for the device')
  const dinfo = await client.fetchUserInfo(config, dt.access_token, dclaims.sub)
  assert(dinfo.name === 'Alice Example', `device userinfo name ${dinfo.name}`)
  const drefreshed = await client.refreshTokenGrant(config, dt.refresh_token)
  assert(drefreshed.access_token, 'device refresh')
  ok(step)

  step = 'device grant: a used device code is refused'
  await expectOAuthError(client.pollDeviceAuthorizationGrant(config, da), 'invalid_grant')
  ok(step)
}

main().catch((e) => {
  console.log(`FAIL ${step}: ${e.message}${e.cause ? ` (${JSON.stringify(e.cause)})` : ''}`)
  process.exit(1)
})
