#!/usr/bin/env bash
# eval/sweep.sh on the GPU machine, with a packed CUDA build, inside one device call:
#   bash eval/device_sweep.sh PACK SHAPES MODEL OUT SECONDS visual|kv [prunelm eval options]
# PACK: a tests/gpu/pack.sh folder (its prunelm runs on the GPU); SHAPES: a prunelm-shapes
# executable. The sweep works in /tmp/plm-sweep-WHAT, resumably, so a later call on a machine
# still warm continues it; after SECONDS (or at the end) OUT/sweep-WHAT.tgz holds each
# setting's results and summary and, when every setting finished, report.md and the plots.
# The images are not packed: they are made again from their seeds (`prunelm-shapes`), and
# `prunelm eval --resume` on the unpacked folder redoes nothing.
set -u
[ $# -ge 6 ] || { echo "usage: device_sweep.sh PACK SHAPES MODEL OUT SECONDS visual|kv" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
dir=$1
shapes=$(realpath "$2")
model=$3
out=$4
secs=$5
what=$6
shift 6
. "$root/tests/gpu/env.sh" || exit 2
bin=$(mktemp -d)
ln -s "$(cd "$dir" && pwd)/prunelm" "$bin/prunelm"
ln -s "$shapes" "$bin/prunelm-shapes"
work=/tmp/plm-sweep-$what
start=$(date +%s)
PLM_BIN=$bin timeout "$secs" bash "$root/eval/sweep.sh" "$what" "$model" "$work" --resume -q "$@"
rc=$?
echo "device_sweep: $what rc=$rc after $(($(date +%s) - start)) s" | tee "$out/sweep-$what.log"
for f in "$work"/*/summary.json; do
    [ -f "$f" ] && echo "$(basename "$(dirname "$f")") $(tr -d '\n\t ' <"$f" | head -c 300)"
done >>"$out/sweep-$what.log"
tar -czf "$out/sweep-$what.tgz" -C "$work" --exclude=data .
exit "$rc"
