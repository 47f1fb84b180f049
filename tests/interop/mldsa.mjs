// ML-DSA (FIPS 204) JWS as RFC 9964 puts it in JOSE, checked against an
// independent implementation: @noble/post-quantum (pure JavaScript). Node 20
// has no ML-DSA in WebCrypto, so `jose` cannot verify these tokens here; the
// JWS is taken apart by hand and the signature checked by noble, with the
// empty context string (noble's default, and RFC 9964 §5's rule). jose only
// computes RFC 7638 thumbprints (its AKP members: alg, kty, pub).
//
// usage:
//   node mldsa.mjs verify ISSUER ALG TOKEN
//       as a resource server: discovery -> jwks_uri -> the AKP key of the
//       token's kid -> noble verifies; RFC 9068 claims (aud api://interop);
//       the kid is the key's RFC 7638 thumbprint; tampered copies fail.
//   node mldsa.mjs verify-jwk JWKFILE ALG TOKEN
//       the same signature checks with the public half of a JWK file.
//   node mldsa.mjs seed OUTDIR
//       for each parameter set a random 32-byte seed, expanded by noble
//       (FIPS 204 ML-DSA.KeyGen_internal): OUTDIR/ALG.jwk, the private AKP
//       JWK (alg, pub, priv = the seed), and OUTDIR/ALG.kid, its thumbprint.
//       keyward's `keys import --jwk` refuses a seed that does not derive
//       the same pub, so an import proves both expand seeds alike.
//   node mldsa.mjs mint OUTDIR ISSUER AUDIENCE
//       noble as a foreign issuer: OUTDIR/jwks.json (the three public keys,
//       kid = thumbprint) and OUTDIR/tokens.json ({"ML-DSA-44": token, ...},
//       RFC 9068 access tokens for sub "node-user" with permissions
//       ["orders.*"]). Private keys are written nowhere.
// Exit 0 on success; 1 with the reason on stderr.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes, randomUUID } from 'node:crypto';
import { ml_dsa44, ml_dsa65, ml_dsa87 } from '@noble/post-quantum/ml-dsa.js';
import { calculateJwkThumbprint } from 'jose';

import { discover, fail, tamperings } from './lib.mjs';

const SUITES = { 'ML-DSA-44': ml_dsa44, 'ML-DSA-65': ml_dsa65, 'ML-DSA-87': ml_dsa87 };
// FIPS 204 Table 2: public key and signature sizes.
const SIZES = { 'ML-DSA-44': [1312, 2420], 'ML-DSA-65': [1952, 3309], 'ML-DSA-87': [2592, 4627] };

const b64u = (bytes) => Buffer.from(bytes).toString('base64url');
const unb64u = (s) => {
  const b = Buffer.from(s, 'base64url');
  if (b64u(b) !== s) fail(`not canonical base64url: ${s.slice(0, 20)}...`);
  return new Uint8Array(b);
};

function suite(alg) {
  const s = SUITES[alg];
  if (!s) fail(`not an ML-DSA algorithm: ${alg}`);
  return s;
}

/** The public AKP JWK of `alg` and `publicKey`, kid = its RFC 7638 thumbprint. */
async function publicJwk(alg, publicKey) {
  const jwk = { kty: 'AKP', alg, pub: b64u(publicKey) };
  return { ...jwk, kid: await calculateJwkThumbprint(jwk), use: 'sig' };
}

/**
 * Whether `token` is a compact JWS of `alg` under `publicKey` (noble,
 * empty context). Throws on a malformed token.
 */
function signatureValid(token, alg, publicKey) {
  const parts = token.split('.');
  if (parts.length !== 3) throw new Error('not three segments');
  const header = JSON.parse(Buffer.from(parts[0], 'base64url').toString('utf8'));
  if (header.alg !== alg) throw new Error(`header alg ${header.alg}, expected ${alg}`);
  const sig = Buffer.from(parts[2], 'base64url');
  if (sig.length !== SIZES[alg][1]) return false;
  const input = new TextEncoder().encode(`${parts[0]}.${parts[1]}`);
  return suite(alg).verify(new Uint8Array(sig), input, publicKey);
}

/** Verifies `token` and refuses its tampered copies; the payload. */
function verifyToken(token, alg, publicKey) {
  if (!signatureValid(token, alg, publicKey)) fail(`noble: the ${alg} signature does not verify`);
  for (const [what, bad] of tamperings(token)) {
    let ok = false;
    try {
      ok = signatureValid(bad, alg, publicKey);
    } catch (e) {
      continue;
    }
    if (ok) fail(`noble accepted a token with a ${what}`);
  }
  const [h, p] = token.split('.');
  return {
    header: JSON.parse(Buffer.from(h, 'base64url').toString('utf8')),
    payload: JSON.parse(Buffer.from(p, 'base64url').toString('utf8')),
  };
}

