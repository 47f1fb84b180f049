#!/usr/bin/env bash
# Interop tests: real JOSE clients against a real `keyward serve`.
#
# For each signing algorithm keyward offers an environment (RS256 with 2048-
# and 4096-bit keys, PS256, ES256, ES384, EdDSA) it initializes a fresh data
# dir, registers a client_credentials client, starts the server, gets a token
# with curl and has it verified by
#   - Node `jose`: discovery -> createRemoteJWKSet(jwks_uri) -> jwtVerify (verify.mjs)
#   - Python PyJWT: discovery -> PyJWKClient(jwks_uri) -> jwt.decode (verify.py)
# each also checking that tampered copies are rejected. Then a private_key_jwt
# client (RFC 7523) whose key pair and client assertion `jose` makes (ES256 and
# RS256 client keys) gets a token that Node verifies, and a replay of the same
# assertion is refused. Finally the gate: tokens minted by Node `jose`
# (mint.mjs) and PyJWT (mint.py) with their own keys, for RS256, PS256, ES256,
# ES384 and EdDSA, pass `keyward gateway` (which trusts both JWK Sets) to an
# upstream (upstream.py); tampered copies get 401 and never reach it.
#
# ML-DSA (FIPS 204, RFC 9964), against two independent implementations:
# @noble/post-quantum (pure JavaScript; mldsa.mjs) and pyca/cryptography's
# OpenSSL (mldsa.py). Neither Node 20's jose nor PyJWT has ML-DSA, so those
# scripts take the JWS apart themselves (empty context string, RFC 9964 §5).
#   - environments signing with ML-DSA-44, -65 and -87: their tokens verify
#     in both (discovery -> JWKS -> AKP key), tampered copies do not;
#   - seeds: noble's private AKP JWKs import (`keys import --jwk`, which
#     refuses a seed that does not derive the JWK's pub) and OpenSSL's
#     RFC 9881 seed-form PKCS#8 PEMs import (`keys import --pem`) under the
#     kid each tool computed (RFC 7638); tokens keyward signs with them
#     verify under the tool's own public key; keyward's SPKI PEM export is
#     byte for byte what OpenSSL writes for the key;
#   - the gate: ML-DSA tokens minted by both pass `keyward gateway`
#     (algorithms list ML-DSA) and `keyward token verify` with the tool's JWK
#     Set; tampered copies are refused by both.
#
# DPoP (RFC 9449) with a client library keyward did not write, oauth4webapi
# (dpop.mjs): it makes its own key pairs (ES256, PS256), gets DPoP-bound
# tokens from `keyward serve` with client_credentials (cnf.jkt = its own
# thumbprint), follows use_dpop_nonce in an environment created with
# `--dpop-nonce required`, refreshes a token bound to the same key, and calls
# a `keyward gateway` route with sender_constraint = "dpop" (proof with ath):
# 200 from the upstream; the token as Bearer and a replayed proof get 401.
# (oauth4webapi signs with an Ed25519 key under the RFC 9864 name
# `alg: "Ed25519"`, which keyward does not accept yet, only `EdDSA`: no
# Ed25519 run here.)
#
# Keys in devices (issue 15): environments whose keys live in a fresh
# SoftHSM2 token (ES256, RS256-2048, PS256, EdDSA) and in moto's KMS server
# (ES256, RS256-2048, PS256; moto started through
# crates/signers/tests/moto_kms.py): their tokens verify in Node jose and
# PyJWT like any other.
#
# Login flows (issue 17), with relying-party libraries we did not write: a
# `keyward serve` whose environment sends browsers to the example login app
# (examples/login-app, started here with a logins.accept admin token), and
#   - openid-client (panva; rp.mjs) as a public client,
#   - Authlib (rp.py, its OAuth2Mixin + OpenIDMixin over requests) as a
#     client_secret_basic client,
# each: discovery, the authorization code flow with PKCE S256 (user.py, a
# scripted browser, fills the login and consent forms), the library's own ID
# token validation (iss, aud, nonce, signature via JWKS), code replay and a
# wrong PKCE verifier refused, userinfo, refresh (offline_access), a
# remembered login, RP-initiated logout and the login form shown again after
# it (Authlib also response_mode=form_post, and token exchange, RFC 8693: the
# user's access token for another audience with a narrower scope, checked by
# PyJWT; wider scope and a foreign audience refused). The example login
# app's own unit tests run first.
#
# One line per check ("ok   RS256-2048 node" / "FAIL ..."), then "N passed,
# M failed"; the exit status is non-zero if any check failed.
#
# Needs node >= 20.19 (@noble/post-quantum's floor) with npm, python3 with venv, curl. Dependencies are pinned in
# package-lock.json and requirements.txt and installed here (node_modules/,
# .venv/). KEYWARD_BIN=path skips the cargo build; otherwise the debug binary is
# built in CARGO_TARGET_DIR (default /var/tmp/keyward-target).
#
# Arguments name the sections to run (default: all): algs mldsa-keys pkjwt gate
# devices rp, e.g. `tests/interop/run.sh rp`.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"
started=$(date +%s)
SECTIONS=("$@")
# want SECTION: true when SECTION is to run.
want() {
  [ "${#SECTIONS[@]}" -eq 0 ] && return 0
  local s
  for s in "${SECTIONS[@]}"; do [ "$s" = "$1" ] && return 0; done
  return 1
}

