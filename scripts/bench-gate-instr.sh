#!/usr/bin/env bash
# Instructions per `Gate::verify` (uncached gate, three trusted issuers),
# counted by valgrind's callgrind in keyward-verify's gate_cost bench:
#   warm: a token whose header bytes its issuer's key set has verified
#         before (the issuer is chosen by that header, not by `iss`);
#   cold: a token whose header bytes were never remembered (its issuer's
#         slots hold four other headers), so `iss` chooses the issuer;
# and the raw aws-lc-rs signature check of the same tokens beside them.
# Each figure is the average over the RS256-2048, ES256 and EdDSA tokens
# (one issuer each), N calls per token: the same on every run, whatever
# else the host is doing.
#
# usage: scripts/bench-gate-instr.sh [N]     (default 200)
set -euo pipefail
cd "$(dirname "$0")/.."
calls="${1:-200}"
# cargo names the built bench on stderr: "Executable benches/gate_cost.rs (PATH)".
bin="$(cargo bench -p keyward-verify --bench gate_cost --no-run 2>&1 |
    sed -n 's/^ *Executable .*(\(.*\))$/\1/p')"
[ -x "$bin" ] || { echo "gate_cost bench not built" >&2; exit 1; }
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
valgrind --tool=callgrind --callgrind-out-file="$out" \
    --toggle-collect='*::instr_*' "$bin" "count:$calls" 2>/dev/null
# Each function is collected only inside itself: its inclusive total is its own calls.
callgrind_annotate --inclusive=yes "$out" | python3 -c '
import re, sys
calls = int(sys.argv[1]) * 3
cost = {}
for line in sys.stdin:
    m = re.match(r"\s*([\d,]+) .*::instr_(raw|warm|cold) ", line)
    if m:
        cost[m.group(2)] = int(m.group(1).replace(",", "")) / calls
raw = cost["raw"]
print(f"raw aws-lc-rs signature check: {raw:,.0f} instructions")
for k in ("warm", "cold"):
    print(f"{k:<4} Gate::verify: {cost[k]:,.0f} instructions, {cost[k] - raw:,.0f} over the raw check")
' "$calls"
