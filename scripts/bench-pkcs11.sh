#!/usr/bin/env bash
# keyward's PKCS#11 signer against a bare C_Sign loop on the same SoftHSM2
# token with the same threads, in one run (issue 15: ES256 and RS256-2048
# signatures/s through keyward >= 0.9x the bare loop).
#
#   scripts/bench-pkcs11.sh
#
# 1. wall clock (benches/pkcs11.rs): ES256 and RS256-2048, 1 and 2 threads;
#    variants `bare` (each thread its own logged-in session, C_SignInit +
#    C_Sign; ES256 over a digest computed beforehand), `keyward` (the
#    signer of keyward_signers::open: pool checkout, hashing, C_Sign and the
#    verification of every device signature, which is the product) and
#    `unchecked` (the same signer without the verification), in ROUNDS
#    (default 9) interleaved rounds of MS (default 300) ms each; medians.
#    keyward/bare - unchecked/bare is what the verification costs;
#    1 - unchecked/bare what the pool costs.
# 2. instructions per signature (callgrind, `count:N` mode, one thread):
#    the same variants plus the verification alone (PublicKey::verify),
#    which do not drift with the machine's other work. INSTR=0 skips;
#    INSTR_CALLS (default 200) sets N.
#
# A temporary SoftHSM2 token is made in the benchmark's own SOFTHSM2_CONF
# under the target directory; nothing outside it changes.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
[ -e /usr/lib/softhsm/libsofthsm2.so ] || { echo "SoftHSM2 is not installed (apt-get install softhsm2)" >&2; exit 1; }

bin="$(cargo bench -q -p keyward-signers --bench pkcs11 --no-run --message-format=json |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "pkcs11":
        print(m["executable"])')"

"$bin" "rounds:${ROUNDS:-9}" "ms:${MS:-300}"

if [ "${INSTR:-1}" = 0 ]; then
    exit 0
fi
if ! command -v valgrind >/dev/null; then
    echo
    echo "valgrind not found: instruction counts skipped (apt-get install valgrind; INSTR=0 skips them)"
    exit 0
fi
calls="${INSTR_CALLS:-200}"
echo
echo "instructions per signature (callgrind, $calls signatures each, one thread; SoftHSM's own work included):"
printf '%-11s %12s %12s %12s %12s %14s %16s\n' algorithm bare keyward unchecked verify keyward/bare unchecked/bare
for alg in ES256 RS256-2048; do
    out="$(mktemp)"
    valgrind --tool=callgrind --callgrind-out-file="$out" \
        --toggle-collect='*::instr_*' "$bin" "count:$calls" "$alg" >/dev/null 2>&1
    callgrind_annotate --inclusive=yes --threshold=100 "$out" | python3 -c '
import re, sys
calls, name = int(sys.argv[1]), sys.argv[2]
cost = {}
for line in sys.stdin:
    m = re.match(r"\s*([\d,]+) .*::instr_(bare|keyward|unchecked|verify) ", line)
    if m:
        cost[m.group(2)] = int(m.group(1).replace(",", "")) / calls
b, k, u, v = cost["bare"], cost["keyward"], cost["unchecked"], cost["verify"]
print(f"{name:<11} {b:>12,.0f} {k:>12,.0f} {u:>12,.0f} {v:>12,.0f} {b / k:>13.3f}x {b / u:>15.3f}x")
pad = " " * 11
print(f"{pad} keyward adds {k - b:,.0f} per signature: verification {v:,.0f}, pool, hashing and the rest {k - b - v:,.0f}")
' "$calls" "$alg"
    rm -f "$out"
done
echo "(the x columns are bare/keyward instructions: the signatures/s ratio the instructions predict)"
