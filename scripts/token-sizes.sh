#!/usr/bin/env bash
# Measures the size of a typical keyward access token per signing algorithm:
# for each, a fresh data dir (`keyward init --alg ALG`), a client with two
# scopes and one audience, and `keyward token issue` for a user with two
# roles and three permissions; prints the length in bytes of each compact
# JWS segment (base64url header, payload, signature) and of the whole token,
# and how much of the 8 KiB (8,192-byte) limit gates enforce it leaves.
#
# usage: scripts/token-sizes.sh        (KEYWARD_BIN=path skips the build)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/keyward-target}"
if [ -z "${KEYWARD_BIN:-}" ]; then
  cargo build -q -p keyward
  KEYWARD_BIN="$CARGO_TARGET_DIR/debug/keyward"
fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
for v in $(compgen -e); do case "$v" in KEYWARD_BIN) ;; KEYWARD_*) unset "$v" ;; esac; done

printf '%-12s %8s %8s %10s %8s %12s\n' algorithm header payload signature total "left of 8192"
for spec in RS256:2048 RS256:4096 PS256:2048 ES256:0 ES384:0 EdDSA:0 ML-DSA-44:0 ML-DSA-65:0 ML-DSA-87:0; do
  alg="${spec%%:*}"; bits="${spec##*:}"
  dir="$WORK/$alg-$bits"
  kw=("$KEYWARD_BIN" --data-dir "$dir")
  extra=(); [ "$bits" = 0 ] || extra=(--bits "$bits")
  "${kw[@]}" init --issuer https://auth.example.com/prod --alg "$alg" "${extra[@]}" >/dev/null
  id=$("${kw[@]}" clients create --env default --name billing-dashboard \
    --scopes "orders:read invoices:read" --audience https://api.example.com --json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["client_id"])')
  token=$("${kw[@]}" token issue --env default --sub user_2f9c1e7a4b --client "$id" \
    --roles "billing viewer" --permissions "orders.*.read invoices.42.read customers.self.write" --json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  label="$alg"; [ "$bits" = 0 ] || label="$alg-$bits"
  python3 - "$label" "$token" <<'PY'
import sys
label, token = sys.argv[1], sys.argv[2]
h, p, s = token.split(".")
print(f"{label:<12} {len(h):>8} {len(p):>8} {len(s):>10} {len(token):>8} {8192 - len(token):>12}")
PY
done
