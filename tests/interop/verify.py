"""Python PyJWT verifies a keyward access token the way a resource server would:
discovery document -> jwks_uri -> PyJWKClient -> jwt.decode.

usage: python verify.py ISSUER ALG TOKEN
Exit 0 if the token verifies and every tampered copy is rejected; exit 1 with
the reason on stderr otherwise.
"""

import base64
import json
import sys
import urllib.request

import jwt
from jwt import PyJWKClient

AUDIENCE = "api://interop"


def fail(msg: str) -> None:
    print(msg, file=sys.stderr)
    sys.exit(1)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def tamperings(token: str):
    """A changed claim under the original signature, and a flipped signature byte."""
    h, p, s = token.split(".")
    claims = json.loads(b64url_decode(p))
    claims["sub"] = f"{claims.get('sub', '')}-mallory"
    p2 = b64url(json.dumps(claims, separators=(",", ":")).encode())
    sig = bytearray(b64url_decode(s))
    sig[len(sig) // 2] ^= 0x01
    return [
        ("changed claim", f"{h}.{p2}.{s}"),
        ("flipped signature byte", f"{h}.{p}.{b64url(bytes(sig))}"),
    ]


def main() -> None:
    if len(sys.argv) != 4:
        fail("usage: python verify.py ISSUER ALG TOKEN")
    issuer, alg, token = sys.argv[1:]

    url = f"{issuer}/.well-known/openid-configuration"
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            meta = json.load(r)
    except Exception as e:  # noqa: BLE001 - any failure is a failed check
        fail(f"GET {url}: {e}")
    if meta.get("issuer") != issuer:
        fail(f"discovery issuer {meta.get('issuer')!r}, expected {issuer!r}")

    jwks = PyJWKClient(meta["jwks_uri"], timeout=5)

    def decode(t: str) -> dict:
        key = jwks.get_signing_key_from_jwt(t)
        return jwt.decode(
            t,
            key.key,
            algorithms=[alg],
            audience=AUDIENCE,
            issuer=issuer,
            options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
        )

    try:
        claims = decode(token)
    except Exception as e:  # noqa: BLE001
        fail(f"PyJWT rejected the {alg} token: {type(e).__name__}: {e}")
    header = jwt.get_unverified_header(token)
    if header.get("typ") != "at+jwt":
        fail(f"header typ {header.get('typ')!r}, expected 'at+jwt'")
    if header.get("alg") != alg:
        fail(f"header alg {header.get('alg')!r}, expected {alg!r}")
    if not header.get("kid"):
        fail("header has no kid")
    if "client_id" not in claims:
        fail("claim client_id missing (RFC 9068)")

    for what, bad in tamperings(token):
        try:
            decode(bad)
        except jwt.PyJWTError:
            continue
        fail(f"PyJWT accepted a token with a {what}")


if __name__ == "__main__":
    main()
