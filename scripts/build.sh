#!/usr/bin/env bash
# Configures and builds kiln in ./build (warnings are errors). Used by demo.sh, test.sh and CI.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE="${KILN_BUILD_TYPE:-RelWithDebInfo}" -DKILN_WERROR=ON >/dev/null
cmake --build build -j "$(nproc)"
