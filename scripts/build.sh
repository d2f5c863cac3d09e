#!/usr/bin/env bash
# Configures and builds kiln in ./build (warnings are errors). Used by demo.sh, test.sh and CI.
# Optimised, with line tables only (-g1): backtraces and sanitizer reports name file and line, and it
# compiles in about two thirds of the time full debug info (-g) takes. For a debugger: KILN_BUILD_TYPE=Debug.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE="${KILN_BUILD_TYPE:-RelWithDebInfo}" -DKILN_WERROR=ON \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" >/dev/null
cmake --build build -j "$(nproc)"
