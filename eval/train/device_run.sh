#!/usr/bin/env bash
# One training run on the GPU machine, sized for its 10-minute command limit, with the results
# packed for the trip back (at most 8 files of 16 MB each):
#   SHAPES=path/to/prunelm-shapes OUT=dir [MIN=5.5] bash eval/train/device_run.sh [trainer args]
# e.g. continuing a chain of runs from a checkpoint carried in .carry/ck:
#   SHAPES=.carry/train/prunelm-shapes bash eval/train/device_run.sh --init .carry/ck --lr 4e-4
# Writes OUT/train.log, OUT/predictions.jsonl and OUT/ck.tar.aa, .ab, ... (the checkpoint as a
# tar in 15 MB parts: `cat ck.tar.* | tar -xf - -C DIR` rebuilds it). A fresh work folder each
# time: data left by an earlier run on a warm machine must not be reused by mistake (a 600-image
# smoke test's data once replaced the 40k-image set). DATA=dir names a data folder on purpose
# instead: a chain of runs with the same data options on a machine still warm then skips
# generating and decoding the images (about 1.5 minutes of each call).
set -uo pipefail
: "${SHAPES:?set SHAPES to the prunelm-shapes executable}"
: "${OUT:?set OUT to the folder that comes back}"
export PYTHONUNBUFFERED=1
work=${DATA:-$(mktemp -d /tmp/plm-train-XXXXXX)}
mkdir -p "$work"
rm -f "$work/predictions.jsonl"
ck=$(mktemp -d /tmp/plm-ck-XXXXXX)/ck
python3 "$(dirname "$0")/train_llava.py" --shapes "$SHAPES" --work "$work" --out "$ck" \
    --minutes "${MIN:-5.5}" --compile "$@" 2>&1 |
    grep -v -i "warning\|Writing model\|Loading weights" | tee "$OUT/train.log"
status=${PIPESTATUS[0]}
cp "$work/predictions.jsonl" "$OUT/" 2>/dev/null
if [ -d "$ck" ]; then
    tar -cf - -C "$ck" . | split -b 15M - "$OUT/ck.tar."
    # the next run of a chain on a machine still warm can start from here: --init /tmp/plm-last
    rm -rf /tmp/plm-last && cp -r "$ck" /tmp/plm-last
fi
ls -la "$OUT"
exit "$status"
