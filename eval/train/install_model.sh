#!/usr/bin/env bash
# Makes a trained checkpoint the bundled default, from what eval/train/device_run.sh sent back:
#   bash eval/train/install_model.sh DIR [NAME]
# DIR holds ck.tar.aa, ck.tar.ab, ... (the checkpoint in 15 MB parts). The checkpoint goes to
# assets/models/NAME (default shapes-vqa, replacing an earlier one: only one model travels to
# the GPU machine within its 64 MiB), assets/models/default points at it, and the CLI answers
# the README's first question with it. Refuses a checkpoint that lacks a file prunelm needs or
# has a shard over 16 MB (issue 5's limit), leaving the old default in place.
set -euo pipefail
src=${1:?DIR with ck.tar.* parts}
name=${2:-shapes-vqa}
root=$(cd "$(dirname "$0")/../.." && pwd)
ls "$src"/ck.tar.* >/dev/null 2>&1 || { echo "install_model.sh: no ck.tar.* in $src" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat "$src"/ck.tar.* | tar -xf - -C "$tmp"
for f in config.json tokenizer.json; do
    [ -f "$tmp/$f" ] || { echo "install_model.sh: the checkpoint has no $f" >&2; exit 1; }
done
# transformers 5.x may write the image processor into processor_config.json instead
[ -f "$tmp/preprocessor_config.json" ] || [ -f "$tmp/processor_config.json" ] ||
    { echo "install_model.sh: the checkpoint has no preprocessor_config.json" >&2; exit 1; }
ls "$tmp"/*.safetensors >/dev/null 2>&1 || { echo "install_model.sh: no safetensors" >&2; exit 1; }
for f in "$tmp"/*.safetensors; do
    if [ "$(stat -c %s "$f")" -gt $((16 * 1024 * 1024)) ]; then
        echo "install_model.sh: $(basename "$f") is over 16 MB" >&2
        exit 1
    fi
done
dest=$root/assets/models/$name
rm -rf "$dest"
mkdir -p "$dest"
cp -r "$tmp"/. "$dest"/
ln -sfn "$name" "$root/assets/models/default"
du -sh "$dest"
"$root/build/prunelm" ask "What colour is the large cross?"
