"""ML-DSA (FIPS 204) JWS as RFC 9964 puts it in JOSE, checked against an
independent implementation: pyca/cryptography (its bundled OpenSSL's ML-DSA).
PyJWT has no ML-DSA, so the JWS is taken apart by hand; signatures are
checked with the empty context string (RFC 9964 §5).

usage:
  python mldsa.py verify ISSUER ALG TOKEN
      as a resource server: discovery -> jwks_uri -> the AKP key of the
      token's kid -> cryptography verifies; RFC 9068 claims (aud
      api://interop); the kid is the RFC 7638 thumbprint; tampered copies fail.
  python mldsa.py verify-jwk JWKFILE ALG TOKEN
      the same signature checks with the public half of a JWK file.
  python mldsa.py seed OUTDIR
      for each parameter set a random 32-byte seed, expanded by OpenSSL:
      OUTDIR/ALG.pem (PKCS#8 in RFC 9881's seed form), OUTDIR/ALG.jwk (the
      public AKP JWK it derives) and OUTDIR/ALG.kid (its thumbprint).
  python mldsa.py spki PEMFILE JWKSFILE
      `keyward keys export --format pem` beside `keys export`: every ML-DSA
      SPKI block (RFC 9881) loads in OpenSSL, holds the JWK's `pub`, and is
      byte for byte the SPKI OpenSSL writes for that key.
  python mldsa.py mint OUTDIR ISSUER AUDIENCE
      cryptography as a foreign issuer: OUTDIR/jwks.json and
      OUTDIR/tokens.json as mldsa.mjs writes them (sub "py-user").
Exit 0 on success; 1 with the reason on stderr.
"""

import base64
import hashlib
import json
import os
import re
import sys
import time
import urllib.request
import uuid

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import mldsa

KEYS = {
    "ML-DSA-44": (mldsa.MLDSA44PrivateKey, mldsa.MLDSA44PublicKey, 1312, 2420),
    "ML-DSA-65": (mldsa.MLDSA65PrivateKey, mldsa.MLDSA65PublicKey, 1952, 3309),
    "ML-DSA-87": (mldsa.MLDSA87PrivateKey, mldsa.MLDSA87PublicKey, 2592, 4627),
}


def fail(msg):
    print(msg, file=sys.stderr)
    sys.exit(1)


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def unb64u(s):
    b = base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
    if b64u(b) != s:
        fail(f"not canonical base64url: {s[:20]}...")
    return b


def thumbprint(alg, pub):
    """RFC 7638 over the AKP members RFC 9964 names: alg, kty, pub."""
    members = json.dumps({"alg": alg, "kty": "AKP", "pub": pub}, separators=(",", ":"), sort_keys=True)
    return b64u(hashlib.sha256(members.encode()).digest())


def public_jwk(alg, public_key):
    pub = b64u(public_key.public_bytes_raw())
    return {"kty": "AKP", "alg": alg, "pub": pub, "kid": thumbprint(alg, pub), "use": "sig"}


def signature_valid(token, alg, public_key):
    h, p, s = token.split(".")
    header = json.loads(unb64u(h))
    if header.get("alg") != alg:
        raise ValueError(f"header alg {header.get('alg')}, expected {alg}")
    sig = base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
    if len(sig) != KEYS[alg][3]:
        return False
    try:
        public_key.verify(sig, f"{h}.{p}".encode())  # context: empty
    except InvalidSignature:
        return False
    return True


