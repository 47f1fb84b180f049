#!/usr/bin/env bash
# Token-endpoint benchmark, in one run on this machine, with wrk:
#   the trivial endpoint (/healthz) of the same server as the baseline, and
#   POST /oauth2/token (client_credentials) for ES256, RS256-2048, RS256-4096
#   and ML-DSA-65 (FIPS 204, RFC 9964), on SQLite and (when a PostgreSQL URL
#   is given) on PostgreSQL, and ES256 and RS256-2048 keys in a SoftHSM2
#   token next to local keys of the same algorithms in one server,
# plus the machine's raw RSA-4096 and ML-DSA-65 signing rates (aws-lc-rs,
# all cores), and in the ES256 servers the full authorization code flow
# (issue 17): complete logins per second driven by bench_login
# (crates/cli/examples/bench_login.rs, LOGIN_CONNS concurrent browsers, default
# 8): authorize -> login request + accept (admin API, as the login app does)
# -> authorize -> consent request + accept -> authorize -> token (ID + access
# token), 8 requests per login, each with a fresh browser session; and
# keyward's server CPU per login and per client_credentials token, from
# /proc/PID/stat over a max-rate run of each, in the same server.
# Each run: max throughput (wrk -c CONNS), then p50/p99 at ~50% of that rate
# (each wrk connection waits 10 ms before every request; the number of
# connections that offers half the maximum is found by a 3 s probe). The
# "50% rps" column is the rate actually achieved.
#
# usage: [DEVICE_ONLY=1 | CODE_FLOW_ONLY=1] scripts/bench-issuer.sh [SECONDS] [POSTGRES_URL]
#   (default 10 s per run; PostgreSQL from KEYWARD_TEST_DATABASE_URL if set;
#   CODE_FLOW_ONLY=1: only the ES256 servers' trivial, client_credentials and
#   code-flow cases)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR="${1:-10}"
PG="${2:-${KEYWARD_TEST_DATABASE_URL:-}}"
CONNS="${CONNS:-32}"
THREADS="${WRK_THREADS:-1}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/keyward-target}"
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
cargo build --release -q -p keyward
cargo build --release -q -p keyward-jose --example sign_rate
cargo build --release -q -p keyward --example bench_login
BIN="$CARGO_TARGET_DIR/release/keyward"
LOGIN_BIN="$CARGO_TARGET_DIR/release/examples/bench_login"
LOGIN_CONNS="${LOGIN_CONNS:-8}"
RATE_BIN="$CARGO_TARGET_DIR/release/examples/sign_rate"
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

# free_port, parse
. scripts/bench-lib.sh


# lua SCRIPT [POST_AUTH]: a wrk script; paced by DELAY_MS when that is set.
lua() {
  { echo 'local d = os.getenv("DELAY_MS")'
    echo 'if d then function delay() return tonumber(d) end end'
    if [ -n "${2:-}" ]; then
      echo 'wrk.method = "POST"'
      echo 'wrk.body = "grant_type=client_credentials"'
      echo 'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"'
      echo "wrk.headers[\"Authorization\"] = \"Basic $2\""
    fi; } > "$1"
}

# run_case NAME ADDR PATH SCRIPT: max rate, then ~50% of it; prints a row
run_case() {
  local name="$1" addr="$2" path="$3" script="$4"
  local max half rps
  max=$(wrk -t"$THREADS" -c"$CONNS" -d"${DUR}s" --latency -s "$script" "http://$addr$path" | parse | cut -d' ' -f1-3)
  rps=$(echo "$max" | cut -d' ' -f1)
  # ~50% load: each connection waits DELAY ms before every request; wrk's
  # delay is whole milliseconds, so the offered rate is set by the number of
  # connections, found with a 3 s probe and one proportional correction.
  local delay=10 conns probe
  conns=$(python3 -c "print(max(1,round($rps*0.5*($delay+1)/1000)))")
  probe=$(DELAY_MS="$delay" wrk -t"$THREADS" -c"$conns" -d3s --latency -s "$script" "http://$addr$path" | parse | cut -d' ' -f1)
  conns=$(python3 -c "print(max(1,round($conns*$rps*0.5/max($probe,1))))")
  half=$(DELAY_MS="$delay" wrk -t"$THREADS" -c"$conns" -d"${DUR}s" --latency -s "$script" "http://$addr$path" | parse | cut -d' ' -f1-3)
  printf "%-26s %10s %9s %9s   %10s %9s %9s\n" "$name" $max $half
}

