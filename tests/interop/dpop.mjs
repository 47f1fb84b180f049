// DPoP (RFC 9449) with a client library keyward did not write: oauth4webapi.
//
// The library makes its own DPoP key pair, gets a token from `keyward serve`
// with client_credentials and a DPoP handle, and calls a `keyward gateway`
// route that requires DPoP with its protected-resource request (a proof with
// `ath`). Checks, each printed as one line and all required:
//   - the token is `token_type` DPoP and its `cnf.jkt` is the library's key
//     thumbprint (the library's own calculation);
//   - against an environment that requires server nonces, the first request
//     is refused with use_dpop_nonce, the library takes the DPoP-Nonce header
//     and its retry succeeds (client_credentials, and a refresh_token grant
//     whose new access token is bound to the same key);
//   - the gateway passes the DPoP request to the upstream (200, the
//     upstream's answer);
//   - the same token sent as Bearer: 401 with WWW-Authenticate, the upstream
//     not reached;
//   - the proof the library sent, replayed with its token: 401.
//
// usage: node dpop.mjs ALG NONCE ISSUER CLIENT_ID SECRET GATEWAY_URL HITS_FILE [REFRESH_TOKEN]
//   ALG: ES256 or PS256 (the library names an Ed25519 key's proofs
//   `Ed25519`, RFC 9864, which keyward does not accept yet); NONCE: required or off, the environment's
//   dpop_nonce setting (off: no nonce may be asked for); ISSUER: the environment's issuer URL (discovery is
//   read from it); GATEWAY_URL: a route that requires DPoP and answers
//   "hello <sub>"; HITS_FILE: the upstream's request log; REFRESH_TOKEN:
//   a refresh token of the client to exchange with a proof.
// Exit 0 when every check passed.
import { readFileSync } from 'node:fs';

import * as oauth from 'oauth4webapi';

const [alg, nonce, issuer, clientId, secret, gatewayUrl, hitsFile, refreshToken] = process.argv.slice(2);
if (!alg || !['required', 'off'].includes(nonce) || !issuer || !clientId || !secret || !gatewayUrl || !hitsFile) {
  console.error('usage: node dpop.mjs ALG required|off ISSUER CLIENT_ID SECRET GATEWAY_URL HITS_FILE [REFRESH_TOKEN]');
  process.exit(2);
}

