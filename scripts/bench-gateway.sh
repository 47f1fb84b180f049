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
# key) from `cargo run --example verify_cost`; and an API key (X-API-Key, made
# by `keyward gateway api-key create`) on a route with the same permission
# template, against the Bearer cases of the same round (a key is never in the
# token cache: it is looked up by id and its SHA-256 compared on every request).
#
# DPoP (RFC 9449): an ES256 token bound to a proof key (`cnf.jkt`, signed by
# `keyward token sign`) sent as `Authorization: DPoP` with a fresh proof per
# request, cached and uncached, each next to the Bearer ES256 run of the same
# gateway. Every request needs its own proof (unique jti, fresh iat, htm, htu,
# ath), so `cargo run --example dpop_proofs` (keyward-jose) makes them right
# before each run (DUR x PROOF_RATE of them, default 20000/s) and a wrk Lua
# script sends each once; a run that uses them all stops early, and any
# refused request fails the benchmark. Target (issue 16): the proof check
# costs no more than one extra signature verification, i.e. (DPoP CPU/request
# - Bearer CPU/request) / raw ES256 verify <= 1.
#
# Redis (issue 16 §4): a third gateway with `redis_url` = 127.0.0.1:6379
# (REDIS_URL to change): a route with a per-subject rate limit too high ever
# to refuse, against the same route on the local-limit gateway, and DPoP with
# the Redis replay cache against the local one. Redis's own CPU/request and
# commands/request are read from INFO (another client of the same Redis
# during the run would show up there).
#
# Then the same cases once more under valgrind's callgrind (and nginx's
# pass-through, as one process), which counts user-space instructions per
# request: the same count on every
# run, whatever else the host is doing (the kernel's share, identical for a
# pass-through and a verified request, is not counted). The uncached target
# is judged on both: CPU time from /proc, and instructions against the raw
# verify's instructions. INSTR=0 skips this part.
#
# For every keyward case the gateway's own CPU time per request is read from
# /proc (utime + stime over the run / requests), so the cost of verification
# is measured directly: uncached CPU/request - pass-through CPU/request, vs the
# raw verify cost. The machine's speed drifts with other tenants' load, so
# both baselines are taken next to each uncached run: the same process's
# pass-through run right before it, the raw cost right before and after it.
#
# Targets (issue "The gate"): keyward pass-through >= nginx pass-through
# throughput; cached verification >= 90% of keyward pass-through; uncached
# verification costs per request no more than pass-through + 1.2 x raw verify.
#
# usage: scripts/bench-gateway.sh [SECONDS]     (default 10 s per run)
#   env: CONNS (default 32), WRK_THREADS (default 1), ROUNDS (default 3),
#        PROOF_RATE (DPoP proofs made per second of run, default 20000),
#        REDIS_URL (default redis://127.0.0.1:6379/0; keys under keyward:bench:)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR="${1:-10}"
CONNS="${CONNS:-32}"
THREADS="${WRK_THREADS:-1}"
ROUNDS="${ROUNDS:-3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/keyward-target}"
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
[ "${INSTR:-1}" = 0 ] || command -v callgrind_control >/dev/null || need+=(valgrind)
if [ "${#need[@]}" -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
cargo build --release -q -p keyward
cargo build --release -q -p keyward-jose --example verify_cost --example dpop_proofs
BIN="$CARGO_TARGET_DIR/release/keyward"
COST_BIN="$CARGO_TARGET_DIR/release/examples/verify_cost"
PROOF_BIN="$CARGO_TARGET_DIR/release/examples/dpop_proofs"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
REDIS_CLI=(redis-cli -u "$REDIS_URL")
"${REDIS_CLI[@]}" ping >/dev/null || { echo "no Redis at $REDIS_URL (set REDIS_URL)" >&2; exit 1; }
NPROOFS=$(( DUR * ${PROOF_RATE:-20000} ))
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; [ -f "$WORK/up/nginx.pid" ] && kill "$(cat "$WORK/up/nginx.pid")" 2>/dev/null; [ -f "$WORK/px/nginx.pid" ] && kill "$(cat "$WORK/px/nginx.pid")" 2>/dev/null; rm -rf "$WORK"' EXIT

# free_port, wait_http, cpu, parse
. scripts/bench-lib.sh

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
# The DPoP client's key (a throwaway in $WORK) and a token bound to it.
JKT=$("$PROOF_BIN" key "$WORK/dpop.key")
export DPOP_PROOFS="$WORK/proofs" DPOP_TOKEN
DPOP_TOKEN=$("$BIN" token sign --env default --claims "${claims%\}},\"cnf\":{\"jkt\":\"$JKT\"}}" --ttl 1h)

gateway_config() { # PORT TOKEN_CACHE ADMIN_PORT [REDIS_URL]
  cat <<EOF
listen = "127.0.0.1:$1"
admin_listen = "127.0.0.1:$3"
token_cache = $2
EOF
  if [ -n "${4:-}" ]; then
    # A generous timeout: on this shared 2-core host a call can wait for a
    # core; a call over it would be decided locally (checked after the run).
    printf 'redis_url = "%s"\nredis_prefix = "keyward:bench:%s:%s:"\nredis_timeout = "500ms"\n' "$4" "$$" "$1"
  fi
  # Room for every proof of the back-to-back runs within one replay window.
  printf '\n[dpop]\nreplay_capacity = 4000000\n'
  for pair in rs256:rs es256:default eddsa:ed; do
    printf '\n[[issuer]]\nissuer = "https://%s.bench"\naudiences = ["api://bench"]\njwks_file = "%s"\n' \
      "${pair%%:*}" "$WORK/${pair##*:}.jwks.json"
  done
  cat <<EOF

[[route]]
path = "/anon/*"
upstream = "http://127.0.0.1:$UP_PORT"
anonymous = true

[[route]]
path = "/orders/{id}"
upstream = "http://127.0.0.1:$UP_PORT"
permissions = { all_of = ["orders.{id}.read"] }

[[route]]
path = "/keys/{id}"
upstream = "http://127.0.0.1:$UP_PORT"
permissions = { all_of = ["orders.{id}.read"] }
api_keys = true

[[route]]
path = "/dpop/{id}"
upstream = "http://127.0.0.1:$UP_PORT"
permissions = { all_of = ["orders.{id}.read"] }
sender_constraint = "dpop"

[[route]]
path = "/limited/{id}"
upstream = "http://127.0.0.1:$UP_PORT"
permissions = { all_of = ["orders.{id}.read"] }
rate_limit = { per_subject = "1000000/s" }
EOF
}
# API keys: one per gateway config file, made as an operator would.
api_key() { # CONFIG -> the key on stdout
  "$BIN" gateway api-key create --config "$1" --subject bench-key --permissions 'orders.*' --expires 1d 2>/dev/null
}
GW_PORT=$(free_port)
GW_NC_PORT=$(free_port)
GW_ADMIN=$(free_port)
GW_R_PORT=$(free_port)
GW_R_ADMIN=$(free_port)
gateway_config "$GW_PORT" 10000 "$GW_ADMIN" >"$WORK/gw.toml"
gateway_config "$GW_NC_PORT" 0 "$(free_port)" >"$WORK/gw-nocache.toml"
gateway_config "$GW_R_PORT" 10000 "$GW_R_ADMIN" "$REDIS_URL" >"$WORK/gw-redis.toml"
API_KEY=$(api_key "$WORK/gw.toml")
KEYWARD_LOG=warn "$BIN" gateway --config "$WORK/gw.toml" >/dev/null 2>"$WORK/gw.log" &
GW_PID=$!
KEYWARD_LOG=warn "$BIN" gateway --config "$WORK/gw-nocache.toml" >/dev/null 2>"$WORK/gw-nocache.log" &
GW_NC_PID=$!
KEYWARD_LOG=warn "$BIN" gateway --config "$WORK/gw-redis.toml" >/dev/null 2>"$WORK/gw-redis.log" &
GW_R_PID=$!
wait_http "http://127.0.0.1:$GW_PORT/anon/"
wait_http "http://127.0.0.1:$GW_NC_PORT/anon/"
wait_http "http://127.0.0.1:$GW_R_PORT/anon/"
for alg in RS256 ES256 EdDSA; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer ${TOKEN[$alg]}" "http://127.0.0.1:$GW_PORT/orders/42")
  [ "$code" = 200 ] || { echo "gateway refused the $alg token ($code)" >&2; cat "$WORK/gw.log" >&2; exit 1; }
done
code=$(curl -s -o /dev/null -w '%{http_code}' -H "X-API-Key: $API_KEY" "http://127.0.0.1:$GW_PORT/keys/42")
[ "$code" = 200 ] || { echo "gateway refused the API key ($code)" >&2; cat "$WORK/gw.log" >&2; exit 1; }

# wrk's Lua script for DPoP: each thread takes its share of the proofs file
# ($DPOP_PROOFS, one per line) and sends each proof once, with
# `Authorization: DPoP $DPOP_TOKEN`; when its proofs run out it stops.
cat >"$WORK/dpop.lua" <<'LUA'
local threads, proofs, n, i = 0, {}, 0, 0
function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end
function init(args)
  local every, k = tonumber(os.getenv("WRK_THREADS_N")), 0
  for line in io.lines(os.getenv("DPOP_PROOFS")) do
    if k % every == id then n = n + 1; proofs[n] = line end
    k = k + 1
  end
  auth = "DPoP " .. os.getenv("DPOP_TOKEN")
end
function request()
  i = i + 1
  if i >= n then wrk.thread:stop() end
  if i > n then i = n end
  return wrk.format("GET", nil, { ["Authorization"] = auth, ["DPoP"] = proofs[i] })
end
LUA
# proofs URL COUNT: writes COUNT fresh proofs for GET URL to $WORK/proofs.
proofs() { "$PROOF_BIN" proofs "$WORK/dpop.key" "$2" GET "$1" "$DPOP_TOKEN" >"$WORK/proofs"; }
for url in "http://127.0.0.1:$GW_PORT/dpop/42" "http://127.0.0.1:$GW_R_PORT/dpop/42"; do
  proofs "$url" 1
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: DPoP $DPOP_TOKEN" -H "DPoP: $(cat "$WORK/proofs")" "$url")
  [ "$code" = 200 ] || { echo "gateway refused the DPoP request to $url ($code)" >&2; cat "$WORK/gw.log" "$WORK/gw-redis.log" >&2; exit 1; }
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: DPoP $DPOP_TOKEN" -H "DPoP: $(cat "$WORK/proofs")" "$url")
  [ "$code" = 401 ] || { echo "gateway accepted a replayed DPoP proof at $url ($code)" >&2; exit 1; }
done
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer ${TOKEN[ES256]}" "http://127.0.0.1:$GW_R_PORT/limited/42")
[ "$code" = 200 ] || { echo "the Redis gateway refused the limited route ($code)" >&2; cat "$WORK/gw-redis.log" >&2; exit 1; }


RESULTS="$WORK/results"
# auth_header CREDENTIAL: an API key (kwk_...) goes in X-API-Key, a token in Authorization.
auth_header() { case "$1" in kwk_*) echo "X-API-Key: $1" ;; *) echo "Authorization: Bearer $1" ;; esac; }
# Redis's CPU seconds so far and commands processed so far: "cpu commands".
redis_stats() {
  "${REDIS_CLI[@]}" info all | tr -d '\r' | awk -F: '/^used_cpu_(user|sys):/ {c += $2} /^total_commands_processed:/ {n = $2} END {print c, n}'
}
# run ROUND NAME URL [TOKEN] [PID]: one wrk run; prints a row and appends
# "ROUND|NAME|rps|p50|p99|cpu_us" to $RESULTS. TOKEN "dpop" sends a fresh
# DPoP proof per request (the proofs made first); with WATCH_REDIS=1 Redis's
# commands/request and CPU/request go to $RESULTS as "NAME (redis)". A DPoP
# or Redis run with a single refused request fails the benchmark.
run() {
  local round="$1" name="$2" url="$3" token="${4:-}" pid="${5:-}" out c0 c1 cpu_us="-" r0 r1 strict=""
  local hdr=()
  case "$token" in
    "") ;;
    dpop) proofs "$url" "$NPROOFS"; hdr=(-s "$WORK/dpop.lua"); strict=1 ;;
    *) hdr=(-H "$(auth_header "$token")") ;;
  esac
  [ "${WATCH_REDIS:-}" = 1 ] && strict=1 && r0=$(redis_stats)
  [ -n "$pid" ] && c0=$(cpu "$pid")
  out=$(WRK_THREADS_N="$THREADS" wrk -t"$THREADS" -c"$CONNS" -d"${DUR}s" --latency "${hdr[@]}" "$url")
  [ -n "$pid" ] && c1=$(cpu "$pid")
  [ "${WATCH_REDIS:-}" = 1 ] && r1=$(redis_stats)
  if [ -n "$strict" ] && echo "$out" | grep -q 'Non-2xx'; then
    echo "$name: the gateway refused requests:" >&2; echo "$out" >&2; exit 1
  fi
  read -r rps p50 p99 n secs <<<"$(echo "$out" | parse)"
  if [ -n "$pid" ]; then
    cpu_us=$(python3 -c "print('%.1f' % (($c1-$c0)*1e6/$n))")
  fi
  if [ "$token" = dpop ] && python3 -c "import sys; sys.exit(0 if $secs < $DUR - 0.5 else 1)"; then
    echo "  ($name: the $NPROOFS proofs ran out after ${secs}s; raise PROOF_RATE)"
  fi
  echo "$round|$name|$rps|$p50|$p99|$cpu_us" >>"$RESULTS"
  printf "  %-38s %10s %9s %9s %14s\n" "$name" "$rps" "$p50" "$p99" "$cpu_us"
  if [ "${WATCH_REDIS:-}" = 1 ]; then
    read -r rc rn <<<"$(python3 -c "a='$r0'.split(); b='$r1'.split(); print('%.1f %.2f' % ((float(b[0])-float(a[0]))*1e6/$n, (int(b[1])-int(a[1]))/$n))")"
    echo "$round|$name (redis)|$rn|||$rc" >>"$RESULTS"
    printf "  %-38s %10s %9s %9s %14s\n" "  Redis server: commands/req, CPU" "$rn" "" "" "$rc"
  fi
}