# The servers under test get their configuration from flags only.
for v in $(compgen -e); do
  case "$v" in
    KEYWARD_BIN | KEYWARD_LOG) ;;
    KEYWARD_*) unset "$v" ;;
  esac
done

die() {
  echo "interop: $*" >&2
  exit 2
}

# --- tools and dependencies -------------------------------------------------
command -v curl >/dev/null || die "curl is required"
command -v python3 >/dev/null || die "python3 is required"
command -v node >/dev/null || die "node (>= 20.19) is required"
command -v npm >/dev/null || die "npm is required"
node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)' ||
  die "node >= 20.19 is required (found $(node --version))"

if [ -z "${KEYWARD_BIN:-}" ]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/keyward-target}"
  echo "interop: cargo build -p keyward (debug)"
  cargo build -q -p keyward --locked
  KEYWARD_BIN="$CARGO_TARGET_DIR/debug/keyward"
fi
[ -x "$KEYWARD_BIN" ] || die "no keyward binary at $KEYWARD_BIN"

echo "interop: npm ci, pip install (pinned)"
npm ci --prefix "$HERE" --no-audit --no-fund --loglevel=error >/dev/null
VENV="$HERE/.venv"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$HERE/requirements.txt"
PY="$VENV/bin/python"
echo "interop: keyward $("$KEYWARD_BIN" --version | awk '{print $2}'), node $(node --version)," \
  "jose $(node -p "require('$HERE/node_modules/jose/package.json').version")," \
  "@noble/post-quantum $(node -p "require('$HERE/node_modules/@noble/post-quantum/package.json').version")," \
  "oauth4webapi $(node -p "require('$HERE/node_modules/oauth4webapi/package.json').version")," \
  "openid-client $(node -p "require('$HERE/node_modules/openid-client/package.json').version")," \
  "PyJWT $("$PY" -c 'import jwt; print(jwt.__version__)')," \
  "cryptography $("$PY" -c 'import cryptography; print(cryptography.__version__)')," \
  "Authlib $("$PY" -c 'import authlib; print(authlib.__version__)')"

# --- bookkeeping --------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/keyward-interop.XXXXXX")"
SERVER_PID=""
UPSTREAM_PID=""
GATEWAY_PID=""
passed=0
failed=0

stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

cleanup() {
  stop_server
  [ -z "$GATEWAY_PID" ] || kill "$GATEWAY_PID" 2>/dev/null || true
  [ -z "${LOGIN_PID:-}" ] || kill "$LOGIN_PID" 2>/dev/null || true
  [ -z "$UPSTREAM_PID" ] || kill "$UPSTREAM_PID" 2>/dev/null || true
  [ -z "${MOTO_PID:-}" ] || kill "$MOTO_PID" 2>/dev/null || true
  if [ "$failed" -eq 0 ]; then
    rm -rf "$WORK"
  else
    echo "interop: logs kept in $WORK" >&2
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pass() {
  echo "ok   $1"
  passed=$((passed + 1))
}

# fail LABEL [LOGFILE]: reports a failed check with the tail of its log.
fail() {
  echo "FAIL $1"
  if [ -n "${2:-}" ] && [ -s "$2" ]; then tail -n 15 "$2" | sed 's/^/     /'; fi
  failed=$((failed + 1))
}

# check LABEL CMD...: runs CMD (output to a log), one ok/FAIL line.
check() {
  local label="$1" log
  shift
  log="$WORK/$(echo "$label" | tr -c 'A-Za-z0-9_-' '_').log"
  if "$@" >"$log" 2>&1; then pass "$label"; else fail "$label" "$log"; fi
}

# script_checks LABEL CMD...: runs CMD, whose own "ok   ..." and "FAIL ..."
# lines count as checks; a CMD that fails without a FAIL line is one.
script_checks() {
  local label="$1" log rc=0 line
  shift
  log="$WORK/$(echo "$label" | tr -c 'A-Za-z0-9_-' '_').log"
  "$@" >"$log" 2>&1 || rc=$?
  while IFS= read -r line; do
    case "$line" in
      "ok   "*) pass "${line#ok   }" ;;
      "FAIL "*) fail "${line#FAIL }" "$log" ;;
    esac
  done <"$log"
  if [ "$rc" -ne 0 ] && ! grep -q '^FAIL ' "$log"; then fail "$label (exit $rc)" "$log"; fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# json_get FIELD < JSON
json_get() {
  python3 -c 'import json, sys; v = json.load(sys.stdin).get(sys.argv[1]); print("" if v is None else v)' "$1"
}