def tamperings(token):
    h, p, s = token.split(".")
    claims = json.loads(unb64u(p))
    claims["sub"] = f"{claims.get('sub', '')}-mallory"
    sig = bytearray(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))
    sig[len(sig) // 2] ^= 1
    return [
        ("changed claim", f"{h}.{b64u(json.dumps(claims).encode())}.{s}"),
        ("flipped signature byte", f"{h}.{p}.{b64u(bytes(sig))}"),
    ]


def verify_token(token, alg, public_key):
    if not signature_valid(token, alg, public_key):
        fail(f"cryptography: the {alg} signature does not verify")
    for what, bad in tamperings(token):
        try:
            ok = signature_valid(bad, alg, public_key)
        except ValueError:
            continue
        if ok:
            fail(f"cryptography accepted a token with a {what}")
    h, p, _ = token.split(".")
    return json.loads(unb64u(h)), json.loads(unb64u(p))


def get_json(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        if r.status != 200:
            fail(f"GET {url}: HTTP {r.status}")
        return json.load(r)


def verify_at_issuer(issuer, alg, token):
    meta = get_json(f"{issuer}/.well-known/openid-configuration")
    if meta.get("issuer") != issuer:
        fail(f"discovery issuer {meta.get('issuer')}, expected {issuer}")
    keys = get_json(meta["jwks_uri"])["keys"]
    kid = json.loads(unb64u(token.split(".")[0])).get("kid")
    jwk = next((k for k in keys if k.get("kid") == kid), None)
    if jwk is None:
        fail(f"no key with kid {kid}")
    if (jwk.get("kty"), jwk.get("alg")) != ("AKP", alg):
        fail(f"key {kid} is {jwk.get('kty')}/{jwk.get('alg')}, expected AKP/{alg}")
    if "priv" in jwk:
        fail("the JWKS publishes a private seed")
    if thumbprint(alg, jwk["pub"]) != kid:
        fail("the kid is not the RFC 7638 thumbprint")
    public_key = KEYS[alg][1].from_public_bytes(unb64u(jwk["pub"]))
    header, claims = verify_token(token, alg, public_key)
    if header.get("typ") != "at+jwt":
        fail(f"typ {header.get('typ')}, expected at+jwt")
    if claims.get("iss") != issuer:
        fail(f"iss {claims.get('iss')}, expected {issuer}")
    aud = claims.get("aud")
    if "api://interop" not in (aud if isinstance(aud, list) else [aud]):
        fail(f"aud {aud} lacks api://interop")
    if not claims.get("exp", 0) > time.time() - 60:
        fail("expired")
    for c in ("sub", "client_id", "iat", "exp", "jti"):
        if c not in claims:
            fail(f"claim {c} missing (RFC 9068)")


def seed(out):
    os.makedirs(out, exist_ok=True)
    for alg, (private_cls, _, _, _) in KEYS.items():
        key = private_cls.from_seed_bytes(os.urandom(32))
        pem = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
        fd = os.open(os.path.join(out, f"{alg}.pem"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        jwk = public_jwk(alg, key.public_key())
        with open(os.path.join(out, f"{alg}.jwk"), "w") as f:
            json.dump(jwk, f)
        with open(os.path.join(out, f"{alg}.kid"), "w") as f:
            f.write(jwk["kid"] + "\n")


def spki(pem_file, jwks_file):
    text = open(pem_file).read()
    jwks = {k["kid"]: k for k in json.load(open(jwks_file))["keys"]}
    blocks = re.findall(r"kid: (\S+) alg: (\S+) state: \S+\n(-----BEGIN PUBLIC KEY-----\n.*?-----END PUBLIC KEY-----\n)", text, re.S)
    checked = 0
    for kid, alg, block in blocks:
        if alg not in KEYS:
            continue
        key = ser.load_pem_public_key(block.encode())
        if not isinstance(key, KEYS[alg][1]):
            fail(f"{kid}: OpenSSL reads a {type(key).__name__}, not an {alg} key")
        if b64u(key.public_bytes_raw()) != jwks[kid]["pub"]:
            fail(f"{kid}: the SPKI key is not the JWK's pub")
        if key.public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo).decode() != block:
            fail(f"{kid}: OpenSSL writes this key's SPKI differently")
        checked += 1
    if checked == 0:
        fail(f"no ML-DSA key in {pem_file}")


def mint(out, issuer, audience):
    keys, tokens, now = [], {}, int(time.time())
    for alg, (private_cls, _, _, _) in KEYS.items():
        key = private_cls.generate()
        jwk = public_jwk(alg, key.public_key())
        keys.append(jwk)
        header = {"alg": alg, "kid": jwk["kid"], "typ": "at+jwt"}
        claims = {
            "iss": issuer, "sub": "py-user", "aud": audience, "client_id": "interop-py",
            "scope": "orders:read", "permissions": ["orders.*"],
            "iat": now, "exp": now + 600, "jti": str(uuid.uuid4()),
        }
        signing_input = f"{b64u(json.dumps(header).encode())}.{b64u(json.dumps(claims).encode())}"
        tokens[alg] = f"{signing_input}.{b64u(key.sign(signing_input.encode()))}"
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "jwks.json"), "w") as f:
        json.dump({"keys": keys}, f, indent=2)
    with open(os.path.join(out, "tokens.json"), "w") as f:
        json.dump(tokens, f, indent=2)


def main(argv):
    cmd, args = (argv[0], argv[1:]) if argv else ("", [])
    if cmd == "verify" and len(args) == 3:
        if args[1] not in KEYS:
            fail(f"not an ML-DSA algorithm: {args[1]}")
        verify_at_issuer(*args)
    elif cmd == "verify-jwk" and len(args) == 3:
        path, alg, token = args
        jwk = json.load(open(path))
        if jwk.get("alg") != alg:
            fail(f"{path} is an {jwk.get('alg')} key")
        verify_token(token, alg, KEYS[alg][1].from_public_bytes(unb64u(jwk["pub"])))
    elif cmd == "seed" and len(args) == 1:
        seed(args[0])
    elif cmd == "spki" and len(args) == 2:
        spki(*args)
    elif cmd == "mint" and len(args) == 3:
        mint(*args)
    else:
        fail("usage: python mldsa.py verify ISSUER ALG TOKEN | verify-jwk JWKFILE ALG TOKEN | seed OUTDIR | spki PEMFILE JWKSFILE | mint OUTDIR ISSUER AUDIENCE")


if __name__ == "__main__":
    main(sys.argv[1:])
