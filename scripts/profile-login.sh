#!/usr/bin/env bash
# Where keyward's CPU goes in a browser login (issue 17): the release server
# runs under callgrind (SQLite, ES256), instrumentation on only while
# bench_login drives complete code-flow logins (authorize, login accept,
# consent accept, token; 8 requests each) and then while curl asks for
# client_credentials tokens, so each figure is instructions per login or per
# token with nothing of the server's start-up in it. Prints both, their
# ratio, and the functions with the most inclusive instructions per login.
#
# usage: scripts/profile-login.sh [LOGINS_SECONDS] [TOKENS]
#   (default 20 s of logins with one browser, 200 tokens; valgrind runs the
#   server ~50x slower, so the counts are small but exact: instructions do
#   not depend on what else the machine does)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-20}"
TOKENS="${2:-200}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/keyward-target}"
command -v valgrind >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind; }
cargo build --release -q -p keyward
cargo build --release -q -p keyward --example bench_login
BIN="$CARGO_TARGET_DIR/release/keyward"
LOGIN_BIN="$CARGO_TARGET_DIR/release/examples/bench_login"
WORK=$(mktemp -d)
PID=""
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
json() { python3 -c "import json,sys; print(json.load(sys.stdin)[\"$1\"])"; }

port=$(free_port)
export KEYWARD_DATA_DIR="$WORK/data"
"$BIN" init --issuer "http://127.0.0.1:$port" --alg ES256 >/dev/null
c=$("$BIN" clients create --env default --name bench --scopes "a b" --audience api://bench --json)
CC_AUTH="$(echo "$c" | json client_id):$(echo "$c" | json client_secret)"
"$BIN" env update default --login-url http://127.0.0.1:9/login >/dev/null
ADMIN_TOKEN=$("$BIN" admin-token create --name bench --permissions keyward.env.default.logins.accept --ttl 1h --json | json token)
REDIRECT_URI="http://127.0.0.1:9/callback"
c=$("$BIN" clients create --env default --name bench-login --scopes "openid profile email" \
  --audience api://bench --grant-type authorization_code --redirect-uri "$REDIRECT_URI" --json)
LOGIN_ID=$(echo "$c" | json client_id)
LOGIN_SECRET=$(echo "$c" | json client_secret)

OUT="$WORK/callgrind.out"
KEYWARD_LOG=warn valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT.%p" \
  "$BIN" serve --listen "127.0.0.1:$port" >/dev/null 2>"$WORK/serve.log" &
PID=$!
for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
curl -sf "http://127.0.0.1:$port/healthz" >/dev/null || { cat "$WORK/serve.log" >&2; exit 1; }

# A warm-up, not counted: what a server does once per thread (aws-lc seeds
# each thread's random generator from CPU jitter, ~2 million instructions
# under valgrind) is not a login's cost.
"$LOGIN_BIN" "http://127.0.0.1:$port" "http://127.0.0.1:$port" default "$ADMIN_TOKEN" "$LOGIN_ID" "$LOGIN_SECRET" \
  "$REDIRECT_URI" 2 5 >/dev/null
for _ in 1 2 3 4; do curl -sf -u "$CC_AUTH" -d grant_type=client_credentials "http://127.0.0.1:$port/oauth2/token" >/dev/null; done

# Logins.
callgrind_control -z "$PID" >/dev/null 2>&1
callgrind_control -i on "$PID" >/dev/null 2>&1
r=$("$LOGIN_BIN" "http://127.0.0.1:$port" "http://127.0.0.1:$port" default "$ADMIN_TOKEN" "$LOGIN_ID" "$LOGIN_SECRET" \
  "$REDIRECT_URI" 1 "$SECS")
callgrind_control -i off "$PID" >/dev/null 2>&1
callgrind_control -d logins "$PID" >/dev/null 2>&1
LOGINS=$(echo "$r" | json logins)
ERRORS=$(echo "$r" | json errors)
[ "$ERRORS" = 0 ] || { echo "failed logins: $r" >&2; exit 1; }

# client_credentials tokens, the baseline.
callgrind_control -z "$PID" >/dev/null 2>&1
callgrind_control -i on "$PID" >/dev/null 2>&1
ok=0
for _ in $(seq 1 "$TOKENS"); do
  curl -sf -u "$CC_AUTH" -d grant_type=client_credentials "http://127.0.0.1:$port/oauth2/token" >/dev/null && ok=$((ok + 1))
done
callgrind_control -i off "$PID" >/dev/null 2>&1
callgrind_control -d tokens "$PID" >/dev/null 2>&1
kill "$PID"; wait "$PID" 2>/dev/null || true
PID=""

total() { callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ && !t {v=$1; gsub(",","",v); t=v} END {print t}'; }
fl=$(find "$WORK" -name 'callgrind.out.*.1' | sort | sed -n 1p)
ft=$(find "$WORK" -name 'callgrind.out.*.2' | sort | sed -n 1p)
il=$(total "$fl"); it=$(total "$ft")
python3 - "$il" "$LOGINS" "$it" "$ok" <<'PY'
import sys
il, n, it, t = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
pl, pt = il / n, it / t
print(f"code-flow login (8 requests, ES256 access + ID token, SQLite): {pl:,.0f} instructions per login ({n} logins)")
print(f"client_credentials token (1 request, ES256, SQLite):          {pt:,.0f} instructions per token ({t} tokens)")
print(f"a login costs {pl / pt:.1f} client_credentials tokens")
PY
top() { # FILE COUNT: the first COUNT function lines of an annotation, per login
  awk -v n="$LOGINS" -v m="$2" '/^ *[0-9,]+ .*\(/ && c < m {v=$1; gsub(",","",v); $1=""; sub(/ \[.*$/, ""); printf "%12.0f %s\n", v/n, $0; c++}' "$1"
}
callgrind_annotate --inclusive=yes --threshold=100 "$fl" 2>/dev/null >"$WORK/inclusive.txt" || true
callgrind_annotate --threshold=100 "$fl" 2>/dev/null >"$WORK/self.txt" || true
echo
echo "instructions per login, inclusive (a function and what it calls), top 45:"
top "$WORK/inclusive.txt" 45
echo
echo "instructions per login, in the function itself, top 25:"
top "$WORK/self.txt" 25