# init_env NAME ALG [BITS]: a fresh data dir, `keyward init`. Sets DIR, PORT,
# ISSUER and KW (the keyward command line for DIR). Returns 1 after a FAIL line.
init_env() {
  local name="$1" alg="$2" bits="${3:-}"
  DIR="$WORK/$name"
  mkdir -p "$DIR"
  PORT=$(free_port)
  ISSUER="http://127.0.0.1:$PORT"
  KW=("$KEYWARD_BIN" --data-dir "$DIR/data")
  local init=("${KW[@]}" init --issuer "$ISSUER" --alg "$alg")
  [ -z "$bits" ] || init+=(--bits "$bits")
  if ! "${init[@]}" >"$DIR/init.log" 2>&1; then
    fail "$name init" "$DIR/init.log"
    return 1
  fi
}

# serve_env NAME: `keyward serve` on DIR and PORT, waits (30 s at most) for
# /healthz. Returns 1 after a FAIL line.
serve_env() {
  local name="$1" i
  "${KW[@]}" serve --listen "127.0.0.1:$PORT" >"$DIR/serve.log" 2>&1 &
  SERVER_PID=$!
  for i in $(seq 1 300); do
    if curl -fsS --max-time 2 -o /dev/null "$ISSUER/healthz" 2>/dev/null; then
      return 0
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      fail "$name serve (exited)" "$DIR/serve.log"
      SERVER_PID=""
      return 1
    fi
    sleep 0.1
  done
  fail "$name serve (no /healthz within 30 s)" "$DIR/serve.log"
  return 1
}

# --- one environment per algorithm -------------------------------------------
run_alg() {
  local name="$1" alg="$2" bits="${3:-}" creds id secret resp code token
  echo "-- $name"
  init_env "$name" "$alg" "$bits" || return 0
  if ! creds=$("${KW[@]}" clients create --env default --name interop --scopes "a b" \
    --audience api://interop --json 2>"$DIR/client.log"); then
    fail "$name client" "$DIR/client.log"
    return 0
  fi
  id=$(json_get client_id <<<"$creds" || true)
  secret=$(json_get client_secret <<<"$creds" || true)
  serve_env "$name" || { stop_server; return 0; }

  resp=$(curl -sS --max-time 10 -u "$id:$secret" -d grant_type=client_credentials \
    --data-urlencode "scope=a b" -w '\n%{http_code}' "$ISSUER/oauth2/token" 2>&1) || true
  code=${resp##*$'\n'}
  echo "${resp%$'\n'*}" >"$DIR/token.json"
  token=$(json_get access_token <"$DIR/token.json" 2>/dev/null || true)
  if [ "$code" = 200 ] && [ -n "$token" ]; then
    pass "$name token"
  else
    echo "HTTP $code" >>"$DIR/token.json"
    fail "$name token" "$DIR/token.json"
    stop_server
    return 0
  fi

  case "$alg" in
    ML-DSA-*)
      check "$name node (noble)" node "$HERE/mldsa.mjs" verify "$ISSUER" "$alg" "$token"
      check "$name python (cryptography)" "$PY" "$HERE/mldsa.py" verify "$ISSUER" "$alg" "$token"
      ;;
    *)
      check "$name node" node "$HERE/verify.mjs" "$ISSUER" "$alg" "$token"
      check "$name python" "$PY" "$HERE/verify.py" "$ISSUER" "$alg" "$token"
      ;;
  esac
  stop_server
}

# tampered TOKEN: the token with one character of its signature changed,
# ten from the end (the last one may carry padding bits, and changing it
# can make the encoding non-canonical instead of the signature wrong).
tampered() {
  local token="$1" c
  c=${token: -10:1}
  case "$c" in A) c=B ;; *) c=A ;; esac
  echo "${token:0:${#token}-10}$c${token: -9}"
}

