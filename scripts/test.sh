#!/usr/bin/env bash
# Sets up a fresh Debian/Ubuntu machine (dependencies), builds prunelm and runs the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DPLM_WERROR="${PLM_WERROR:-OFF}" >/dev/null
cmake --build build -j"$(nproc)"
cd build && ctest --output-on-failure -j2