echo "machine: $(nproc) cores; wrk -t$THREADS -c$CONNS -d${DUR}s; $ROUNDS rounds; nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///')"
# The machine's speed drifts with other tenants' load, so every ratio is
# taken within one round, between runs made next to each other, and the
# report gives the median over rounds: nginx and keyward pass-through back
# to back; each cached run and each uncached run with the same process's
# pass-through run right before it, and each uncached run with the raw
# verify cost right before and right after it.
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round/$ROUNDS"
  printf "  %-38s %10s %9s %9s %14s\n" "case" "rps" "p50 ms" "p99 ms" "gw CPU us/req"
  run "$round" "upstream direct" "http://127.0.0.1:$UP_PORT/orders/42"
  run "$round" "nginx pass-through" "http://127.0.0.1:$PX_PORT/orders/42"
  run "$round" "keyward pass-through (anonymous)" "http://127.0.0.1:$GW_PORT/anon/42" "" "$GW_PID"
  for spec in RS256:2048 ES256:0 EdDSA:0; do
    alg="${spec%%:*}"
    run "$round" "pass-through, next to $alg cached" "http://127.0.0.1:$GW_PORT/anon/42" "" "$GW_PID"
    run "$round" "keyward $alg cached" "http://127.0.0.1:$GW_PORT/orders/42" "${TOKEN[$alg]}" "$GW_PID"
    r0=$("$COST_BIN" "$alg" "${spec##*:}" 2)
    run "$round" "pass-through, next to $alg uncached" "http://127.0.0.1:$GW_NC_PORT/anon/42" "" "$GW_NC_PID"
    run "$round" "keyward $alg uncached" "http://127.0.0.1:$GW_NC_PORT/orders/42" "${TOKEN[$alg]}" "$GW_NC_PID"
    r1=$("$COST_BIN" "$alg" "${spec##*:}" 2)
    echo "$round|raw $alg|$(( (r0 + r1) / 2 ))|||" >>"$RESULTS"
    echo "  raw aws-lc-rs $alg verify (1 thread) before/after: $r0 / $r1 ns"
  done
  # API key: next to its own pass-through run and an ES256 Bearer cached run.
  run "$round" "pass-through, next to API key" "http://127.0.0.1:$GW_PORT/anon/42" "" "$GW_PID"
  run "$round" "keyward ES256 cached, next to API key" "http://127.0.0.1:$GW_PORT/orders/42" "${TOKEN[ES256]}" "$GW_PID"
  run "$round" "keyward API key" "http://127.0.0.1:$GW_PORT/keys/42" "$API_KEY" "$GW_PID"
  # DPoP: each run next to the Bearer ES256 run of the same gateway; the raw
  # ES256 verify (the proof's algorithm) right before and after the uncached pair.
  run "$round" "keyward ES256 cached, next to DPoP" "http://127.0.0.1:$GW_PORT/orders/42" "${TOKEN[ES256]}" "$GW_PID"
  run "$round" "keyward DPoP ES256 cached" "http://127.0.0.1:$GW_PORT/dpop/42" dpop "$GW_PID"
  r0=$("$COST_BIN" ES256 0 2)
  run "$round" "keyward ES256 uncached, next to DPoP" "http://127.0.0.1:$GW_NC_PORT/orders/42" "${TOKEN[ES256]}" "$GW_NC_PID"
  run "$round" "keyward DPoP ES256 uncached" "http://127.0.0.1:$GW_NC_PORT/dpop/42" dpop "$GW_NC_PID"
  r1=$("$COST_BIN" ES256 0 2)
  echo "$round|raw ES256, next to DPoP|$(( (r0 + r1) / 2 ))|||" >>"$RESULTS"
  echo "  raw aws-lc-rs ES256 verify (1 thread) before/after: $r0 / $r1 ns"
  # Redis: the same requests with the limit (one per-subject bucket) and the
  # replay cache in this replica's memory, then in Redis.
  run "$round" "limit local (ES256 cached)" "http://127.0.0.1:$GW_PORT/limited/42" "${TOKEN[ES256]}" "$GW_PID"
  WATCH_REDIS=1 run "$round" "limit in Redis (ES256 cached)" "http://127.0.0.1:$GW_R_PORT/limited/42" "${TOKEN[ES256]}" "$GW_R_PID"
  run "$round" "DPoP cached, replay cache local" "http://127.0.0.1:$GW_PORT/dpop/42" dpop "$GW_PID"
  WATCH_REDIS=1 run "$round" "DPoP cached, replay cache in Redis" "http://127.0.0.1:$GW_R_PORT/dpop/42" dpop "$GW_R_PID"
