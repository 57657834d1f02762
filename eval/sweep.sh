#!/usr/bin/env bash
# The sweeps issues 6 and 7 ask for, with one command each, on a CPU or on the GPU machine:
#   bash eval/sweep.sh visual MODEL OUT [extra prunelm eval options, e.g. --limit 300]
#   bash eval/sweep.sh kv     MODEL OUT [extra options]
# visual: ShapesVQA's test split (300 images, 900 questions) at 576 (none), 192, 128, 64 and 32
#   image tokens for every visual-pruning method (SparseVLM ships keep lists for 64/128/192
#   only; PyramidDrop is set by lambda, not a token count), plus any spec files given in
#   PRUNE_EXTRA (e.g. PRUNE_EXTRA="@vflowopt64.spec", made by `prunelm tune` on the val split).
# kv: the long-context tasks (pass key, multi-key, image-then-dialogue at 4096 tokens, 100
#   each) with every evicting KV policy at 10%, 20% and 50% of the context, DELTA and Recycled
#   Attention at 20%, the channel, sparse, quantised and steering policies at their defaults.
#   The dialogue's question comes late (--late-question dialogue): after the policy compressed
#   the cache of the image and the conversation, as a later turn would.
# Writes OUT/report.md and the plots (prunelm eval's sweep), resumable with --resume. The
# binaries come from PLM_BIN (default build/); data are made under OUT/data.
set -euo pipefail
what=${1:?visual or kv}
model=${2:?MODEL}
out=${3:?OUT}
shift 3
bin=${PLM_BIN:-$(cd "$(dirname "$0")/.." && pwd)/build}
mkdir -p "$out/data"
specs=()
case $what in
visual)
    [ -f "$out/data/test.jsonl" ] ||
        "$bin/prunelm-shapes" --out "$out/data" --split test --count 300 --jobs "$(nproc)" -q
    data=$out/data/test.jsonl
    specs+=(--prune none)
    for n in 192 128 64 32; do
        for m in vflowopt fastv visionzip random uniform-grid; do specs+=(--prune "$m:tokens=$n"); done
        [ "$n" != 32 ] && specs+=(--prune "sparsevlm:tokens=$n")
    done
    for l in 0.5 0.3 0.15; do specs+=(--prune "pyramiddrop:lambda=$l"); done
    for x in ${PRUNE_EXTRA:-}; do specs+=(--prune "$x"); done
    ;;
kv)
    data=$out/data/long.jsonl
    if [ ! -f "$data" ]; then
        : >"$data.tmp"
        for task in passkey multikey dialogue; do
            "$bin/prunelm-shapes" --out "$out/data" --split test --count 100 --task "$task" \
                --tokens 4096 --jobs "$(nproc)" -q
            cat "$out/data/test-$task.jsonl" >>"$data.tmp"
        done
        mv "$data.tmp" "$data"
    fi
    specs+=(--kv none)
    for p in streaming h2o snapkv scissorhands kvcrush ems d2o; do
        for r in 0.1 0.2 0.5; do specs+=(--kv "$p:ratio=$r"); done
    done
    # the sparse-attention policies keep the whole cache: one budget each (eval takes 32
    # settings at most)
    specs+=(--kv delta:ratio=0.2 --kv recycled:ratio=0.2)
    for p in think mustafar flexprefill deltallm int4 "snapkv:ratio=0.2+autopasta"; do
        specs+=(--kv "$p")
    done
    ;;
*)
    echo "sweep.sh: the first argument is visual or kv, not '$what'" >&2
    exit 2
    ;;
esac
late=()
# the dialogue's question comes after the policy compressed the image and the conversation
[ "$what" = kv ] && late=(--late-question dialogue)
exec "$bin/prunelm" eval --model "$model" --data "$data" --out "$out" --max-tokens 8 "${late[@]}" \
    "${specs[@]}" "$@"
