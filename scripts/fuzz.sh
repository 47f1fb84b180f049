#!/usr/bin/env bash
# Runs the keyward-jose libFuzzer targets (fuzz/) one after the other.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# SECONDS per target (default 600); TARGETs default to all of them.
# Env: FUZZ_SANITIZER (default address; "none" if sanitizer builds fail),
#      FUZZ_JOBS (default 1).
# The toolchain is stable, so RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass -Z flags.
# Corpora grow in fuzz/corpus/<target> (seeded from fuzz/seeds/<target>),
# crashes land in fuzz/artifacts/<target>, logs in fuzz/target/fuzz-logs/.
set -euo pipefail

secs="${1:-600}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(token_parser jwk_parser)
sanitizer="${FUZZ_SANITIZER:-address}"
jobs="${FUZZ_JOBS:-1}"

root="$(cd "$(dirname "$0")/.." && pwd)"
fuzz="$root/fuzz"
export RUSTC_BOOTSTRAP=1
# Fuzz builds are instrumented: keep them in fuzz/target, away from the shared cache.
unset CARGO_TARGET_DIR

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

stamp="$(date +%Y%m%d-%H%M%S)"
logs="$fuzz/target/fuzz-logs/$stamp"
mkdir -p "$logs"
echo "cargo-fuzz $(cargo fuzz --version | awk '{print $2}'), sanitizer=$sanitizer, ${secs}s per target, logs in $logs"

summary=()
status=0
for t in "${targets[@]}"; do
    corpus="$fuzz/corpus/$t"
    artifacts="$fuzz/artifacts/$t"
    mkdir -p "$corpus" "$artifacts" "$logs/$t"
    before="$(ls "$artifacts" | wc -l)"

    echo "== $t: building"
    (cd "$fuzz" && cargo fuzz build --fuzz-dir "$fuzz" -s "$sanitizer" "$t") >"$logs/$t.build.log" 2>&1 || {
        echo "build failed, see $logs/$t.build.log"; tail -20 "$logs/$t.build.log"; exit 1; }

    echo "== $t: fuzzing for ${secs}s (started $(date +%T))"
    start=$(date +%s)
    rc=0
    # With -jobs, libFuzzer writes each job's output to fuzz-<N>.log in the working directory.
    (cd "$logs/$t" && cargo fuzz run --fuzz-dir "$fuzz" -s "$sanitizer" "$t" "$corpus" "$fuzz/seeds/$t" -- \
        -max_total_time="$secs" -jobs="$jobs" -print_final_stats=1 \
        -artifact_prefix="$artifacts/") >"$logs/$t.run.log" 2>&1 || rc=$?
    elapsed=$(( $(date +%s) - start ))

    joblogs=("$logs/$t"/fuzz-*.log)
    [ -e "${joblogs[0]}" ] || joblogs=("$logs/$t.run.log")
    runs=$(cat "${joblogs[@]}" | sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1/p' | awk '{s+=$1} END {print s+0}')
    dur=$(cat "${joblogs[@]}" | sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\2/p' | awk '{s+=$1} END {print s+0}')
    done_line=$(cat "${joblogs[@]}" | grep -E '^Done [0-9]+ runs' | tail -1 || true)
    crashes=$(( $(ls "$artifacts" | wc -l) - before ))
    corpus_n=$(ls "$corpus" | wc -l)
    cov=$(cat "${joblogs[@]}" | grep -E '#[0-9]+.*(DONE|pulse|NEW|REDUCE)' | tail -1 | grep -oE 'cov: [0-9]+ ft: [0-9]+' || true)
    [ "$crashes" -eq 0 ] && [ "$rc" -eq 0 ] || status=1
    summary+=("$(printf '%-13s runs=%-10s fuzzing_secs=%-5s wall_secs=%-5s crashes=%-3s corpus=%-5s %s rc=%s' \
        "$t" "$runs" "$dur" "$elapsed" "$crashes" "$corpus_n" "$cov" "$rc")")
    echo "   ${done_line:-no 'Done' line (crashed?)}; crashes: $crashes"
    if [ "$crashes" -gt 0 ] || [ "$rc" -ne 0 ]; then
        grep -hE 'panicked|ERROR: |SUMMARY|Test unit written' "${joblogs[@]}" | head -20 || true
    fi
done

echo
echo "== summary (sanitizer=$sanitizer)"
printf '%s\n' "${summary[@]}"
exit $status
