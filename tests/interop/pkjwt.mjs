// private_key_jwt (RFC 7523) with Node `jose` as the client.
//
// usage:
//   node pkjwt.mjs keygen ALG DIR
//       a fresh key pair; DIR/client.jwk.json (private, stays here) and
//       DIR/client.jwks.json (public JWK Set with kid, alg, use, to register)
//   node pkjwt.mjs token ISSUER CLIENT_ID DIR
//       signs a client assertion (iss = sub = CLIENT_ID, aud = the discovery
//       document's token_endpoint, random jti, exp = iat + 60 s), POSTs a
//       client_credentials request with it, expects 200 and prints the access
//       token; the assertion is kept in DIR/assertion.jwt
//   node pkjwt.mjs replay ISSUER CLIENT_ID DIR
//       POSTs DIR/assertion.jwt again: the jti was used, so it must be
//       refused with 400/401 invalid_client
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { SignJWT, calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK } from 'jose';

import { discover, fail } from './lib.mjs';

const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const [mode, ...args] = process.argv.slice(2);

async function postToken(tokenEndpoint, clientId, assertion) {
  const body = new URLSearchParams({
    grant_type: 'client_credentials',
    client_id: clientId,
    client_assertion_type: ASSERTION_TYPE,
    client_assertion: assertion,
    scope: 'a',
  });
  let res;
  try {
    res = await fetch(tokenEndpoint, {
      method: 'POST',
      body,
      headers: { accept: 'application/json' },
      signal: AbortSignal.timeout(10000),
    });
  } catch (e) {
    fail(`POST ${tokenEndpoint}: ${e.message}`);
  }
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    fail(`POST ${tokenEndpoint}: HTTP ${res.status}, not JSON: ${text.slice(0, 200)}`);
  }
  return { status: res.status, json };
}

if (mode === 'keygen') {
  const [alg, dir] = args;
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const pub = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(pub);
  const priv = { ...(await exportJWK(privateKey)), kid, alg };
  writeFileSync(join(dir, 'client.jwk.json'), JSON.stringify(priv), { mode: 0o600 });
  writeFileSync(
    join(dir, 'client.jwks.json'),
    JSON.stringify({ keys: [{ ...pub, kid, alg, use: 'sig' }] }, null, 2),
  );
} else if (mode === 'token') {
  const [issuer, clientId, dir] = args;
  const meta = await discover(issuer);
  const jwk = JSON.parse(readFileSync(join(dir, 'client.jwk.json'), 'utf8'));
  const advertised = meta.token_endpoint_auth_signing_alg_values_supported ?? [];
  if (!advertised.includes(jwk.alg)) {
    fail(`discovery token_endpoint_auth_signing_alg_values_supported lacks ${jwk.alg}: ${JSON.stringify(advertised)}`);
  }
  if (!(meta.token_endpoint_auth_methods_supported ?? []).includes('private_key_jwt')) {
    fail('discovery token_endpoint_auth_methods_supported lacks private_key_jwt');
  }
  const key = await importJWK(jwk, jwk.alg);
  const assertion = await new SignJWT({})
    .setProtectedHeader({ alg: jwk.alg, kid: jwk.kid, typ: 'JWT' })
    .setIssuer(clientId)
    .setSubject(clientId)
    .setAudience(meta.token_endpoint)
    .setJti(randomUUID())
    .setIssuedAt()
    .setExpirationTime('60s')
    .sign(key);
  writeFileSync(join(dir, 'assertion.jwt'), assertion);
  const { status, json } = await postToken(meta.token_endpoint, clientId, assertion);
  if (status !== 200) fail(`token endpoint: HTTP ${status} ${JSON.stringify(json)}`);
  if (typeof json.access_token !== 'string') fail(`no access_token in ${JSON.stringify(json)}`);
  if (String(json.token_type).toLowerCase() !== 'bearer') fail(`token_type ${json.token_type}`);
  process.stdout.write(`${json.access_token}\n`);
} else if (mode === 'replay') {
  const [issuer, clientId, dir] = args;
  const meta = await discover(issuer);
  const assertion = readFileSync(join(dir, 'assertion.jwt'), 'utf8');
  const { status, json } = await postToken(meta.token_endpoint, clientId, assertion);
  if (status === 200) fail('a replayed client assertion (same jti) was accepted');
  if (json.error !== 'invalid_client' || (status !== 400 && status !== 401)) {
    fail(`replayed assertion: expected 400/401 invalid_client, got HTTP ${status} ${JSON.stringify(json)}`);
  }
} else {
  fail('usage: node pkjwt.mjs keygen ALG DIR | token ISSUER CLIENT_ID DIR | replay ISSUER CLIENT_ID DIR');
}
