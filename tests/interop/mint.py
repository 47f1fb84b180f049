"""PyJWT as a foreign issuer: tokens for the gate's interop test.

usage: python mint.py OUTDIR ISSUER AUDIENCE

Makes a fresh key pair (with `cryptography`) for each of RS256 (2048 bits),
PS256 (2048 bits), ES256, ES384 and EdDSA (Ed25519) and writes
  OUTDIR/jwks.json    the public keys as a JWK Set (kid = RFC 7638 thumbprint,
                      alg, use "sig"), for the gate to trust
  OUTDIR/tokens.json  {"RS256": token, ...}: one RFC 9068 access token per key
                      (header typ "at+jwt" and kid; claims iss, sub "py-user",
                      aud, client_id, scope "orders:read", permissions
                      ["orders.*"], iat = now, exp = now + 600, random jti)
The private keys are not written anywhere.
"""

import base64
import hashlib
import json
import os
import secrets
import sys
import time

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

ALGS = [
    ("RS256", lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), RSAAlgorithm),
    ("PS256", lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), RSAAlgorithm),
    ("ES256", lambda: ec.generate_private_key(ec.SECP256R1()), ECAlgorithm),
    ("ES384", lambda: ec.generate_private_key(ec.SECP384R1()), ECAlgorithm),
    ("EdDSA", ed25519.Ed25519PrivateKey.generate, OKPAlgorithm),
]

# RFC 7638 §3.2: the members a thumbprint covers, per key type.
THUMBPRINT_MEMBERS = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}


def fail(msg: str) -> None:
    print(msg, file=sys.stderr)
    sys.exit(1)


def thumbprint(jwk: dict) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url without padding)."""
    members = {m: jwk[m] for m in THUMBPRINT_MEMBERS[jwk["kty"]]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()


def main() -> None:
    if len(sys.argv) != 4 or "" in sys.argv[1:]:
        fail("usage: python mint.py OUTDIR ISSUER AUDIENCE")
    out_dir, issuer, audience = sys.argv[1:]

    keys = []
    tokens = {}
    now = int(time.time())
    for alg, generate, algorithm in ALGS:
        private_key = generate()
        public_jwk = algorithm.to_jwk(private_key.public_key(), as_dict=True)
        kid = thumbprint(public_jwk)
        keys.append({**public_jwk, "kid": kid, "alg": alg, "use": "sig"})
        claims = {
            "iss": issuer,
            "sub": "py-user",
            "aud": audience,
            "client_id": "interop-py",
            "scope": "orders:read",
            "permissions": ["orders.*"],
            "iat": now,
            "exp": now + 600,
            "jti": secrets.token_urlsafe(16),
        }
        tokens[alg] = jwt.encode(claims, private_key, algorithm=alg, headers={"kid": kid, "typ": "at+jwt"})
    if len({k["kid"] for k in keys}) != len(keys):
        fail("duplicate kid")

    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "jwks.json"), "w", encoding="utf-8") as f:
        json.dump({"keys": keys}, f, indent=2)
        f.write("\n")
    with open(os.path.join(out_dir, "tokens.json"), "w", encoding="utf-8") as f:
        json.dump(tokens, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