done
HIT_RATIO=$(curl -s "http://127.0.0.1:$GW_ADMIN/metrics" | awk '/^keyward_gate_token_cache_hit_ratio/ {print $2}')
# Every Redis-gateway decision was Redis's: no local fallback, Redis up.
R_METRICS=$(curl -s "http://127.0.0.1:$GW_R_ADMIN/metrics")
echo "$R_METRICS" | grep -E '^keyward_gate_redis_errors_total' | grep -vE ' 0$' || true
if echo "$R_METRICS" | grep -E '^keyward_gate_(rate_limit_local_total|replay_unavailable_total)' | grep -vE ' 0$'; then
  echo "the Redis gateway fell back to local decisions during the run (above): its figures are not Redis's" >&2; exit 1
fi
echo "$R_METRICS" | grep -q '^keyward_gate_redis_up 1' || { echo "the Redis gateway says Redis is down" >&2; exit 1; }

echo
python3 - "$RESULTS" "${HIT_RATIO:-0}" <<'PY'
import sys
from collections import defaultdict
from statistics import median
rows = defaultdict(dict)  # name -> round -> (rps, p50, p99, cpu)
for line in open(sys.argv[1]):
    r, name, rps, p50, p99, cpu = line.rstrip("\n").split("|")
    rows[name][int(r)] = (float(rps), p50, p99, None if cpu in ("", "-") else float(cpu))