# --- ML-DSA keys made elsewhere: the same seed expansion, kid and SPKI -------
# noble's private AKP JWKs go in with `keys import --jwk`, OpenSSL's seed-form
# PKCS#8 with `keys import --pem`; each must land under the kid the tool
# computed, and a token keyward signs with it must verify under the tool's
# own public key.
run_mldsa_keys() {
  local name=ml-dsa-keys alg tool dir kid want token rec
  echo "-- $name"
  init_env "$name" ES256 || return 0
  if ! node "$HERE/mldsa.mjs" seed "$DIR/node" >"$DIR/seed-node.log" 2>&1; then
    fail "$name seed (noble)" "$DIR/seed-node.log"
    return 0
  fi
  if ! "$PY" "$HERE/mldsa.py" seed "$DIR/python" >"$DIR/seed-py.log" 2>&1; then
    fail "$name seed (cryptography)" "$DIR/seed-py.log"
    return 0
  fi
  for tool in node python; do
    for alg in ML-DSA-44 ML-DSA-65 ML-DSA-87; do
      dir="$DIR/$tool"
      case $tool in
        node) rec=(--jwk "$dir/$alg.jwk") ;;
        *) rec=(--pem "$dir/$alg.pem" --alg "$alg") ;;
      esac
      kid=$("${KW[@]}" keys import --env default "${rec[@]}" --immediate --json 2>"$dir/$alg-import.log" |
        json_get kid 2>>"$dir/$alg-import.log" || true)
      want=$(cat "$dir/$alg.kid")
      if [ -n "$kid" ] && [ "$kid" = "$want" ]; then
        pass "$name $tool $alg seed imported, same pub and kid"
      else
        echo "kid '$kid', the tool's '$want'" >>"$dir/$alg-import.log"
        fail "$name $tool $alg seed imported, same pub and kid" "$dir/$alg-import.log"
        continue
      fi
      if ! token=$("${KW[@]}" token sign --env default --claims '{"sub":"seeded","aud":"api://interop"}' 2>"$dir/$alg-sign.log"); then
        fail "$name $tool $alg token sign" "$dir/$alg-sign.log"
        continue
      fi
      case $tool in
        node) check "$name $tool $alg keyward-signed token verifies (noble)" \
          node "$HERE/mldsa.mjs" verify-jwk "$dir/$alg.jwk" "$alg" "$token" ;;
        *) check "$name $tool $alg keyward-signed token verifies (cryptography)" \
          "$PY" "$HERE/mldsa.py" verify-jwk "$dir/$alg.jwk" "$alg" "$token" ;;
      esac
    done
  done
  "${KW[@]}" keys export --env default >"$DIR/export.jwks" 2>"$DIR/export.log" || true
  "${KW[@]}" keys export --env default --format pem >"$DIR/export.pem" 2>>"$DIR/export.log" || true
  check "$name SPKI PEM export is OpenSSL's (RFC 9881)" "$PY" "$HERE/mldsa.py" spki "$DIR/export.pem" "$DIR/export.jwks"
}

# --- private_key_jwt: jose makes the key pair and the client assertion --------
run_pkjwt() {
  local name=private_key_jwt server_alg=ES256 calg cdir creds token
  local -A ids=()
  echo "-- $name"
  init_env "$name" "$server_alg" || return 0
  for calg in ES256 RS256; do
    cdir="$DIR/client-$calg"
    mkdir -p "$cdir"
    if ! node "$HERE/pkjwt.mjs" keygen "$calg" "$cdir" >"$cdir/keygen.log" 2>&1; then
      fail "$name-$calg keygen" "$cdir/keygen.log"
      continue
    fi
    if ! creds=$("${KW[@]}" clients create --env default --name "interop-pkjwt-$calg" \
      --auth private-key-jwt --jwks "$cdir/client.jwks.json" --scopes a \
      --audience api://interop --json 2>"$cdir/client.log"); then
      fail "$name-$calg client" "$cdir/client.log"
      continue
    fi
    ids[$calg]=$(json_get client_id <<<"$creds" || true)
  done
  [ "${#ids[@]}" -gt 0 ] || return 0
  serve_env "$name" || { stop_server; return 0; }
  for calg in ES256 RS256; do
    [ -n "${ids[$calg]:-}" ] || continue
    cdir="$DIR/client-$calg"
    if token=$(node "$HERE/pkjwt.mjs" token "$ISSUER" "${ids[$calg]}" "$cdir" 2>"$cdir/token.log"); then
      pass "$name-$calg assertion accepted"
    else
      fail "$name-$calg assertion accepted" "$cdir/token.log"
      continue
    fi
    check "$name-$calg node" node "$HERE/verify.mjs" "$ISSUER" "$server_alg" "$token"
    check "$name-$calg replay refused" node "$HERE/pkjwt.mjs" replay "$ISSUER" "${ids[$calg]}" "$cdir"
  done
  stop_server
}

# gate_issuer TOOL: the issuer URL of a minting tool's tokens.
gate_issuer() {
  case "$1" in
    node) echo https://node-issuer.test ;;
    python) echo https://py-issuer.test ;;
    node-pq) echo https://node-pq.test ;;
    python-pq) echo https://py-pq.test ;;
  esac
}

# refused NEEDLE CMD...: CMD fails, saying NEEDLE.
refused() {
  local needle="$1" out
  shift
  if out=$("$@" 2>&1); then
    echo "accepted: $out"
    return 1
  fi
  echo "$out"
  [[ $out == *"$needle"* ]]
}

