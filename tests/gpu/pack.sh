#!/usr/bin/env bash
# Packs what the GPU machine needs from a CUDA build into a small folder for the device tool's
# carry (a whole build directory is far larger):  bash tests/gpu/pack.sh [BUILD] [DEST]
# BUILD defaults to build-cuda, DEST to .carry/cuda (git-ignored). Then, there:
#   bash tests/gpu/run.sh .carry/cuda
# Build with -DPLM_SHARED=ON: the executables then share one libprunelm.so (and its one CUDA
# fatbinary), which goes beside them, where their $ORIGIN run path finds it. A static build
# still packs, but every executable embeds the whole fatbinary (~9 MB each, ~28 MB packed).
# The other shared libraries the GPU machine lacks (OpenBLAS alone is 36 MB) go in libs.tar.xz.
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
shared=
# (only when the tests link it: a build switched back to static may still hold an old one)
if readelf -d "$build/gpu/test_cuda_ops" | grep -q 'NEEDED.*\[libprunelm\.so\]'; then
    cp -L "$build/libprunelm.so" "$dest"/
    strip --strip-unneeded "$dest/libprunelm.so"
    shared=libprunelm.so
fi
tar -cJf "$dest/libs.tar.xz" -C "$build/gpu/lib" .
# xz packs the executables (and the fatbinary in them) to a sixth. run.sh unpacks bins.tar.xz
# when it finds one.
(cd "$dest" && strip test_* bench_* prunelm 2>/dev/null || true
 tar -cJf bins.tar.xz test_* bench_* prunelm $shared && rm -f test_* bench_* prunelm $shared)
du -sh "$dest"
