#!/usr/bin/env bash
# Installs everything prunelm needs to build and test on a fresh Debian/Ubuntu machine.
set -euo pipefail
pkgs=(build-essential cmake pkg-config libpng-dev libstb-dev libopenblas-dev libcjson-dev
      libcriterion-dev valgrind)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