# --- the gate: tokens minted by jose and PyJWT, verified by `keyward gateway` --
# Each tool makes its own keys (RS256, PS256, ES256, ES384, EdDSA; and with
# noble and cryptography ML-DSA-44/65/87, under their own issuers whose
# `algorithms` list ML-DSA) and tokens; the gateway trusts every JWK Set
# (jwks_file) and proxies to a tiny upstream that answers with the
# X-Auth-Subject it received and logs every request.
run_gate() {
  local name=gate dir up_port gw_port tool alg token sub code body hits_before algs
  echo "-- $name"
  dir="$WORK/$name"
  mkdir -p "$dir/node" "$dir/python"
  if ! node "$HERE/mint.mjs" "$dir/node" https://node-issuer.test api://orders >"$dir/mint-node.log" 2>&1; then
    fail "$name mint (node)" "$dir/mint-node.log"
    return 0
  fi
  if ! "$PY" "$HERE/mint.py" "$dir/python" https://py-issuer.test api://orders >"$dir/mint-py.log" 2>&1; then
    fail "$name mint (python)" "$dir/mint-py.log"
    return 0
  fi
  if ! node "$HERE/mldsa.mjs" mint "$dir/node-pq" https://node-pq.test api://orders >"$dir/mint-node-pq.log" 2>&1; then
    fail "$name mint (noble)" "$dir/mint-node-pq.log"
    return 0
  fi
  if ! "$PY" "$HERE/mldsa.py" mint "$dir/python-pq" https://py-pq.test api://orders >"$dir/mint-py-pq.log" 2>&1; then
    fail "$name mint (cryptography)" "$dir/mint-py-pq.log"
    return 0
  fi
  up_port=$(free_port)
  touch "$dir/upstream.hits"
  "$PY" "$HERE/upstream.py" "$up_port" "$dir/upstream.hits" >"$dir/upstream.log" 2>&1 &
  UPSTREAM_PID=$!
  gw_port=$(free_port)
  {
    echo "listen = \"127.0.0.1:$gw_port\""
    for tool in node python node-pq python-pq; do
      echo
      echo '[[issuer]]'
      echo "issuer = \"$(gate_issuer "$tool")\""
      echo 'audiences = ["api://orders"]'
      echo "jwks_file = \"$dir/$tool/jwks.json\""
      case $tool in *-pq) echo 'algorithms = ["ML-DSA-44", "ML-DSA-65", "ML-DSA-87"]' ;; esac
    done
    echo
    echo '[[route]]'
    echo 'path = "/orders/{id}"'
    echo "upstream = \"http://127.0.0.1:$up_port\""
    echo 'permissions = { all_of = ["orders.{id}.read"] }'
  } >"$dir/gateway.toml"
  "$KEYWARD_BIN" gateway --config "$dir/gateway.toml" >"$dir/gateway.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 100); do
    curl -s --max-time 1 -o /dev/null "http://127.0.0.1:$gw_port/" 2>/dev/null && break
    sleep 0.1
  done
  for _ in $(seq 1 100); do
    curl -s --max-time 1 -o /dev/null "http://127.0.0.1:$up_port/" 2>/dev/null && break
    sleep 0.1
  done
  : >"$dir/upstream.hits"
  for tool in node python node-pq python-pq; do
    case $tool in node*) sub=node-user ;; *) sub=py-user ;; esac
    case $tool in
      *-pq) algs=(ML-DSA-44 ML-DSA-65 ML-DSA-87) ;;
      *) algs=(RS256 PS256 ES256 ES384 EdDSA) ;;
    esac
    for alg in "${algs[@]}"; do
      token=$(json_get "$alg" <"$dir/$tool/tokens.json" 2>/dev/null || true)
      body=$(curl -sS --max-time 5 -H "Authorization: Bearer $token" \
        -w '\n%{http_code}' "http://127.0.0.1:$gw_port/orders/42" 2>&1) || true
      code=${body##*$'\n'}
      if [ "$code" = 200 ] && [ "${body%$'\n'*}" = "hello $sub" ]; then
        pass "$name $tool $alg accepted"
      else
        echo "HTTP $code: ${body%$'\n'*}" >"$dir/$tool-$alg.out"
        fail "$name $tool $alg accepted" "$dir/$tool-$alg.out"
      fi
      # The same token with its signature's last character changed: 401, and
      # the upstream never sees the request.
      # The tool's own JWK Set in `keyward token verify`: ML-DSA tokens verify
      # there as well, and their tampered copies do not.
      if [[ $tool == *-pq ]]; then
        check "$name $tool $alg keyward token verify" "$KEYWARD_BIN" token verify \
          --jwks "$dir/$tool/jwks.json" --iss "$(gate_issuer "$tool")" --aud api://orders --typ at+jwt "$token"
        check "$name $tool $alg keyward token verify refuses it tampered" \
          refused "signature does not verify" "$KEYWARD_BIN" token verify \
          --jwks "$dir/$tool/jwks.json" --iss "$(gate_issuer "$tool")" "$(tampered "$token")"
      fi
      hits_before=$(wc -l <"$dir/upstream.hits")
      token=$(tampered "$token")
      code=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' \
        -H "Authorization: Bearer $token" "http://127.0.0.1:$gw_port/orders/42" 2>&1) || true
      if [ "$code" = 401 ] && [ "$(wc -l <"$dir/upstream.hits")" = "$hits_before" ]; then
        pass "$name $tool $alg tampered refused"
      else
        echo "HTTP $code" >"$dir/$tool-$alg-tampered.out"
        fail "$name $tool $alg tampered refused" "$dir/$tool-$alg-tampered.out"
      fi
    done
  done
  stop_server
  kill "$UPSTREAM_PID" 2>/dev/null || true
  wait "$UPSTREAM_PID" 2>/dev/null || true
}

