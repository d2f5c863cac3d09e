#!/usr/bin/env bash
# Fuzzing campaign: runs every libFuzzer target in fuzz/ for MINUTES each, starting from its kept
# corpus in fuzz/corpus/<name>, then merges what it found back into that corpus, minimised
# (libFuzzer -merge=1 keeps only inputs that add coverage). Prints one row per target: executions,
# executions per second, coverage (edges), features, corpus size before and after, findings.
# A crash, leak, timeout or abort (a broken invariant) is a finding: its input is kept under
# $OUT/<name>/ and the script exits 1 at the end.
# Usage: bench/fuzz.sh MINUTES [target...]   (BUILD=build-fuzz JOBS=1 OUT=fuzz-findings override)
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:?usage: bench/fuzz.sh MINUTES [target...]}
shift
build=${BUILD:-build-fuzz}
out=${OUT:-fuzz-findings}
seconds=$(python3 -c "print(max(1, int(float('$minutes') * 60)))")

if [ ! -f "$build/CMakeCache.txt" ]; then
  CC=clang-14 CXX=clang++-14 cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only" -DKILN_FUZZ=ON -DKILN_TESTS=OFF >/dev/null
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for src in fuzz/*_fuzz.cpp; do targets+=("$(basename "$src" .cpp)"); done
fi
cmake --build "$build" -j "$(nproc)" --target "${targets[@]}" >&2

findings=0
rows=()
for name in "${targets[@]}"; do
  short=${name%_fuzz}
  corpus=fuzz/corpus/$short
  mkdir -p "$corpus" "$out/$short"
  work=$(mktemp -d)
  before=$(find "$corpus" -type f | wc -l)
  log=$work/log
  echo "-- $name: ${seconds}s from $before kept inputs" >&2
  set +e
  "$build/fuzz/$name" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$out/$short/" "$work" "$corpus" >"$log" 2>&1
  rc=$?
  set -e
  # Keep what was found, minimised against what was kept.
  "$build/fuzz/$name" -merge=1 -rss_limit_mb=2048 "$corpus" "$work" >/dev/null 2>&1 || true
  after=$(find "$corpus" -type f -not -name '.*' | wc -l)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | awk '{print $2}')
  ft=$(grep -oE 'ft: [0-9]+' "$log" | tail -1 | awk '{print $2}')
  result=ok
  if [ "$rc" -ne 0 ]; then
    result="FINDING (exit $rc, see $out/$short/)"
    findings=1
    grep -E "^==[0-9]+==|SUMMARY|deadly signal|ERROR" "$log" | head -5 >&2 || true
  fi
  rows+=("$(printf '%-22s %14s %10s %7s %8s %6s %6s  %s' "$name" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "$before" "$after" "$result")")
  rm -rf "$work"
done

printf '%-22s %14s %10s %7s %8s %6s %6s  %s\n' target executions exec/s cov features kept grown result
printf '%s\n' "${rows[@]}"
exit $findings
