// Node `jose` verifies a keyward access token the way a resource server would:
// discovery document -> jwks_uri -> createRemoteJWKSet -> jwtVerify.
//
// usage: node verify.mjs ISSUER ALG TOKEN
// Exit 0 if the token verifies and every tampered copy is rejected; exit 1
// with the reason on stderr otherwise.
import { createRemoteJWKSet, jwtVerify, decodeProtectedHeader } from 'jose';

import { discover, fail, tamperings } from './lib.mjs';

const [issuer, alg, token] = process.argv.slice(2);
if (!issuer || !alg || !token) fail('usage: node verify.mjs ISSUER ALG TOKEN');

const meta = await discover(issuer);
const jwks = createRemoteJWKSet(new URL(meta.jwks_uri), { timeoutDuration: 5000 });
const policy = { issuer, audience: 'api://interop', typ: 'at+jwt', algorithms: [alg] };

let result;
try {
  result = await jwtVerify(token, jwks, policy);
} catch (e) {
  fail(`jwtVerify rejected the ${alg} token: ${e.code ?? e.name}: ${e.message}`);
}
const { payload, protectedHeader } = result;
if (protectedHeader.alg !== alg) fail(`header alg ${protectedHeader.alg}, expected ${alg}`);
if (!protectedHeader.kid) fail('header has no kid');
for (const claim of ['sub', 'client_id', 'iat', 'exp', 'jti']) {
  if (payload[claim] === undefined) fail(`claim ${claim} missing (RFC 9068)`);
}
if (decodeProtectedHeader(token).typ !== 'at+jwt') fail('typ is not at+jwt');

for (const [what, bad] of tamperings(token)) {
  try {
    await jwtVerify(bad, jwks, policy);
  } catch (e) {
    continue;
  }
  fail(`jose accepted a token with a ${what}`);
}