rounds = sorted(rows["nginx pass-through"])
names = ["upstream direct", "nginx pass-through", "keyward pass-through (anonymous)"]
for alg in ("RS256", "ES256", "EdDSA"):
    names += [f"keyward {alg} cached", f"keyward {alg} uncached"]
names += ["keyward API key", "keyward ES256 cached, next to DPoP", "keyward DPoP ES256 cached",
          "keyward ES256 uncached, next to DPoP", "keyward DPoP ES256 uncached",
          "limit local (ES256 cached)", "limit in Redis (ES256 cached)",
          "DPoP cached, replay cache local", "DPoP cached, replay cache in Redis"]
print(f"median over {len(rounds)} rounds")
print(f"{'case':<34} {'rps':>10} {'p50 ms':>9} {'p99 ms':>9} {'gw CPU us/req':>14}")
for n in names:
    v = rows[n].values()
    cpu = [x[3] for x in v if x[3] is not None]
    print(f"{n:<34} {median(x[0] for x in v):>10.0f} {median(float(x[1]) for x in v):>9.3f} "
          f"{median(float(x[2]) for x in v):>9.3f} {(f'{median(cpu):.1f}' if cpu else '-'):>14}")
print()
ok = lambda b: "ok" if b else "MISSED"
per = lambda f: [f(r) for r in rounds]
fmt = lambda xs: " ".join(f"{x:.2f}" for x in xs)
print(f"verified-token cache hit ratio over the cached runs: {float(sys.argv[2])*100:.2f}% (target > 95%)")
px = per(lambda r: rows["keyward pass-through (anonymous)"][r][0] / rows["nginx pass-through"][r][0])
print(f"keyward pass-through / nginx pass-through, per round {fmt(px)}; median {median(px):.2f}x (target >= 1.00): {ok(median(px) >= 1.0)}")
for alg in ("RS256", "ES256", "EdDSA"):
    c = per(lambda r: rows[f"keyward {alg} cached"][r][0] / rows[f"pass-through, next to {alg} cached"][r][0])
    raw = per(lambda r: rows[f"raw {alg}"][r][0] / 1000)
    x = per(lambda r: (rows[f"keyward {alg} uncached"][r][3] - rows[f"pass-through, next to {alg} uncached"][r][3])
            / (rows[f"raw {alg}"][r][0] / 1000))
    print(f"{alg}: cached / pass-through, per round {fmt(c)}; median {median(c)*100:.0f}% (target >= 90%): {ok(median(c) >= 0.9)}")
    print(f"{alg}: uncached CPU/request over pass-through / raw verify ({median(raw):.1f} us), per round {fmt(x)}; "
          f"median {median(x):.2f}x (target <= 1.20x): {ok(median(x) <= 1.2)}")
