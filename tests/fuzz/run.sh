#!/usr/bin/env bash
# Runs every libFuzzer target (tests/fuzz/fuzz_*.c) for a set time and records what it did.
#
#   tests/fuzz/run.sh                       # 600 s per target, two at a time
#   FUZZ_SECONDS=30 tests/fuzz/run.sh       # a smoke run
#   FUZZ_TARGETS="image jsonl" tests/fuzz/run.sh
#
# Builds build-fuzz (clang, ASan + UBSan + libFuzzer) when it is not configured yet. Each target
# fuzzes a copy of its seeds (tests/fuzz/corpus/<target>, kept small in git) under
# build-fuzz/fuzz-work/, with its dictionary when there is one; a crash, leak, timeout or OOM
# leaves the input in tests/fuzz/crashes/<target>-*. A table of targets, seconds, executions,
# exec/s and results is appended to the day's eval/results/fuzz_<date>.md (or FUZZ_REPORT).
# Exits 1 when any target found something.
set -euo pipefail
cd "$(dirname "$0")/../.."

SECS=${FUZZ_SECONDS:-600}
JOBS=${FUZZ_JOBS:-2} # the reference machine has 2 cores: one target per core
BUILD=${FUZZ_BUILD:-build-fuzz}
read -r -a TARGETS <<< "${FUZZ_TARGETS:-image safetensors config tokenizer_json tokenize jsonl prune_spec}"
REPORT=${FUZZ_REPORT:-eval/results/fuzz_$(date +%F).md}
WORK=$BUILD/fuzz-work
CRASHES=tests/fuzz/crashes

if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    CC=${FUZZ_CC:-clang} cmake -S . -B "$BUILD" -DPLM_FUZZ=ON -DPLM_TESTS=OFF -DPLM_CUDA=OFF \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo
fi
cmake --build "$BUILD" -j"$JOBS" --target fuzz
# The code under test is what was just built: name its commit now, not when the report is written.
commit=$(git rev-parse --short HEAD)
git diff --quiet HEAD -- tests/fuzz core vision lm api prune eval/*.c eval/*.h ||
    commit="$commit (with uncommitted changes)"
started=$(date +%H:%M)
rm -rf "$WORK"
mkdir -p "$WORK/logs" "$CRASHES"

# The targets' temporary files (fuzz_util.h: TMPDIR, else /dev/shm, else /tmp), by pid.
tmp_root() {
    if [ -n "${TMPDIR:-}" ]; then echo "$TMPDIR"
    elif [ -w /dev/shm ]; then echo /dev/shm
    else echo /tmp; fi
}

run_one() {
    local t=$1 bin=$BUILD/fuzz_$1 dict=() start rc pid
    mkdir -p "$WORK/corpus/$t"
    cp -R "tests/fuzz/corpus/$t/." "$WORK/corpus/$t/"
    [ -f "tests/fuzz/$t.dict" ] && dict=(-dict="tests/fuzz/$t.dict")
    start=$(date +%s)
    "$bin" -max_total_time="$SECS" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$CRASHES/$t-" "${dict[@]}" "$WORK/corpus/$t" \
        > "$WORK/logs/$t.log" 2>&1 &
    pid=$!
    rc=0
    wait "$pid" || rc=$?
    echo "$rc" > "$WORK/logs/$t.rc"
    echo $(($(date +%s) - start)) > "$WORK/logs/$t.secs"
    rm -rf "$(tmp_root)"/plm_fuzz_*_"$pid"
    echo "fuzz_$t: exit $rc after $(cat "$WORK/logs/$t.secs") s" >&2
}

for t in "${TARGETS[@]}"; do
    [ -x "$BUILD/fuzz_$t" ] || { echo "run.sh: no target fuzz_$t" >&2; exit 2; }
done
for t in "${TARGETS[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
    echo "fuzz_$t: fuzzing for $SECS s" >&2
    run_one "$t" &
done
wait

# ---- the report: one section per run, appended to the day's file ---------------------------
clang_version=$(${FUZZ_CC:-clang} --version | head -1)
cpu=$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')
failed=0
rows=""
for t in "${TARGETS[@]}"; do
    log=$WORK/logs/$t.log
    rc=$(cat "$WORK/logs/$t.rc")
    secs=$(cat "$WORK/logs/$t.secs")
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    if [ -z "$execs" ]; then # no final stats: the last "#N ..." status line
        execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
    fi
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    [ -n "$rate" ] || rate=$(( ${execs:-0} / (secs > 0 ? secs : 1) ))
    status=$(grep -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE)' "$log" | tail -1)
    cov=$(sed -nE 's/.* cov: ([0-9]+) ft: ([0-9]+) corp: ([0-9]+)\/.*/\1 edges, \2 features, \3 inputs/p' <<< "$status")
    if [ "$rc" = 0 ]; then
        result="no crash"
    else
        failed=1
        kind=$(grep -m1 -oE 'ERROR: (libFuzzer: [a-z-]+|AddressSanitizer: [a-zA-Z-]+|LeakSanitizer: [a-z ]+)|runtime error: .*|fuzz invariant broken.*' "$log" || true)
        artifact=$(sed -n 's/.*Test unit written to //p' "$log" | tail -1)
        kind=${kind//|/\\|}
        result="**FOUND** ${kind:-exit $rc}${artifact:+ (\`$artifact\`)}"
    fi
    seeds=$(find "tests/fuzz/corpus/$t" -type f | wc -l)
    rows+="| fuzz_$t | $secs | ${execs:-?} | $rate | $seeds | ${cov:-?} | $result |"$'\n'
done

mkdir -p "$(dirname "$REPORT")"
if [ ! -s "$REPORT" ]; then
    cat > "$REPORT" <<EOF
# Fuzzing — $(date +%F)

Each run: \`tests/fuzz/run.sh\` (libFuzzer; ASan + UBSan, every UBSan report fatal;
LeakSanitizer; \`-rss_limit_mb=2048 -timeout=10\`), each target on a copy of its seeds in
\`tests/fuzz/corpus/<target>\` with its dictionary. Executions are libFuzzer's
\`stat::number_of_executed_units\`; coverage is its last status line (edges of the instrumented
library, features, inputs in the working corpus). A found input is minimised with
\`build-fuzz/fuzz_<target> -minimize_crash=1 -runs=10000 <input>\`, kept in
\`tests/fuzz/regressions/<target>/\` and replayed by \`tests/test_fuzz_regressions.c\`.
EOF
fi
cat >> "$REPORT" <<EOF

## ${started}: ${TARGETS[*]}, $SECS s each

\`FUZZ_SECONDS=$SECS${FUZZ_TARGETS:+ FUZZ_TARGETS="$FUZZ_TARGETS"} tests/fuzz/run.sh\` at commit $commit,
$(( ${#TARGETS[@]} < JOBS ? ${#TARGETS[@]} : JOBS )) at a time; $clang_version; $cpu, $(nproc) cores.

| target | seconds | executions | exec/s | seeds | coverage at the end | result |
| --- | ---: | ---: | ---: | ---: | --- | --- |
${rows%$'\n'}
EOF
echo "run.sh: wrote $REPORT" >&2
tail -n "$((${#TARGETS[@]} + 7))" "$REPORT"
exit "$failed"