start_server() { # DATA_DIR DBURL ALG BITS -> sets ADDR, SECRET_B64, PID
  local dir="$1" db="$2" alg="$3" bits="$4" port
  port=$(free_port)
  local envs=(KEYWARD_DATA_DIR="$dir")
  [ -n "$db" ] && envs+=(KEYWARD_DATABASE_URL="$db")
  local bitsarg=(); [ "$bits" != 0 ] && bitsarg=(--bits "$bits")
  env "${envs[@]}" "$BIN" init --issuer "http://127.0.0.1:$port" --alg "$alg" "${bitsarg[@]}" >/dev/null
  local c; c=$(env "${envs[@]}" "$BIN" clients create --env default --name bench --scopes "a b" --audience api://bench --json)
  local id secret
  id=$(echo "$c" | python3 -c 'import json,sys; print(json.load(sys.stdin)["client_id"])')
  secret=$(echo "$c" | python3 -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])')
  SECRET_B64=$(printf '%s:%s' "$id" "$secret" | base64 -w0)
  if [ "$alg" = ES256 ]; then
    # The code flow: a login URL nobody visits (bench_login reads the
    # challenge from the redirect and accepts through the admin API), an
    # admin token for that, a client with a redirect URI.
    env "${envs[@]}" "$BIN" env update default --login-url http://127.0.0.1:9/login >/dev/null
    ADMIN_TOKEN=$(env "${envs[@]}" "$BIN" admin-token create --name bench --permissions keyward.env.default.logins.accept \
      --ttl 1h --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
    REDIRECT_URI="http://127.0.0.1:9/callback"
    c=$(env "${envs[@]}" "$BIN" clients create --env default --name bench-login --scopes "openid profile email" \
      --audience api://bench --grant-type authorization_code --redirect-uri "$REDIRECT_URI" --json)
    LOGIN_ID=$(echo "$c" | python3 -c 'import json,sys; print(json.load(sys.stdin)["client_id"])')
    LOGIN_SECRET=$(echo "$c" | python3 -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])')
  fi
  env "${envs[@]}" KEYWARD_LOG=warn "$BIN" serve --listen "127.0.0.1:$port" >/dev/null 2>"$dir.log" &
  PID=$!
  ADDR="127.0.0.1:$port"
  for _ in $(seq 1 100); do curl -sf "http://$ADDR/healthz" >/dev/null && break; sleep 0.1; done
}

# cpu_case NAME ADDR PATH SCRIPT: a max-rate wrk run; prints "rps cpu_ms_per_request".
cpu_case() {
  local c0 c1 out
  c0=$(cpu "$PID")
  out=$(wrk -t"$THREADS" -c"$CONNS" -d"${DUR}s" --latency -s "$4" "http://$2$3" | parse)
  c1=$(cpu "$PID")
  python3 -c "import sys; rps,n=float(sys.argv[1]),int(sys.argv[2]); print('%.0f %.3f'%(rps,($c1-$c0)*1000/max(n,1)))" \
    "$(echo "$out" | cut -d' ' -f1)" "$(echo "$out" | cut -d' ' -f4)"
}

# code_flow_case STORE ADDR: complete logins per second (bench_login) and
# the server's CPU per login; prints a row, sets CF_RATE and CF_CPU.
code_flow_case() {
  local store="$1" addr="$2" c0 c1 out
  c0=$(cpu "$PID")
  out=$("$LOGIN_BIN" "http://$addr" "http://$addr" default "$ADMIN_TOKEN" "$LOGIN_ID" "$LOGIN_SECRET" \
    "$REDIRECT_URI" "$LOGIN_CONNS" "$DUR")
  c1=$(cpu "$PID")
  read -r CF_RATE CF_P50 CF_P99 CF_CPU CF_ERR < <(python3 -c '
import json, sys
r = json.loads(sys.argv[1]); c0, c1 = float(sys.argv[2]), float(sys.argv[3])
if r["errors"]: sys.stderr.write("WARNING: %d failed logins, first: %s\n" % (r["errors"], r["first_error"]))
print("%.0f %.1f %.1f %.2f %d" % (r["rate"], r["p50_ms"], r["p99_ms"], (c1 - c0) * 1000 / max(r["logins"], 1), r["errors"]))
' "$out" "$c0" "$c1")
  printf "%-26s %10s %9s %9s   (logins/s, ms per login; %s concurrent; %s failed)\n" \
    "$store code flow ES256" "$CF_RATE" "$CF_P50" "$CF_P99" "$LOGIN_CONNS" "$CF_ERR"
}

if [ "${CODE_FLOW_ONLY:-0}" = 1 ]; then
  raw_rsa=0 raw_mldsa=0
else
  raw_rsa=$("$RATE_BIN" RS256 4096 "$DUR" "$(nproc)")
  raw_mldsa=$("$RATE_BIN" ML-DSA-65 0 "$DUR" "$(nproc)")
fi
if [ "${CODE_FLOW_ONLY:-0}" = 1 ]; then
  echo "machine: $(nproc) cores (CODE_FLOW_ONLY: no raw signing rates)"
else
  echo "machine: $(nproc) cores; raw signing rates (aws-lc-rs, $(nproc) threads): RSA-4096 $raw_rsa/s, ML-DSA-65 $raw_mldsa/s"
fi
printf "%-26s %10s %9s %9s   %10s %9s %9s\n" "case" "max rps" "p50 ms" "p99 ms" "50% rps" "p50 ms" "p99 ms"

declare -A RESULT
# DEVICE_ONLY=1: only the SoftHSM2 cases below.
for store in sqlite postgres; do
  [ "${DEVICE_ONLY:-0}" = 1 ] && break
  db=""
  if [ "$store" = postgres ]; then
    [ -n "$PG" ] || { echo "(PostgreSQL skipped: no URL)"; continue; }
    schema="kw_bench_$RANDOM$RANDOM"
    PGOPTIONS="-c client_min_messages=warning" psql "$PG" -qc "CREATE SCHEMA $schema"
    sep='?'; [[ "$PG" == *\?* ]] && sep='&'
  fi
  specs=(ES256:0 RS256:2048 RS256:4096 ML-DSA-65:0)
  [ "${CODE_FLOW_ONLY:-0}" = 1 ] && specs=(ES256:0)
  for spec in "${specs[@]}"; do
    alg="${spec%%:*}"; bits="${spec##*:}"
    dir="$WORK/$store-$alg-$bits"
    if [ "$store" = postgres ]; then
      PGOPTIONS="-c client_min_messages=warning" psql "$PG" -qc "DROP SCHEMA IF EXISTS $schema CASCADE; CREATE SCHEMA $schema"
      db="$PG${sep}options=-c%20search_path%3D$schema"
    fi
    start_server "$dir" "$db" "$alg" "$bits"
    if [ "$spec" = ES256:0 ]; then
      lua "$WORK/get.lua"
      row=$(run_case "$store trivial (/healthz)" "$ADDR" /healthz "$WORK/get.lua"); echo "$row"
      RESULT[$store-trivial]=$(echo "$row" | awk '{print $(NF-5)}')
    fi
    label="$alg"; [ "$bits" != 0 ] && label="$alg-$bits"
    lua "$WORK/post.lua" "$SECRET_B64"
    row=$(run_case "$store token $label" "$ADDR" /oauth2/token "$WORK/post.lua"); echo "$row"
    RESULT[$store-$label]=$(echo "$row" | awk '{print $(NF-5)}')
    if [ "$alg" = ES256 ]; then
      read -r cc_rps cc_cpu < <(cpu_case "$store token ES256" "$ADDR" /oauth2/token "$WORK/post.lua")
      code_flow_case "$store" "$ADDR"
      RESULT[$store-cf]="$CF_RATE $CF_CPU $cc_rps $cc_cpu"
    fi
    kill "$PID"; wait "$PID" 2>/dev/null || true
  done
  [ "$store" = postgres ] && PGOPTIONS="-c client_min_messages=warning" psql "$PG" -qc "DROP SCHEMA IF EXISTS $schema CASCADE"
done

[ "${CODE_FLOW_ONLY:-0}" = 1 ] && DEVICE_SKIP=1
# Keys in a device next to local keys, in one server (SQLite): environments
# "local-*" keep sealed keys, "hsm-*" keys made in a fresh SoftHSM2 token.
if [ "${DEVICE_SKIP:-0}" = 1 ]; then
  :
elif [ -e /usr/lib/softhsm/libsofthsm2.so ] && command -v softhsm2-util >/dev/null; then
  dir="$WORK/device"; mkdir -p "$dir/tokens"
  printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$dir/tokens" >"$dir/softhsm2.conf"
  export SOFTHSM2_CONF="$dir/softhsm2.conf"
  softhsm2-util --init-token --free --label bench --pin 1234 --so-pin 5678 >/dev/null
  hsm=(KEYWARD_DATA_DIR="$dir/data" KEYWARD_PKCS11_MODULE=/usr/lib/softhsm/libsofthsm2.so
    KEYWARD_PKCS11_TOKEN_LABEL=bench KEYWARD_PKCS11_PIN=1234)
  port=$(free_port)
  env "${hsm[@]}" "$BIN" init --issuer "http://127.0.0.1:$port" --alg ES256 >/dev/null
  declare -A AUTH
  for spec in local-ES256:local:ES256:0 hsm-ES256:pkcs11:ES256:0 local-RS256-2048:local:RS256:2048 hsm-RS256-2048:pkcs11:RS256:2048; do
    IFS=: read -r name ks alg bits <<<"$spec"
    bitsarg=(); [ "$bits" != 0 ] && bitsarg=(--bits "$bits")
    env "${hsm[@]}" "$BIN" env create "$name" --issuer "http://127.0.0.1:$port/$name" --key-store "$ks" --alg "$alg" "${bitsarg[@]}" >/dev/null
    c=$(env "${hsm[@]}" "$BIN" clients create --env "$name" --name bench --scopes "a b" --audience api://bench --json)
    id=$(echo "$c" | python3 -c 'import json,sys; print(json.load(sys.stdin)["client_id"])')
    secret=$(echo "$c" | python3 -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])')
    AUTH[$name]=$(printf '%s:%s' "$id" "$secret" | base64 -w0)
  done
  env "${hsm[@]}" KEYWARD_LOG=warn "$BIN" serve --listen "127.0.0.1:$port" >/dev/null 2>"$dir.log" &
  PID=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  for name in local-ES256 hsm-ES256 local-RS256-2048 hsm-RS256-2048; do
    lua "$WORK/post-$name.lua" "${AUTH[$name]}"
    row=$(run_case "sqlite token $name" "127.0.0.1:$port" "/$name/oauth2/token" "$WORK/post-$name.lua"); echo "$row"
    RESULT[$name]=$(echo "$row" | awk '{print $(NF-5)}')
  done
  kill "$PID"; wait "$PID" 2>/dev/null || true
  python3 - "${RESULT[local-ES256]}" "${RESULT[hsm-ES256]}" "${RESULT[local-RS256-2048]}" "${RESULT[hsm-RS256-2048]}" <<'PY'
import sys
les, hes, lrs, hrs = map(float, sys.argv[1:])
print(f"SoftHSM2 keys: ES256 token endpoint {hes:.0f}/s = {hes/les*100:.0f}% of the local ES256 key's; "
      f"RS256-2048 {hrs:.0f}/s = {hrs/lrs*100:.0f}% of the local RS256-2048 key's")
PY
else
  echo "(SoftHSM2 cases skipped: Debian softhsm2 is not installed)"
fi

echo
for store in sqlite postgres; do
  [ -n "${RESULT[$store-cf]:-}" ] || continue
  python3 - "$store" ${RESULT[$store-cf]} <<'PY'
import sys
store, (cf, cf_cpu, cc, cc_cpu) = sys.argv[1], map(float, sys.argv[2:])
print(f"{store}: code flow (authorize, login accept, consent accept, token; ES256) {cf:.0f} complete logins/s, "
      f"server CPU {cf_cpu:.2f} ms per login; client_credentials ES256 {cc:.0f} tokens/s, server CPU {cc_cpu:.3f} ms per token "
      f"(a login costs {cf_cpu/cc_cpu:.1f} client_credentials tokens of CPU)")
PY
done
[ "${CODE_FLOW_ONLY:-0}" = 1 ] && exit 0
for store in sqlite postgres; do
  [ -n "${RESULT[$store-trivial]:-}" ] || continue
  python3 - "$store" "${RESULT[$store-trivial]}" "${RESULT[$store-ES256]}" "${RESULT[$store-RS256-4096]}" "$raw_rsa" \
    "${RESULT[$store-RS256-2048]}" "${RESULT[$store-ML-DSA-65]}" "$raw_mldsa" <<'PY'
import sys
store, trivial, es, rs4096, raw, rs2048, pq, raw_pq = sys.argv[1], *map(float, sys.argv[2:])
print(f"{store}: ES256 token endpoint = {es/trivial*100:.0f}% of the trivial endpoint (target >= 60%); "
      f"RS256-4096 = {rs4096/raw*100:.0f}% of the raw RSA-4096 signing rate (target >= 85%)")
print(f"{store}: ML-DSA-65 token endpoint = {pq/es*100:.0f}% of ES256's rate, {pq/rs2048*100:.0f}% of RS256-2048's, "
      f"{pq/rs4096*100:.0f}% of RS256-4096's; {pq/raw_pq*100:.0f}% of the raw ML-DSA-65 signing rate")
PY
done