# --- DPoP with oauth4webapi: issuer, nonces, gateway -------------------------
# Environments "default" (nonces off) and "nonce" (--dpop-nonce required),
# each with a secret client; the gateway trusts both issuers and its route
# requires DPoP. dpop.mjs prints one line per check.
run_dpop() {
  local name=dpop dir up_port gw_port env creds alg out
  local -A ids=() secrets=() refresh=()
  echo "-- $name"
  init_env "$name" ES256 || return 0
  dir="$DIR"
  if ! "${KW[@]}" env create nonce --issuer "$ISSUER/nonce" --alg ES256 --dpop-nonce required \
    >"$dir/env.log" 2>&1; then
    fail "$name env create --dpop-nonce required" "$dir/env.log"
    return 0
  fi
  out=$("${KW[@]}" env show nonce --json 2>>"$dir/env.log" | json_get dpop_nonce || true)
  if [ "$out" = required ]; then pass "$name env show: dpop_nonce required"; else
    echo "dpop_nonce '$out'" >>"$dir/env.log"
    fail "$name env show: dpop_nonce required" "$dir/env.log"
  fi
  for env in default nonce; do
    if ! creds=$("${KW[@]}" clients create --env "$env" --name interop-dpop --scopes a \
      --audience api://interop --json 2>"$dir/client-$env.log"); then
      fail "$name $env client" "$dir/client-$env.log"
      return 0
    fi
    ids[$env]=$(json_get client_id <<<"$creds" || true)
    secrets[$env]=$(json_get client_secret <<<"$creds" || true)
  done
  # One refresh token per library key pair (a refresh token is used once).
  for alg in ES256 PS256; do
    refresh[$alg]=$("${KW[@]}" token issue --env nonce --sub alice --client "${ids[nonce]}" --json \
      2>"$dir/issue-$alg.log" | json_get refresh_token 2>>"$dir/issue-$alg.log" || true)
    [ -n "${refresh[$alg]}" ] || fail "$name token issue ($alg refresh token)" "$dir/issue-$alg.log"
  done
  serve_env "$name" || { stop_server; return 0; }
  up_port=$(free_port)
  touch "$dir/upstream.hits"
  "$PY" "$HERE/upstream.py" "$up_port" "$dir/upstream.hits" >"$dir/upstream.log" 2>&1 &
  UPSTREAM_PID=$!
  gw_port=$(free_port)
  {
    echo "listen = \"127.0.0.1:$gw_port\""
    for env in "$ISSUER" "$ISSUER/nonce"; do
      echo
      echo '[[issuer]]'
      echo "issuer = \"$env\""
      echo 'audiences = ["api://interop"]'
    done
    echo
    echo '[[route]]'
    echo 'path = "/orders/{id}"'
    echo "upstream = \"http://127.0.0.1:$up_port\""
    echo 'sender_constraint = "dpop"'
  } >"$dir/gateway.toml"
  "$KEYWARD_BIN" gateway --config "$dir/gateway.toml" >"$dir/gateway.log" 2>&1 &
  GATEWAY_PID=$!
  for _ in $(seq 1 100); do
    curl -s --max-time 1 -o /dev/null "http://127.0.0.1:$gw_port/" 2>/dev/null && break
    sleep 0.1
  done
  for _ in $(seq 1 100); do
    curl -s --max-time 1 -o /dev/null "http://127.0.0.1:$up_port/" 2>/dev/null && break
    sleep 0.1
  done
  : >"$dir/upstream.hits"
  for alg in ES256 PS256; do
    script_checks "$name $alg nonce required" node "$HERE/dpop.mjs" "$alg" required "$ISSUER/nonce" \
      "${ids[nonce]}" "${secrets[nonce]}" "http://127.0.0.1:$gw_port/orders/42" "$dir/upstream.hits" \
      "${refresh[$alg]}"
  done
  script_checks "$name ES256 nonce off" node "$HERE/dpop.mjs" ES256 off "$ISSUER" \
    "${ids[default]}" "${secrets[default]}" "http://127.0.0.1:$gw_port/orders/7" "$dir/upstream.hits"
  kill "$GATEWAY_PID" 2>/dev/null || true
  wait "$GATEWAY_PID" 2>/dev/null || true
  GATEWAY_PID=""
  kill "$UPSTREAM_PID" 2>/dev/null || true
  wait "$UPSTREAM_PID" 2>/dev/null || true
  UPSTREAM_PID=""
  stop_server
}

# --- keys in devices: a SoftHSM2 token (PKCS#11) and moto's KMS ---------------
# run_device NAME STORE ALG [BITS]: a data dir whose environment "dev" keeps
# its keys in STORE (pkcs11: a fresh SoftHSM2 token; aws-kms: the moto server
# at $MOTO_URL); its token verifies in Node jose and PyJWT like any other.
run_device() {
  local name="$1" store="$2" alg="$3" bits="${4:-}" creds id secret resp code token dev
  echo "-- $name"
  init_env "$name" ES256 || return 0
  local vars=()
  case "$store" in
    pkcs11)
      mkdir -p "$DIR/tokens"
      printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$DIR/tokens" >"$DIR/softhsm2.conf"
      if ! SOFTHSM2_CONF="$DIR/softhsm2.conf" softhsm2-util --init-token --free --label interop \
        --pin 1234 --so-pin 5678 >"$DIR/token-init.log" 2>&1; then
        fail "$name softhsm token" "$DIR/token-init.log"
        return 0
      fi
      vars=(SOFTHSM2_CONF="$DIR/softhsm2.conf" KEYWARD_PKCS11_MODULE=/usr/lib/softhsm/libsofthsm2.so
        KEYWARD_PKCS11_TOKEN_LABEL=interop KEYWARD_PKCS11_PIN=1234)
      ;;
    aws-kms)
      vars=(KEYWARD_AWS_KMS=1 KEYWARD_AWS_KMS_ENDPOINT_URL="$MOTO_URL" KEYWARD_AWS_KMS_REGION=us-east-1
        AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true)
      ;;
  esac
  KW=(env "${vars[@]}" "${KW[@]}")
  dev="$ISSUER/dev"
  local create=("${KW[@]}" env create dev --issuer "$dev" --key-store "$store" --alg "$alg")
  [ -z "$bits" ] || create+=(--bits "$bits")
  if ! "${create[@]}" >"$DIR/env.log" 2>&1; then
    fail "$name env create --key-store $store" "$DIR/env.log"
    return 0
  fi
  if ! creds=$("${KW[@]}" clients create --env dev --name interop --scopes "a b" \
    --audience api://interop --json 2>"$DIR/client.log"); then
    fail "$name client" "$DIR/client.log"
    return 0
  fi
  id=$(json_get client_id <<<"$creds" || true)
  secret=$(json_get client_secret <<<"$creds" || true)
  serve_env "$name" || { stop_server; return 0; }
  resp=$(curl -sS --max-time 10 -u "$id:$secret" -d grant_type=client_credentials \
    --data-urlencode "scope=a b" -w '\n%{http_code}' "$dev/oauth2/token" 2>&1) || true
  code=${resp##*$'\n'}
  echo "${resp%$'\n'*}" >"$DIR/token.json"
  token=$(json_get access_token <"$DIR/token.json" 2>/dev/null || true)
  if [ "$code" = 200 ] && [ -n "$token" ]; then
    pass "$name token"
    check "$name node" node "$HERE/verify.mjs" "$dev" "$alg" "$token"
    check "$name python" "$PY" "$HERE/verify.py" "$dev" "$alg" "$token"
  else
    echo "HTTP $code" >>"$DIR/token.json"
    fail "$name token" "$DIR/token.json"
  fi
  stop_server
}

MOTO_PID=""
start_moto() {
  local port i
  port=$(free_port)
  python3 "$ROOT/crates/signers/tests/moto_kms.py" -H 127.0.0.1 -p "$port" >"$WORK/moto.log" 2>&1 &
  MOTO_PID=$!
  MOTO_URL="http://127.0.0.1:$port"
  for i in $(seq 1 300); do
    curl -s --max-time 2 -o /dev/null "$MOTO_URL/" 2>/dev/null && return 0
    sleep 0.1
  done
  fail "moto server (no answer within 30 s)" "$WORK/moto.log"
  return 1
}

# --- login flows: relying parties we did not write (issue 17) ----------------
# steps LABEL CMD...: CMD prints "ok   STEP" / "FAIL STEP: why" lines (rp.mjs,
# rp.py); each is one check. A non-zero exit without a FAIL line fails too.
steps() {
  local label="$1" log line rc=0
  shift
  log="$WORK/$(echo "$label" | tr -c 'A-Za-z0-9_-' '_').log"
  "$@" >"$log" 2>&1 || rc=$?
  while IFS= read -r line; do
    case "$line" in
      "ok   "*) pass "$label: ${line#ok   }" ;;
      "FAIL "*) fail "$label: ${line#FAIL }" "$log" ;;
    esac
  done <"$log"
  if [ "$rc" -ne 0 ] && ! grep -q '^FAIL ' "$log"; then fail "$label (exit $rc)" "$log"; fi
}

