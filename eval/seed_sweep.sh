#!/usr/bin/env bash
# Seeds a sweep's work folder with the settings an earlier (partial) sweep finished, from the
# items/ folder its notes keep (SETTING.jsonl.gz, SETTING.summary.json), so `prunelm eval
# --resume` (eval/sweep.sh, eval/device_sweep.sh) runs only what is missing:
#   bash eval/seed_sweep.sh ITEMS WORK
# A setting without its summary (stopped mid-way) resumes after its last item.
set -eu
items=${1:?ITEMS}
work=${2:?WORK}
mkdir -p "$work"
for f in "$items"/*.jsonl.gz; do
    n=$(basename "$f" .jsonl.gz)
    [ -e "$work/$n/results.jsonl" ] && continue # (a resumed run may have gone further)
    mkdir -p "$work/$n"
    gzip -dc "$f" >"$work/$n/results.jsonl"
    [ -f "$items/$n.summary.json" ] && cp "$items/$n.summary.json" "$work/$n/summary.json"
done
echo "seed_sweep: $(ls "$work" | wc -l) settings in $work"
