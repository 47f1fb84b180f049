#!/usr/bin/env bash
# Gateway benchmark, in one run on this machine, with wrk:
#   - the upstream directly (Debian's nginx answering 200 "ok" itself);
#   - Debian's nginx as a plain pass-through proxy to that upstream (the anchor;
#     keep-alive upstream pool, access log off, one worker per core);
#   - `keyward gateway` as a pass-through proxy on an anonymous route;
#   - `keyward gateway` verifying RS256-2048, ES256 and EdDSA access tokens
#     (a permission template to fill and match, identity headers added), with
#     the verified-token cache on and off;
# plus the raw aws-lc-rs verify cost of each algorithm (one thread, pre-parsed
# key) from `cargo run --example verify_cost`.
#
# For every keyward case the gateway's own CPU time per request is read from
# /proc (utime + stime over the run / requests), so the cost of verification
# is measured directly: uncached CPU/request - pass-through CPU/request, vs the
# raw verify cost.
#
# Targets (issue "The gate"): keyward pass-through >= nginx pass-through
# throughput; cached verification >= 90% of keyward pass-through; uncached
# verification costs per request no more than pass-through + 1.2 x raw verify.
#
# usage: scripts/bench-gateway.sh [SECONDS]     (default 10 s per run)
#   env: CONNS (default 32), WRK_THREADS (default 1)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR="${1:-10}"
CONNS="${CONNS:-32}"
THREADS="${WRK_THREADS:-1}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/keyward-target}"
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
if [ "${#need[@]}" -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
cargo build --release -q -p keyward
cargo build --release -q -p keyward-jose --example verify_cost
BIN="$CARGO_TARGET_DIR/release/keyward"
COST_BIN="$CARGO_TARGET_DIR/release/examples/verify_cost"
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; [ -f "$WORK/up/nginx.pid" ] && kill "$(cat "$WORK/up/nginx.pid")" 2>/dev/null; [ -f "$WORK/px/nginx.pid" ] && kill "$(cat "$WORK/px/nginx.pid")" 2>/dev/null; rm -rf "$WORK"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 100); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }
# CPU seconds (user + system) used so far by process $1.
cpu() { python3 -c "import os,sys; f=open('/proc/$1/stat').read().rsplit(')',1)[1].split(); print((int(f[11])+int(f[12]))/os.sysconf('SC_CLK_TCK'))"; }

# nginx NAME SERVER_BLOCK [UPSTREAM_BLOCK]: starts an nginx in $WORK/NAME.
nginx_start() {
  local dir="$WORK/$1"
  mkdir -p "$dir"
  cat >"$dir/nginx.conf" <<EOF
worker_processes $2;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir; proxy_temp_path $dir; fastcgi_temp_path $dir; uwsgi_temp_path $dir; scgi_temp_path $dir;
  keepalive_requests 1000000;
  $4
  server { listen 127.0.0.1:$3; $5 }
}
EOF
  "$NGINX" -c "$dir/nginx.conf" -p "$dir" -e "$dir/error.log"
}

UP_PORT=$(free_port)
nginx_start up 1 "$UP_PORT" "" 'location / { return 200 "ok\n"; }'
PX_PORT=$(free_port)
nginx_start px auto "$PX_PORT" \
  "upstream app { server 127.0.0.1:$UP_PORT; keepalive 64; }" \
  'location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }'
wait_http "http://127.0.0.1:$UP_PORT/"
wait_http "http://127.0.0.1:$PX_PORT/"