let failed = 0;
function check(ok, what, detail = '') {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${alg} nonce ${nonce}: ${what}${ok || !detail ? '' : `: ${detail}`}`);
  if (!ok) failed += 1;
}

function claims(jwt) {
  return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8'));
}

function hits() {
  return readFileSync(hitsFile, 'utf8').split('\n').filter(Boolean).length;
}

// keyward runs on loopback http in this test; the library refuses plain
// http unless told.
const insecure = { [oauth.allowInsecureRequests]: true };
const as = await oauth.processDiscoveryResponse(
  new URL(issuer),
  await oauth.discoveryRequest(new URL(issuer), { algorithm: 'oidc', ...insecure }),
);
check(
  Array.isArray(as.dpop_signing_alg_values_supported) && as.dpop_signing_alg_values_supported.includes(alg),
  'discovery lists the proof algorithm',
  JSON.stringify(as.dpop_signing_alg_values_supported),
);
const client = { client_id: clientId };
const auth = oauth.ClientSecretBasic(secret);

// The library's key pair (non-extractable private key) and handle; the
// handle keeps the nonce a server gives it.
const keyPair = await oauth.generateKeyPair(alg);
const DPoP = oauth.DPoP(client, keyPair);
const jkt = await DPoP.calculateThumbprint();

/**
 * Sends a token request with the handle; on use_dpop_nonce the library has
 * taken the nonce and one retry follows (what the library documents).
 * Returns [processed response, whether a nonce was asked for].
 */
async function withNonceRetry(send, process) {
  let asked = false;
  for (let attempt = 0; ; attempt += 1) {
    try {
      return [await process(await send()), asked];
    } catch (err) {
      if (attempt === 0 && oauth.isDPoPNonceError(err)) {
        asked = true;
        continue;
      }
      throw err;
    }
  }
}

let token;
try {
  const [res, asked] = await withNonceRetry(
    () => oauth.clientCredentialsGrantRequest(as, client, auth, { scope: 'a' }, { DPoP, ...insecure }),
    (r) => oauth.processClientCredentialsResponse(as, client, r),
  );
  token = res;
  if (nonce === 'required') {
    check(asked, 'use_dpop_nonce asked for a nonce, the library retried with it');
  } else {
    check(!asked, 'no nonce asked for');
  }
} catch (err) {
  check(false, 'client_credentials with DPoP',
    `${err.code ?? err.name}: ${err.message} ${err.error ?? ''} ${err.error_description ?? ''}`);
  process.exit(1);
}
check(token.token_type?.toLowerCase() === 'dpop', 'token_type DPoP', token.token_type);
check(claims(token.access_token).cnf?.jkt === jkt, "cnf.jkt is the library's key thumbprint",
  `${claims(token.access_token).cnf?.jkt} vs ${jkt}`);

// A refresh with the same handle: the new access token is bound to the key.
if (refreshToken) {
  try {
    const [res] = await withNonceRetry(
      () => oauth.refreshTokenGrantRequest(as, client, auth, refreshToken, { DPoP, ...insecure }),
      (r) => oauth.processRefreshTokenResponse(as, client, r),
    );
    check(
      res.token_type?.toLowerCase() === 'dpop' && claims(res.access_token).cnf?.jkt === jkt && !!res.refresh_token,
      'refresh_token grant with DPoP: new token bound to the same key',
      JSON.stringify({ token_type: res.token_type, cnf: claims(res.access_token).cnf }),
    );
  } catch (err) {
    check(false, 'refresh_token grant with DPoP',
      `${err.code ?? err.name}: ${err.message} ${err.error ?? ''} ${err.error_description ?? ''}`);
  }
}

// The gateway: the library's protected-resource request, the proof it sent
// kept for the replay below.
let sent;
const recording = (url, init) => {
  sent = { url, headers: new Headers(init.headers) };
  return fetch(url, init);
};
const url = new URL(gatewayUrl);
const before = hits();
try {
  const res = await oauth.protectedResourceRequest(token.access_token, 'GET', url, new Headers(), null, {
    DPoP,
    [oauth.customFetch]: recording,
    ...insecure,
  });
  const body = await res.text();
  check(res.status === 200 && body.startsWith('hello ') && hits() === before + 1,
    'gateway passes the DPoP request to the upstream', `HTTP ${res.status}: ${body}`);
} catch (err) {
  check(false, 'gateway passes the DPoP request to the upstream', `${err.code ?? err.name}: ${err.message}`);
}
check(
  sent?.headers.get('authorization') === `DPoP ${token.access_token}` && !!sent?.headers.get('dpop'),
  'the library sent Authorization: DPoP and a proof',
);
if (sent?.headers.get('dpop')) {
  check(typeof claims(sent.headers.get('dpop')).ath === 'string', 'the proof carries ath');
}

// The same token as Bearer: refused, and the upstream never sees it.
{
  const n = hits();
  const res = await fetch(url, { headers: { authorization: `Bearer ${token.access_token}` } });
  const challenge = res.headers.get('www-authenticate') ?? '';
  check(res.status === 401 && challenge !== '' && hits() === n,
    'the token as Bearer: 401 with WWW-Authenticate', `HTTP ${res.status}, WWW-Authenticate: ${challenge}`);
}

// The library's proof replayed with its token: refused as a replay.
if (sent) {
  const n = hits();
  const res = await fetch(sent.url, {
    headers: { authorization: sent.headers.get('authorization'), dpop: sent.headers.get('dpop') },
  });
  const challenge = res.headers.get('www-authenticate') ?? '';
  check(res.status === 401 && /^DPoP /i.test(challenge) && hits() === n,
    'a replayed proof: 401', `HTTP ${res.status}, WWW-Authenticate: ${challenge}`);
}

process.exit(failed === 0 ? 0 : 1);