k = per(lambda r: rows["keyward API key"][r][0] / rows["keyward ES256 cached, next to API key"][r][0])
kp = per(lambda r: rows["keyward API key"][r][0] / rows["pass-through, next to API key"][r][0])
kc = per(lambda r: (rows["keyward API key"][r][3] - rows["pass-through, next to API key"][r][3])
         / max(rows["keyward ES256 cached, next to API key"][r][3] - rows["pass-through, next to API key"][r][3], 0.1))
print(f"API key: rps / ES256 Bearer cached, per round {fmt(k)}; median {median(k):.2f}x")
print(f"API key: rps / pass-through, per round {fmt(kp)}; median {median(kp)*100:.0f}%")
print(f"API key: CPU/request over pass-through / ES256 Bearer cached's, per round {fmt(kc)}; median {median(kc):.2f}x")
raw = per(lambda r: rows["raw ES256, next to DPoP"][r][0] / 1000)
for kind in ("cached", "uncached"):
    d, b = f"keyward DPoP ES256 {kind}", f"keyward ES256 {kind}, next to DPoP"
    x = per(lambda r: (rows[d][r][3] - rows[b][r][3]) / (rows["raw ES256, next to DPoP"][r][0] / 1000))
    t = per(lambda r: rows[d][r][0] / rows[b][r][0])
    print(f"DPoP {kind}: (CPU/request - Bearer ES256 {kind}'s) / raw ES256 verify ({median(raw):.1f} us), "
          f"per round {fmt(x)}; median {median(x):.2f}x (target <= 1.00x): {ok(median(x) <= 1.0)}; "
          f"rps / Bearer's {median(t)*100:.0f}%")
