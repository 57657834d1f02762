#!/usr/bin/env bash
# Sets up a fresh Debian/Ubuntu machine (dependencies), builds prunelm and runs the test suite:
# once as a release build (with valgrind on the CLI), once under AddressSanitizer +
# UndefinedBehaviorSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
jobs="$(nproc)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DPLM_WERROR="${PLM_WERROR:-OFF}" >/dev/null
cmake --build build -j"$jobs"
(cd build && ctest --output-on-failure -j2)
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DPLM_SANITIZE=ON -DPLM_CUDA=OFF \
  -DPLM_WERROR="${PLM_WERROR:-OFF}" >/dev/null
cmake --build build-asan -j"$jobs"
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j2)
