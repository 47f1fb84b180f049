// Helpers shared by the Node checks.

/** Prints the reason on stderr and exits 1. */
export function fail(msg) {
  console.error(msg);
  process.exit(1);
}

/** GETs the issuer's discovery document (bounded) and checks its issuer. */
export async function discover(issuer) {
  const url = `${issuer}/.well-known/openid-configuration`;
  let res;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(5000) });
  } catch (e) {
    fail(`GET ${url}: ${e.message}`);
  }
  if (res.status !== 200) fail(`GET ${url}: HTTP ${res.status}`);
  const meta = await res.json();
  if (meta.issuer !== issuer) fail(`discovery issuer ${meta.issuer}, expected ${issuer}`);
  for (const f of ['jwks_uri', 'token_endpoint']) {
    if (typeof meta[f] !== 'string') fail(`discovery has no ${f}`);
  }
  return meta;
}

/**
 * Altered copies of a compact JWS that a verifier must reject: a changed
 * claim under the original signature, and a flipped signature byte.
 */
export function tamperings(token) {
  const [h, p, s] = token.split('.');
  const claims = JSON.parse(Buffer.from(p, 'base64url').toString('utf8'));
  claims.sub = `${claims.sub ?? ''}-mallory`;
  const p2 = Buffer.from(JSON.stringify(claims)).toString('base64url');
  const sig = Buffer.from(s, 'base64url');
  sig[sig.length >> 1] ^= 0x01;
  return [
    ['changed claim', `${h}.${p2}.${s}`],
    ['flipped signature byte', `${h}.${p}.${sig.toString('base64url')}`],
  ];
}
