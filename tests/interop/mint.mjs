// Node `jose` as a foreign issuer: tokens for the gate's interop test.
//
// usage: node mint.mjs OUTDIR ISSUER AUDIENCE
//
// Makes a fresh key pair for each of RS256 (2048 bits), PS256 (2048 bits),
// ES256, ES384 and EdDSA (Ed25519) and writes
//   OUTDIR/jwks.json    the public keys as a JWK Set (kid = RFC 7638
//                       thumbprint, alg, use "sig"), for the gate to trust
//   OUTDIR/tokens.json  {"RS256": token, ...}: one RFC 9068 access token per
//                       key (header typ "at+jwt" and kid; claims iss, sub
//                       "node-user", aud, client_id, scope "orders:read",
//                       permissions ["orders.*"], iat = now, exp = now + 600,
//                       random jti)
// The private keys are not written anywhere.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { SignJWT, calculateJwkThumbprint, exportJWK, generateKeyPair } from 'jose';

import { fail } from './lib.mjs';

const ALGS = [
  ['RS256', { modulusLength: 2048 }],
  ['PS256', { modulusLength: 2048 }],
  ['ES256', {}],
  ['ES384', {}],
  ['EdDSA', { crv: 'Ed25519' }],
];

const args = process.argv.slice(2);
if (args.length !== 3 || args.some((a) => a === '')) {
  fail('usage: node mint.mjs OUTDIR ISSUER AUDIENCE');
}
const [outDir, issuer, audience] = args;

const keys = [];
const tokens = {};
const now = Math.floor(Date.now() / 1000);
for (const [alg, options] of ALGS) {
  const { privateKey, publicKey } = await generateKeyPair(alg, { ...options, extractable: true });
  const pub = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(pub);
  keys.push({ ...pub, kid, alg, use: 'sig' });
  tokens[alg] = await new SignJWT({
    client_id: 'interop-node',
    scope: 'orders:read',
    permissions: ['orders.*'],
  })
    .setProtectedHeader({ alg, kid, typ: 'at+jwt' })
    .setIssuer(issuer)
    .setSubject('node-user')
    .setAudience(audience)
    .setIssuedAt(now)
    .setExpirationTime(now + 600)
    .setJti(randomUUID())
    .sign(privateKey);
}
if (new Set(keys.map((k) => k.kid)).size !== keys.length) fail('duplicate kid');

mkdirSync(outDir, { recursive: true });
writeFileSync(join(outDir, 'jwks.json'), `${JSON.stringify({ keys }, null, 2)}\n`);
writeFileSync(join(outDir, 'tokens.json'), `${JSON.stringify(tokens, null, 2)}\n`);