for what, loc, red in (("rate limit", "limit local (ES256 cached)", "limit in Redis (ES256 cached)"),
                       ("DPoP replay cache", "DPoP cached, replay cache local", "DPoP cached, replay cache in Redis")):
    t = per(lambda r: rows[red][r][0] / rows[loc][r][0])
    c = per(lambda r: rows[red][r][3] / rows[loc][r][3])
    e = per(lambda r: rows[red][r][3] - rows[loc][r][3])
    rc = [rows[red + " (redis)"][r][3] for r in rounds]
    rn = [rows[red + " (redis)"][r][0] for r in rounds]
    print(f"{what} in Redis / local: rps per round {fmt(t)}, median {median(t):.2f}x; gateway CPU/request "
          f"per round {fmt(c)}, median {median(c):.2f}x (+{median(e):.1f} us); Redis server "
          f"{median(rc):.1f} us CPU and {median(rn):.2f} commands per request")
PY

[ "${INSTR:-1}" = 0 ] && exit 0
# ---- Instructions per request (callgrind) --------------------------------
# Each gateway runs under callgrind with collection off; for every case a
# warm-up run, then counters zeroed, collection on for one wrk run, off, and
# a dump: instructions in that dump / requests wrk completed.
kill "$GW_PID" "$GW_NC_PID" "$GW_R_PID" 2>/dev/null || true
mkdir -p "$WORK/cg"
INSTR_OUT="$WORK/instr"
vg_start() { # PORT COMMAND... -> VG_PID
  local port="$1"; shift
  KEYWARD_LOG=warn valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$WORK/cg/%p" "$@" >/dev/null 2>>"$WORK/vg.log" &
  VG_PID=$!
  for _ in $(seq 1 600); do curl -s -o /dev/null "http://127.0.0.1:$port/anon/" && return 0; sleep 0.1; done
  echo "$1 did not start under valgrind" >&2; cat "$WORK/vg.log" >&2; exit 1
}
vg_case() { # NAME URL [TOKEN|dpop]: "dpop" as run() has it
  local hdr=() out n f ir
  case "${3:-}" in
    "") ;;
    dpop) hdr=(-s "$WORK/dpop.lua"); proofs "$2" 12000 ;;
    *) hdr=(-H "$(auth_header "$3")") ;;
  esac
  WRK_THREADS_N=1 wrk -t1 -c8 -d2s "${hdr[@]}" "$2" >/dev/null
  [ "${3:-}" = dpop ] && proofs "$2" 40000
  callgrind_control -z "$VG_PID" >/dev/null 2>&1
  callgrind_control -i on "$VG_PID" >/dev/null 2>&1
  out=$(WRK_THREADS_N=1 wrk -t1 -c8 -d"$(( DUR < 6 ? DUR : 6 ))s" "${hdr[@]}" "$2")
  callgrind_control -i off "$VG_PID" >/dev/null 2>&1
  callgrind_control -d "$VG_PID" >/dev/null 2>&1
  if [ -n "${3:-}" ] && echo "$out" | grep -q 'Non-2xx'; then
    echo "$1 (callgrind): the gateway refused requests:" >&2; echo "$out" >&2; exit 1
  fi
  n=$(echo "$out" | grep -oE '^ *[0-9]+ requests' | grep -oE '[0-9]+')
  f=$(ls -t "$WORK/cg/$VG_PID".* | head -1)
  ir=$(awk '/^totals:/ {print $2; exit}' "$f")
  echo "$1|$(( ir / n ))|$n" >>"$INSTR_OUT"
  printf "  %-34s %12s %9s\n" "$1" "$(( ir / n ))" "$n"
}
vg_stop() { kill "$VG_PID"; wait "$VG_PID" 2>/dev/null || true; }
vg_gateway() { # CONFIG PORT PASS_THROUGH_NAME cached|uncached API_KEY
  vg_start "$2" "$BIN" gateway --config "$1"
  vg_case "$3" "http://127.0.0.1:$2/anon/42"
  for alg in RS256 ES256 EdDSA; do
    vg_case "keyward $alg $4" "http://127.0.0.1:$2/orders/42" "${TOKEN[$alg]}"
  done
  vg_case "keyward API key $4" "http://127.0.0.1:$2/keys/42" "$5"
  vg_case "keyward DPoP ES256 $4" "http://127.0.0.1:$2/dpop/42" dpop
  [ "$4" = cached ] && vg_case "limit local (ES256 cached)" "http://127.0.0.1:$2/limited/42" "${TOKEN[ES256]}"
  vg_stop
}
echo
echo "user-space instructions per request, callgrind (gateway under valgrind, wrk -c8)"
printf "  %-34s %12s %9s\n" "case" "instr/req" "requests"
VG_PORT=$(free_port); VG_NC_PORT=$(free_port)
gateway_config "$VG_PORT" 10000 "$(free_port)" >"$WORK/vg.toml"
gateway_config "$VG_NC_PORT" 0 "$(free_port)" >"$WORK/vg-nocache.toml"
VG_KEY=$(api_key "$WORK/vg.toml")
VG_NC_KEY=$(api_key "$WORK/vg-nocache.toml")
# nginx's pass-through, in one process (no master) so callgrind sees it all.
VG_PX_PORT=$(free_port)
mkdir -p "$WORK/pxvg"
sed -e "s/^worker_processes .*/daemon off; master_process off; worker_processes 1;/" \
  -e "s/127.0.0.1:$PX_PORT/127.0.0.1:$VG_PX_PORT/" -e "s#$WORK/px/nginx.pid#$WORK/pxvg/nginx.pid#" \
  "$WORK/px/nginx.conf" >"$WORK/pxvg/nginx.conf"
