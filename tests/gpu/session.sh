#!/usr/bin/env bash
# One GPU session's measurements in one device call (the device tool lends ~30 minutes a
# session; each call pays a start), most important first: the GPU tests, the decode benchmark,
# the 7B benchmark (with the decode switches off, the decode attention's old two-wave grid, with
# pruning, and against transformers), the
# KV-store benchmark, and the tests again with the fused ops, CUDA graphs and early launches off.
#   bash tests/gpu/session.sh PACK OUT [TOKENIZER_JSON]
# PACK is a pack.sh folder (or a CUDA build directory). OUT receives summary.txt and
# session.tgz, re-packed after every step (so a timeout loses only the step it cut): one log per
# step and each benchmark's table (the device tool returns at most 8 files, so they travel in
# one). TOKENIZER_JSON (the Llama-2 tokenizer.json) enables the 7B steps. QUICK=1 stops after
# the pruning bench (plus early launches off and the profile); SKIP_TESTS=1 skips the tests (run by an earlier call).
set -u
dir=${1:?PACK}
dest=${2:?OUT}
tok=${3:-}
mkdir -p "$dest"
out=$(mktemp -d /tmp/plm-session-XXXXXX)
here=$(cd "$(dirname "$0")" && pwd)
step() { # name, command...: logs to OUT/name.log, notes the status in summary.txt
    local name=$1
    shift
    local t0=$SECONDS
    "$@" >"$out/$name.log" 2>&1
    local rc=$?
    echo "$name: rc=$rc $((SECONDS - t0))s" | tee -a "$out/summary.txt"
    grep '^SUMMARY' "$out/$name.log" >>"$out/summary.txt"
    cp "$out/summary.txt" "$dest/"
    tar -czf "$dest/session.tgz.tmp" -C "$out" . && mv "$dest/session.tgz.tmp" "$dest/session.tgz"
}
[ "${SKIP_TESTS:-0}" = 1 ] || step tests bash "$here/run.sh" "$dir"
. "$here/env.sh" || exit 2
step bench_decode "$dir/bench_decode" "$out/bench_decode.txt"
[ -x "$dir/bench_patch_embed" ] && step bench_patch_embed "$dir/bench_patch_embed" "$out/bench_patch_embed.txt"
if [ -n "$tok" ]; then
    l7b=$(mktemp -d /tmp/l7b-XXXXXX)
    step make_7b python3 "$here/../../eval/make_random_llava7b.py" --tokenizer "$tok" --out "$l7b"
    img=$here/../../assets/images/default.png
    b7=("$dir/prunelm" bench --model "$l7b" --image "$img" --prompt-tokens 40 --gen 256 --repeat 5)
    step bench_7b "${b7[@]}" --json "$out/bench_7b.json"
    # visual pruning's cost on the 7B: every method at 64 and 192 tokens (VFlowOpt at all four)
    # on one loaded model
    step bench_7b_prune "$dir/prunelm" bench --model "$l7b" --image "$img" --prompt-tokens 40 \
        --gen 64 --repeat 3 --prune none --prune vflowopt:tokens=32 --prune vflowopt:tokens=64 \
        --prune vflowopt:tokens=128 --prune vflowopt:tokens=192 --prune fastv:tokens=64 \
        --prune fastv:tokens=192 --prune visionzip:tokens=64 --prune visionzip:tokens=192 \
        --prune sparsevlm:tokens=64 --prune sparsevlm:tokens=192 --prune pyramiddrop:lambda=0.25 \
        --prune random:tokens=64 --prune uniform-grid:tokens=64
    if [ "${QUICK:-0}" = 1 ]; then
        # early launches off (the decode step's A/B), and the kernel-by-kernel profile
        step bench_7b_nopdl env PLM_CUDA_PDL=0 "${b7[@]}"
        step profile_7b env PLM_CUDA_PROFILE="$out/profile_7b.txt" "$dir/prunelm" bench \
            --model "$l7b" --image "$img" --prompt-tokens 40 --gen 16 --repeat 1
        rm -rf "$l7b"
        l7b=
    fi
fi
if [ -n "$tok" ] && [ -n "$l7b" ]; then
    step bench_7b_plain env PLM_CUDA_FUSED=0 PLM_CUDA_GRAPH=0 PLM_CUDA_PDL=0 "${b7[@]}"
    step bench_7b_waves2 env PLM_CUDA_DECODE_WAVES=2 "${b7[@]}"
    # where the time goes, kernel by kernel (no profiler runs on the GPU machine): the last
    # 8000 kernels cover the timed run's vision tower, prefill and 16 decode steps
    step profile_7b env PLM_CUDA_PROFILE="$out/profile_7b.txt" "$dir/prunelm" bench \
        --model "$l7b" --image "$img" --prompt-tokens 40 --gen 16 --repeat 1
    step bench_7b_nograph env PLM_CUDA_GRAPH=0 "${b7[@]}"
    step bench_vs_hf python3 "$here/../../eval/bench_vs_hf.py" --model "$l7b" \
        --prunelm "$dir/prunelm" --image "$img" --out "$out/bench_vs_hf.md"
    rm -rf "$l7b"
fi
step bench_kv_store "$dir/bench_kv_store" "$out/bench_kv_store.txt"
step bench_kv_bitmap "$dir/bench_kv_bitmap" "$out/bench_kv_bitmap.txt"
[ "${QUICK:-0}" = 1 ] && exit 0
step tests_plain env PLM_CUDA_FUSED=0 PLM_CUDA_GRAPH=0 PLM_CUDA_PDL=0 bash "$here/run.sh" "$dir"
