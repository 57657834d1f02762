#!/usr/bin/env bash
# Runs prunelm's GPU tests on the GPU machine, from the repository root:
#   bash tests/gpu/run.sh [DIR]
# DIR is a CUDA build directory (default build-cuda; its gpu/ folder holds the tests and lib/)
# or a folder made by tests/gpu/pack.sh (bins.tar.xz: the tests, and libprunelm.so from a
# -DPLM_SHARED=ON build, which they find beside them through their $ORIGIN run path; and
# libs.tar.xz). The machine lacks some shared libraries libprunelm links (cJSON, OpenBLAS, ...):
# they travel with the tests and go on LD_LIBRARY_PATH. cuBLAS comes from the machine's CUDA
# toolkit (or pip's nvidia-cublas).
# Environment: SANITIZE=1 also runs test_cuda_ops and test_cuda_decode under compute-sanitizer's
# memcheck, racecheck, synccheck and initcheck (each run stopped after SANITIZE_TIMEOUT seconds,
# default 150).
# Prints one SUMMARY line per test program and exits non-zero when any failed.
set -u
dir=${1:-build-cuda}
. "$(dirname "$0")/env.sh" || exit 2

echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ) $(hostname)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
missing=$(ldd "$dir/test_cuda_ops" | grep "not found")
if [ -n "$missing" ]; then
    echo "run.sh: missing shared libraries:"
    echo "$missing"
    exit 2
fi

status=0
summary=()
run_one() { # name, command...
    local name=$1
    shift
    local log
    log=$(mktemp)
    "$@" 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    local tally
    tally=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -1)
    [ -z "$tally" ] && tally="no tally"
    if [ "$rc" -eq 0 ]; then
        summary+=("SUMMARY $name: PASS ($tally)")
    else
        summary+=("SUMMARY $name: FAIL rc=$rc ($tally)")
        status=1
    fi
    rm -f "$log"
}

run_one test_cuda_ops "$dir/test_cuda_ops"
# The decode step's kernels: GEMV, fused decoder ops, recorded CUDA graphs, split-K attention.
run_one test_cuda_decode "$dir/test_cuda_decode"
if [ "${SANITIZE:-0}" = 1 ] && command -v compute-sanitizer >/dev/null; then
    # API errors are not reported: test_cuda_ops plants a failing 1 PiB cudaMalloc on purpose,
    # and the backend checks every API call's status itself. racecheck and initcheck run without
    # the matmul checks: they flag cuBLASLt's own kernels (nvjet_sm90_* races, which use
    # barriers racecheck does not model; splitKreduce reading its workspace), seen 2026-11-23.
    for prog in test_cuda_ops test_cuda_decode; do
        for tool in memcheck racecheck synccheck initcheck; do
            skip=
            case $tool in racecheck|initcheck) skip=1 ;; esac
            run_one "${prog}_$tool" env ${skip:+PLM_TEST_SKIP_MATMUL=1} \
                timeout "${SANITIZE_TIMEOUT:-150}" compute-sanitizer --tool "$tool" \
                --report-api-errors no --error-exitcode 3 "$dir/$prog"
        done
    done
fi
# FlexPrefill's block-sparse and DeltaLLM's attention ops against the CPU.
[ -x "$dir/test_cuda_blocks" ] && run_one test_cuda_blocks "$dir/test_cuda_blocks"
# Mustafar's bitmap KV store: device compression and decode attention against the CPU.
[ -x "$dir/test_cuda_bitmap" ] && run_one test_cuda_bitmap "$dir/test_cuda_bitmap"
# ThinK's thin-key and KIVI's int4 KV stores: device ops against the CPU.
[ -x "$dir/test_cuda_kvstore" ] && run_one test_cuda_kvstore "$dir/test_cuda_kvstore"
# The whole model on the GPU against the transformers fixtures and the CPU backend.
[ -x "$dir/test_cuda_kv" ] && run_one test_cuda_kv "$dir/test_cuda_kv"
[ -x "$dir/test_cuda_model" ] && run_one test_cuda_model "$dir/test_cuda_model"

echo
printf '%s\n' "${summary[@]}"
exit $status