vg_start "$VG_PX_PORT" "$NGINX" -c "$WORK/pxvg/nginx.conf" -p "$WORK/pxvg" -e "$WORK/pxvg/error.log"
vg_case "nginx pass-through" "http://127.0.0.1:$VG_PX_PORT/orders/42"
vg_stop
vg_gateway "$WORK/vg.toml" "$VG_PORT" "keyward pass-through (anonymous)" cached "$VG_KEY"
vg_gateway "$WORK/vg-nocache.toml" "$VG_NC_PORT" "pass-through, uncached gateway" uncached "$VG_NC_KEY"
VG_R_PORT=$(free_port)
gateway_config "$VG_R_PORT" 10000 "$(free_port)" "$REDIS_URL" >"$WORK/vg-redis.toml"
vg_start "$VG_R_PORT" "$BIN" gateway --config "$WORK/vg-redis.toml"
vg_case "limit in Redis (ES256 cached)" "http://127.0.0.1:$VG_R_PORT/limited/42" "${TOKEN[ES256]}"
vg_case "DPoP cached, replay cache in Redis" "http://127.0.0.1:$VG_R_PORT/dpop/42" dpop
vg_stop
for spec in RS256:2048 ES256:0 EdDSA:0; do
  alg="${spec%%:*}"
  ir=$(valgrind --tool=callgrind --callgrind-out-file=/dev/null --toggle-collect='*verify_once*' \
    "$COST_BIN" "$alg" "${spec##*:}" count:200 2>&1 | awk '/Collected :/ {print $4}')
  echo "raw $alg|$(( ir / 200 ))|200" >>"$INSTR_OUT"
  printf "  %-34s %12s %9s\n" "raw aws-lc-rs $alg verify" "$(( ir / 200 ))" 200