LOGIN_PID=""
# start_login_app ISSUER_ROOT ADMIN_TOKEN PORT LOG: the example login app; waits for /healthz.
start_login_app() {
  local i
  LOGIN_APP_KEYWARD_URL="$1" LOGIN_APP_ADMIN_TOKEN="$2" LOGIN_APP_ENV=default \
    LOGIN_APP_LISTEN="127.0.0.1:$3" python3 "$ROOT/examples/login-app/app.py" >"$4" 2>&1 &
  LOGIN_PID=$!
  for i in $(seq 1 100); do
    curl -fsS --max-time 1 -o /dev/null "http://127.0.0.1:$3/healthz" 2>/dev/null && return 0
    sleep 0.1
  done
  fail "login app (no /healthz within 10 s)" "$4"
  return 1
}

stop_login_app() {
  [ -n "$LOGIN_PID" ] || return 0
  kill "$LOGIN_PID" 2>/dev/null || true
  wait "$LOGIN_PID" 2>/dev/null || true
  LOGIN_PID=""
}

run_rp() {
  local name=rp lport rp_base admin tool creds
  local -A ids=() secrets=()
  echo "-- $name"
  check "$name example login app unit tests" python3 -m unittest "$ROOT/examples/login-app/test_app.py"
  init_env "$name" ES256 || return 0
  lport=$(free_port)
  # Nothing listens at the relying party's address: the scripted browser
  # (user.py) stops at the first redirect there and hands it to the library.
  rp_base="http://127.0.0.1:$(free_port)"
  if ! "${KW[@]}" env update default --login-url "http://127.0.0.1:$lport/login" \
    --consent-url "http://127.0.0.1:$lport/consent" >"$DIR/env.log" 2>&1; then
    fail "$name env update --login-url" "$DIR/env.log"
    return 0
  fi
  if ! admin=$("${KW[@]}" admin-token create --name login-app --owner interop --ttl 1h \
    --permissions keyward.env.default.logins.accept --json 2>"$DIR/admin.log" | json_get token) || [ -z "$admin" ]; then
    fail "$name admin token for the login app" "$DIR/admin.log"
    return 0
  fi
  for tool in node python; do
    local kind=()
    # The Authlib client also exchanges the user's token (RFC 8693) for api://downstream.
    case $tool in
      # The openid-client one is also a device (RFC 8628 device grant).
      node) kind=(--public --grant-type urn:ietf:params:oauth:grant-type:device_code) ;;
      python) kind=(--grant-type urn:ietf:params:oauth:grant-type:token-exchange --audience api://downstream) ;;
    esac
    if ! creds=$("${KW[@]}" clients create --env default --name "rp-$tool" "${kind[@]}" \
      --scopes "openid profile email offline_access" --audience api://interop \
      --grant-type authorization_code --grant-type refresh_token \
      --redirect-uri "$rp_base/callback" --post-logout-redirect-uri "$rp_base/logged-out" \
      --json 2>"$DIR/client-$tool.log"); then
      fail "$name client rp-$tool" "$DIR/client-$tool.log"
      return 0
    fi
    ids[$tool]=$(json_get client_id <<<"$creds")
    secrets[$tool]=$(json_get client_secret <<<"$creds")
  done
  serve_env "$name" || { stop_server; return 0; }
  start_login_app "$ISSUER" "$admin" "$lport" "$DIR/login-app.log" || { stop_server; return 0; }
  steps "$name openid-client (public client)" node "$HERE/rp.mjs" "$ISSUER" "${ids[node]}" - \
    "$rp_base" "$DIR/jar-node.txt" python3 "$HERE/user.py"
  RP_EXCHANGE_AUDIENCE=api://downstream \
    steps "$name Authlib (client_secret_basic)" "$PY" "$HERE/rp.py" "$ISSUER" "${ids[python]}" \
    "${secrets[python]}" "$rp_base" "$DIR/jar-python.txt" python3 "$HERE/user.py"
  stop_login_app
  stop_server
}

