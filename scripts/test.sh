#!/usr/bin/env bash
# Installs dependencies, builds (warnings are errors), and runs the whole test suite with ctest: the
# unit tests, the end-to-end tests against the real programs, the umockdev USB test, and a replay of
# every kept fuzz input. Extra arguments go to ctest (e.g. -L unit, -R e2e_service).
# KILN_SANITIZE=ON builds and runs everything under AddressSanitizer + UndefinedBehaviorSanitizer
# instead, in ./build-test (the end-to-end tests then start the sanitized programs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "${KILN_SANITIZE:-OFF}" = ON ]; then
  # KILN_SANITIZE_DIR, KILN_SANITIZE_FLAGS and KILN_SANITIZE_TARGET choose another tree, optimisation and
  # target: e.g. only the e2e_tests target (the e2e tests and the programs they start) at -O0.
  dir=${KILN_SANITIZE_DIR:-build-test}
  # -g1 (line tables: reports name file and line) builds in about 60 % of the time of full debug info.
  flags=${KILN_SANITIZE_FLAGS:--O2 -g1 -DNDEBUG}
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="$flags" \
    -DCMAKE_C_FLAGS_RELWITHDEBINFO="$flags" -DKILN_WERROR=ON -DKILN_SANITIZE=ON >/dev/null
  cmake --build "$dir" -j "$(nproc)" ${KILN_SANITIZE_TARGET:+--target "$KILN_SANITIZE_TARGET"}
  # umockdev-wrapper preloads its library before the ASan runtime: expected, not an error here.
  export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:verify_asan_link_order=0}"
  # umockdev's preload (glib) keeps what it allocates: suppressed by library name, never kiln's code.
  export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$PWD/tests/data/lsan.supp}"
  export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
else
  dir=build
  bash scripts/build.sh
fi
ctest --test-dir "$dir" --output-on-failure -j "$(nproc)" "$@"