done
python3 - "$INSTR_OUT" <<'PY'
import sys
i = {l.split("|")[0]: int(l.split("|")[1]) for l in open(sys.argv[1])}
print(f"pass-through: keyward {i['keyward pass-through (anonymous)']} / nginx {i['nginx pass-through']} "
      f"instructions per request = {i['keyward pass-through (anonymous)'] / i['nginx pass-through']:.2f}x "
      "(the kernel's share, about the same for both, is not counted)")
for alg in ("RS256", "ES256", "EdDSA"):
    extra = i[f"keyward {alg} cached"] - i["keyward pass-through (anonymous)"]
    x = (i[f"keyward {alg} uncached"] - i["pass-through, uncached gateway"]) / i[f"raw {alg}"]
    print(f"{alg}: a cached token adds {extra} instructions to a pass-through request; "
          f"uncached instructions over pass-through / raw verify {x:.3f}x (target <= 1.20x): "
          f"{'ok' if x <= 1.2 else 'MISSED'}")
extra = i["keyward API key cached"] - i["keyward pass-through (anonymous)"]
bearer = i["keyward ES256 cached"] - i["keyward pass-through (anonymous)"]
print(f"API key: adds {extra} instructions to a pass-through request; a cached ES256 Bearer token adds {bearer} "
      f"({extra / bearer:.2f}x); uncached gateway: API key {i['keyward API key uncached'] - i['pass-through, uncached gateway']} "
      f"over its pass-through")
raw = i["raw ES256"]
for kind in ("cached", "uncached"):
    x = (i[f"keyward DPoP ES256 {kind}"] - i[f"keyward ES256 {kind}"]) / raw
    print(f"DPoP {kind}: (instructions/request - Bearer ES256 {kind}'s) / raw ES256 verify ({raw}) = {x:.3f}x "
          f"(target <= 1.00x): {'ok' if x <= 1.0 else 'MISSED'}")
check = i["keyward DPoP ES256 cached"] - i["keyward ES256 cached"]
token = i["keyward ES256 uncached"] - i["keyward ES256 cached"]
print(f"DPoP: the proof check ({check}) / the gate's own verification of an ES256 access token "
      f"(Bearer uncached - Bearer cached, {token}) = {check / token:.3f}x")
for what, loc, red in (("rate limit", "limit local (ES256 cached)", "limit in Redis (ES256 cached)"),
                       ("DPoP replay cache", "keyward DPoP ES256 cached", "DPoP cached, replay cache in Redis")):
    print(f"{what} in Redis / local: gateway instructions/request {i[red]} / {i[loc]} = {i[red] / i[loc]:.2f}x "
          f"(+{i[red] - i[loc]}; the Redis server's own are not counted)")
PY