if want algs; then
  run_alg RS256-2048 RS256 2048
  run_alg RS256-4096 RS256 4096
  run_alg PS256 PS256 2048
  run_alg ES256 ES256
  run_alg ES384 ES384
  run_alg EdDSA EdDSA
  run_alg ML-DSA-44 ML-DSA-44
  run_alg ML-DSA-65 ML-DSA-65
  run_alg ML-DSA-87 ML-DSA-87
fi
want mldsa-keys && run_mldsa_keys
want pkjwt && run_pkjwt
want gate && run_gate
want dpop && run_dpop
if want devices; then
  run_device pkcs11-ES256 pkcs11 ES256
  run_device pkcs11-RS256-2048 pkcs11 RS256 2048
  run_device pkcs11-PS256 pkcs11 PS256 2048
  run_device pkcs11-EdDSA pkcs11 EdDSA
  if start_moto; then
    run_device aws-kms-ES256 aws-kms ES256
    run_device aws-kms-RS256-2048 aws-kms RS256 2048
    run_device aws-kms-PS256 aws-kms PS256 2048
    kill "$MOTO_PID" 2>/dev/null || true
    wait "$MOTO_PID" 2>/dev/null || true
  fi
fi
want rp && run_rp

echo "interop: $(($(date +%s) - started)) s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
