#!/usr/bin/env bash
# What one token costs the issuer, measured so that a shared host's noise
# matters little:
#   - user-space instructions per client_credentials token request (ES256,
#     or ALG)
#     (`keyward serve` under callgrind: counters zeroed after a warm-up, then
#     CG_SECS of wrk -c2, divided by the requests wrk counted);
#   - server CPU (user + system, from /proc) per request for /healthz and the
#     token endpoint at wrk -c16, ROUNDS rounds.
# Several binaries are measured interleaved, so a before/after comparison is
# one run: build the other revision's binary elsewhere and pass both.
#
# usage: scripts/bench-issuer-cost.sh [BIN ...]   (default: this tree's release build)
#   ROUNDS (default 2), SECS per CPU run (default 8), CG_SECS (default 15), INSTR=0 skips callgrind,
#   ALG (default ES256): the environment's signing algorithm (e.g. ALG=ML-DSA-65)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${ROUNDS:-2}"; SECS="${SECS:-8}"; CG_SECS="${CG_SECS:-15}"; ALG="${ALG:-ES256}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/keyward-target}"
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
if [ $# -eq 0 ]; then
  cargo build --release -q -p keyward
  set -- "$CARGO_TARGET_DIR/release/keyward"
fi
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

# free_port, wait_http
. scripts/bench-lib.sh

# user and system CPU seconds used so far by process $1.
cpu_split() { python3 -c "import os; f=open('/proc/$1/stat').read().rsplit(')',1)[1].split(); t=os.sysconf('SC_CLK_TCK'); print(int(f[11])/t, int(f[12])/t)"; }

# setup BIN DIR -> sets PORT and writes DIR/post.lua (an $ALG store with one client)
setup() {
  local bin="$1" dir="$2" c id secret
  PORT=$(free_port)
  local bits=(); [[ $ALG == RS* || $ALG == PS* ]] && bits=(--bits 2048)
  KEYWARD_DATA_DIR="$dir/data" "$bin" init --issuer "http://127.0.0.1:$PORT" --alg "$ALG" "${bits[@]}" >/dev/null
  c=$(KEYWARD_DATA_DIR="$dir/data" "$bin" clients create --env default --name bench --scopes "a b" --audience api://bench --json)
  id=$(echo "$c" | python3 -c 'import json,sys; print(json.load(sys.stdin)["client_id"])')
  secret=$(echo "$c" | python3 -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])')
  { echo 'wrk.method = "POST"'
    echo 'wrk.body = "grant_type=client_credentials"'
    echo 'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"'
    echo "wrk.headers[\"Authorization\"] = \"Basic $(printf '%s:%s' "$id" "$secret" | base64 -w0)\""
  } > "$dir/post.lua"
}

requests() { awk '/requests in/ {print $1}'; }

instructions() { # BIN LABEL
  local dir="$WORK/cg-$2" pid n; mkdir -p "$dir"; setup "$1" "$dir"
  KEYWARD_DATA_DIR="$dir/data" KEYWARD_LOG=warn valgrind --tool=callgrind \
    --callgrind-out-file="$dir/cg.out" "$1" serve --listen "127.0.0.1:$PORT" >/dev/null 2>"$dir/log" &
  pid=$!
  for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.2; done
  wrk -t1 -c2 -d3s -s "$dir/post.lua" "http://127.0.0.1:$PORT/oauth2/token" >/dev/null
  callgrind_control -z "$pid" >/dev/null 2>&1
  n=$(wrk -t1 -c2 -d"${CG_SECS}s" -s "$dir/post.lua" "http://127.0.0.1:$PORT/oauth2/token" | requests)
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 - "$dir" "$n" "$2" "$ALG" <<'PY'
import glob, re, sys
d, n, label = sys.argv[1], int(sys.argv[2]), sys.argv[3]
for f in glob.glob(d + "/cg.out*"):
    t = open(f, errors="replace").read()
    if "Trigger: dump" in t:
        total = int(re.search(r"^(?:totals|summary):\s+(\d+)", t, re.M).group(1))
        print(f"{label:<12} instructions per token request ({sys.argv[4]}): {total / n:,.0f} ({n} requests)")
PY
}

cpu_round() { # BIN LABEL ROUND
  local dir="$WORK/cpu-$2-$3" pid; mkdir -p "$dir"; setup "$1" "$dir"
  KEYWARD_DATA_DIR="$dir/data" KEYWARD_LOG=warn "$1" serve --listen "127.0.0.1:$PORT" >/dev/null 2>"$dir/log" &
  pid=$!
  wait_http "http://127.0.0.1:$PORT/healthz"
  for case in healthz token; do
    local u0 s0 u1 s1 n
    read -r u0 s0 < <(cpu_split "$pid")
    if [ "$case" = token ]; then
      n=$(wrk -t1 -c16 -d"${SECS}s" -s "$dir/post.lua" "http://127.0.0.1:$PORT/oauth2/token" | requests)
    else
      n=$(wrk -t1 -c16 -d"${SECS}s" "http://127.0.0.1:$PORT/healthz" | requests)
    fi
    read -r u1 s1 < <(cpu_split "$pid")
    python3 -c "print(f'$2 round $3 {\"$case\":<8} user {($u1-$u0)/$n*1e6:5.1f} + sys {($s1-$s0)/$n*1e6:5.1f} us CPU per request, {$n/$SECS:,.0f} rps')"
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

label() { echo "bin$1"; }
i=0; for b in "$@"; do i=$((i+1)); echo "bin$i = $b"; done
if [ "${INSTR:-1}" != 0 ] && command -v valgrind >/dev/null; then
  i=0; for b in "$@"; do i=$((i+1)); instructions "$b" "$(label $i)"; done
fi
for r in $(seq 1 "$ROUNDS"); do
  i=0; for b in "$@"; do i=$((i+1)); cpu_round "$b" "$(label $i)" "$r"; done
done