# Keys and tokens: one environment per algorithm; JWKS exported to files.
export KEYWARD_DATA_DIR="$WORK/data"
"$BIN" init --issuer https://es256.bench --alg ES256 >/dev/null
"$BIN" env create rs --issuer https://rs256.bench --alg RS256 --bits 2048 >/dev/null
"$BIN" keys generate --env rs --alg RS256 --bits 2048 >/dev/null
"$BIN" env create ed --issuer https://eddsa.bench --alg EdDSA >/dev/null
"$BIN" keys generate --env ed --alg EdDSA >/dev/null
declare -A TOKEN
claims='{"sub":"bench-user","aud":"api://bench","client_id":"bench","scope":"orders:read","permissions":["orders.*"]}'
for pair in RS256:rs ES256:default EdDSA:ed; do
  alg="${pair%%:*}" env="${pair##*:}"
  "$BIN" keys export --env "$env" --format jwks >"$WORK/$env.jwks.json"
  TOKEN[$alg]=$("$BIN" token sign --env "$env" --claims "$claims" --ttl 1h)
done

gateway_config() { # PORT TOKEN_CACHE ADMIN_PORT
  cat <<EOF
listen = "127.0.0.1:$1"
admin_listen = "127.0.0.1:$3"
token_cache = $2

[[issuer]]
issuer = "https://rs256.bench"
audiences = ["api://bench"]
jwks_file = "$WORK/rs.jwks.json"

[[issuer]]
issuer = "https://es256.bench"
audiences = ["api://bench"]
jwks_file = "$WORK/default.jwks.json"

[[issuer]]
issuer = "https://eddsa.bench"
audiences = ["api://bench"]
jwks_file = "$WORK/ed.jwks.json"

[[route]]
path = "/anon/*"
upstream = "http://127.0.0.1:$UP_PORT"
anonymous = true

[[route]]
path = "/orders/{id}"
upstream = "http://127.0.0.1:$UP_PORT"
permissions = { all_of = ["orders.{id}.read"] }
EOF
}
GW_PORT=$(free_port)
GW_NC_PORT=$(free_port)
GW_ADMIN=$(free_port)
gateway_config "$GW_PORT" 10000 "$GW_ADMIN" >"$WORK/gw.toml"
gateway_config "$GW_NC_PORT" 0 "$(free_port)" >"$WORK/gw-nocache.toml"
KEYWARD_LOG=warn "$BIN" gateway --config "$WORK/gw.toml" >/dev/null 2>"$WORK/gw.log" &
GW_PID=$!
KEYWARD_LOG=warn "$BIN" gateway --config "$WORK/gw-nocache.toml" >/dev/null 2>"$WORK/gw-nocache.log" &
GW_NC_PID=$!
wait_http "http://127.0.0.1:$GW_PORT/anon/"
wait_http "http://127.0.0.1:$GW_NC_PORT/anon/"
for alg in RS256 ES256 EdDSA; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer ${TOKEN[$alg]}" "http://127.0.0.1:$GW_PORT/orders/42")
  [ "$code" = 200 ] || { echo "gateway refused the $alg token ($code)" >&2; cat "$WORK/gw.log" >&2; exit 1; }
done

# wrk output -> "rps p50_ms p99_ms requests"
parse() {
  python3 -c '
import re,sys
t=sys.stdin.read()
rps=float(re.search(r"Requests/sec:\s+([\d.]+)",t).group(1))
n=int(re.search(r"(\d+) requests in",t).group(1))
def ms(p):
    m=re.search(r"\s"+p+r"%\s+([\d.]+)(us|ms|s)\b",t)
    v=float(m.group(1)); u=m.group(2)
    return v/1000 if u=="us" else v*1000 if u=="s" else v
bad=re.search(r"Non-2xx or 3xx responses:\s+(\d+)",t)
if bad: sys.stderr.write("WARNING: %s non-2xx responses\n"%bad.group(1))
print("%.0f %.3f %.3f %d"%(rps,ms("50"),ms("99"),n))'
}