async function verifyAtIssuer(issuer, alg, token) {
  const meta = await discover(issuer);
  const res = await fetch(meta.jwks_uri, { signal: AbortSignal.timeout(5000) });
  if (res.status !== 200) fail(`GET ${meta.jwks_uri}: HTTP ${res.status}`);
  const { keys } = await res.json();
  const { kid } = JSON.parse(Buffer.from(token.split('.')[0], 'base64url').toString('utf8'));
  const jwk = keys.find((k) => k.kid === kid);
  if (!jwk) fail(`no key with kid ${kid} in ${meta.jwks_uri}`);
  if (jwk.kty !== 'AKP' || jwk.alg !== alg) fail(`key ${kid} is ${jwk.kty}/${jwk.alg}, expected AKP/${alg}`);
  if ('priv' in jwk) fail('the JWKS publishes a private seed');
  const pub = unb64u(jwk.pub);
  if (pub.length !== SIZES[alg][0]) fail(`pub is ${pub.length} bytes, expected ${SIZES[alg][0]}`);
  if ((await calculateJwkThumbprint(jwk)) !== kid) fail('the kid is not the RFC 7638 thumbprint');
  const { header, payload } = verifyToken(token, alg, pub);
  if (header.typ !== 'at+jwt') fail(`typ ${header.typ}, expected at+jwt`);
  if (payload.iss !== issuer) fail(`iss ${payload.iss}, expected ${issuer}`);
  const aud = [payload.aud].flat();
  if (!aud.includes('api://interop')) fail(`aud ${payload.aud} lacks api://interop`);
  const now = Math.floor(Date.now() / 1000);
  if (!(payload.exp > now - 60)) fail('expired');
  for (const claim of ['sub', 'client_id', 'iat', 'exp', 'jti']) {
    if (payload[claim] === undefined) fail(`claim ${claim} missing (RFC 9068)`);
  }
}

async function seed(outDir) {
  mkdirSync(outDir, { recursive: true });
  for (const alg of Object.keys(SUITES)) {
    const s = new Uint8Array(randomBytes(32));
    const { publicKey } = suite(alg).keygen(s);
    const jwk = await publicJwk(alg, publicKey);
    const priv = { kty: 'AKP', alg, pub: jwk.pub, priv: b64u(s) };
    writeFileSync(join(outDir, `${alg}.jwk`), `${JSON.stringify(priv)}\n`, { mode: 0o600 });
    writeFileSync(join(outDir, `${alg}.kid`), `${jwk.kid}\n`);
  }
}

async function mint(outDir, issuer, audience) {
  const keys = [];
  const tokens = {};
  const now = Math.floor(Date.now() / 1000);
  for (const alg of Object.keys(SUITES)) {
    const { publicKey, secretKey } = suite(alg).keygen();
    const jwk = await publicJwk(alg, publicKey);
    keys.push(jwk);
    const header = { alg, kid: jwk.kid, typ: 'at+jwt' };
    const claims = {
      iss: issuer,
      sub: 'node-user',
      aud: audience,
      client_id: 'interop-node',
      scope: 'orders:read',
      permissions: ['orders.*'],
      iat: now,
      exp: now + 600,
      jti: randomUUID(),
    };
    const input = `${b64u(Buffer.from(JSON.stringify(header)))}.${b64u(Buffer.from(JSON.stringify(claims)))}`;
    const sig = suite(alg).sign(new TextEncoder().encode(input), secretKey);
    tokens[alg] = `${input}.${b64u(sig)}`;
  }
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, 'jwks.json'), `${JSON.stringify({ keys }, null, 2)}\n`);
  writeFileSync(join(outDir, 'tokens.json'), `${JSON.stringify(tokens, null, 2)}\n`);
}

const [cmd, ...args] = process.argv.slice(2);
if (cmd === 'verify' && args.length === 3) {
  await verifyAtIssuer(...args);
} else if (cmd === 'verify-jwk' && args.length === 3) {
  const [file, alg, token] = args;
  const jwk = JSON.parse(readFileSync(file, 'utf8'));
  if (jwk.alg !== alg) fail(`${file} is an ${jwk.alg} key`);
  verifyToken(token, alg, unb64u(jwk.pub));
} else if (cmd === 'seed' && args.length === 1) {
  await seed(args[0]);
} else if (cmd === 'mint' && args.length === 3) {
  await mint(...args);
} else {
  fail('usage: node mldsa.mjs verify ISSUER ALG TOKEN | verify-jwk JWKFILE ALG TOKEN | seed OUTDIR | mint OUTDIR ISSUER AUDIENCE');
}
