#!/usr/bin/env bash
# Sets up a fresh Debian/Ubuntu machine, builds prunelm, and asks the bundled model a question
# about the bundled image (any arguments are passed on to `prunelm ask`).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
if [ ! -x build/prunelm ]; then
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build build -j"$(nproc)" --target prunelm_cli >/dev/null
if [ $# -eq 0 ]; then set -- "What colour is the large cross?"; fi
exec ./build/prunelm ask "$@"