declare -A RPS CPU_US
# run NAME URL [TOKEN] [PID]: one wrk run; prints a row; records rps and CPU/request.
run() {
  local name="$1" url="$2" token="${3:-}" pid="${4:-}" out c0 c1 cpu_us="-"
  local hdr=()
  [ -n "$token" ] && hdr=(-H "Authorization: Bearer $token")
  [ -n "$pid" ] && c0=$(cpu "$pid")
  out=$(wrk -t"$THREADS" -c"$CONNS" -d"${DUR}s" --latency "${hdr[@]}" "$url" | parse)
  read -r rps p50 p99 n <<<"$out"
  if [ -n "$pid" ]; then
    c1=$(cpu "$pid")
    cpu_us=$(python3 -c "print('%.1f' % (($c1-$c0)*1e6/$n))")
  fi
  RPS[$name]=$rps
  CPU_US[$name]=$cpu_us
  printf "%-34s %10s %9s %9s %14s\n" "$name" "$rps" "$p50" "$p99" "$cpu_us"
}

echo "machine: $(nproc) cores; wrk -t$THREADS -c$CONNS -d${DUR}s; nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///')"
declare -A RAW
for spec in RS256:2048 ES256:0 EdDSA:0; do
  alg="${spec%%:*}"
  RAW[$alg]=$("$COST_BIN" "$alg" "${spec##*:}" 3)
done
echo "raw aws-lc-rs verify (1 thread): RS256-2048 ${RAW[RS256]} ns, ES256 ${RAW[ES256]} ns, EdDSA ${RAW[EdDSA]} ns"
printf "%-34s %10s %9s %9s %14s\n" "case" "rps" "p50 ms" "p99 ms" "gw CPU us/req"
run "upstream direct" "http://127.0.0.1:$UP_PORT/orders/42"
run "nginx pass-through" "http://127.0.0.1:$PX_PORT/orders/42"
run "keyward pass-through (anonymous)" "http://127.0.0.1:$GW_PORT/anon/42" "" "$GW_PID"
for alg in RS256 ES256 EdDSA; do
  run "keyward $alg cached" "http://127.0.0.1:$GW_PORT/orders/42" "${TOKEN[$alg]}" "$GW_PID"
  run "keyward $alg uncached" "http://127.0.0.1:$GW_NC_PORT/orders/42" "${TOKEN[$alg]}" "$GW_NC_PID"
done
HIT_RATIO=$(curl -s "http://127.0.0.1:$GW_ADMIN/metrics" | awk '/^keyward_gate_token_cache_hit_ratio/ {print $2}')
run "keyward pass-through (no cache proc)" "http://127.0.0.1:$GW_NC_PORT/anon/42" "" "$GW_NC_PID"

echo
python3 - <<PY
rps = {$(for k in "${!RPS[@]}"; do printf '"%s": %s, ' "$k" "${RPS[$k]}"; done)}
cpu = {$(for k in "${!CPU_US[@]}"; do [ "${CPU_US[$k]}" != - ] && printf '"%s": %s, ' "$k" "${CPU_US[$k]}"; done)}
raw = {"RS256": ${RAW[RS256]}/1000, "ES256": ${RAW[ES256]}/1000, "EdDSA": ${RAW[EdDSA]}/1000}
px = rps["keyward pass-through (anonymous)"]
ng = rps["nginx pass-through"]
ok = lambda b: "ok" if b else "MISSED"
print(f"verified-token cache hit ratio over the cached runs: {float('${HIT_RATIO:-0}')*100:.2f}% (target > 95%)")
print(f"keyward pass-through = {px/ng:.2f}x nginx pass-through (target >= 1.00): {ok(px >= ng)}")
base_cpu = cpu["keyward pass-through (no cache proc)"]
for alg in ("RS256", "ES256", "EdDSA"):
    c = rps[f"keyward {alg} cached"] / px
    extra = cpu[f"keyward {alg} uncached"] - base_cpu
    print(f"{alg}: cached = {c*100:.0f}% of pass-through (target >= 90%): {ok(c >= 0.9)}; "
          f"uncached costs {extra:.1f} us CPU/request over pass-through = {extra/raw[alg]:.2f}x raw verify "
          f"({raw[alg]:.1f} us; target <= 1.20x): {ok(extra <= 1.2*raw[alg])}")
PY
