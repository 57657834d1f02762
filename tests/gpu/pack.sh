#!/usr/bin/env bash
# Packs what the GPU machine needs from a CUDA build into a small folder for the device tool's
# carry (a whole build directory is far larger):  bash tests/gpu/pack.sh [BUILD] [DEST]
# BUILD defaults to build-cuda, DEST to .carry/cuda (git-ignored). The shared libraries go in
# gzip-compressed (OpenBLAS alone is 36 MB, 11 MB packed). Then, there:
#   bash tests/gpu/run.sh .carry/cuda
set -eu
build=${1:-build-cuda}
dest=${2:-.carry/cuda}
[ -x "$build/gpu/test_cuda_ops" ] || { echo "pack.sh: build $build first" >&2; exit 2; }
rm -rf "$dest"
mkdir -p "$dest"
cp "$build"/gpu/test_* "$dest"/
# benchmarks (bench_*), when built: run by hand, e.g. bench_kv_bitmap OUT.txt
cp "$build"/gpu/bench_* "$dest"/ 2>/dev/null || true
# the CLI too (bench, eval on the GPU); it needs the same libs: LD_LIBRARY_PATH as run.sh sets
cp "$build"/prunelm "$dest"/
tar -czf "$dest/libs.tar.gz" -C "$build/gpu/lib" .
# Each executable embeds the whole fatbinary (~9 MB); together they pass the carry limit, and
# xz packs them to a sixth. run.sh unpacks bins.tar.xz when it finds one.
(cd "$dest" && strip test_* bench_* prunelm 2>/dev/null || true
 tar -cJf bins.tar.xz test_* bench_* prunelm && rm -f test_* bench_* prunelm)
du -sh "$dest"
