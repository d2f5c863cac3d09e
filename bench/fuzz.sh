#!/usr/bin/env bash
# Fuzzing campaign: runs every libFuzzer target in fuzz/ for MINUTES each (or until EXECS executions),
# starting from its kept corpus in fuzz/corpus/<name>, then merges what it found back into that corpus,
# minimised with libFuzzer's -merge=1 (an input is kept only if it adds coverage). Prints one row per
# target: executions, executions per second, coverage (cov: edges, ft: features, from libFuzzer's last
# status line), kept inputs before and after, findings.
# A crash, an uncaught exception, a leak, a timeout, running out of memory or an abort (a broken
# invariant) is a finding: its input is kept under $OUT/<name>/ and the script exits 1 at the end.
#
# Usage: bench/fuzz.sh MINUTES [target...]     (target: e.g. suit_envelope or suit_envelope_fuzz)
# Environment:
#   EXECS=N        stop a target after N executions too (whichever comes first)
#   JOBS=1         targets fuzzed at the same time (one process each)
#   TIMEOUT=10     seconds one input may take before it is a finding
#   RSS_MB=2048    memory one target may use before it is a finding
#   MINIMISE=1     rebuild each corpus as its named seeds plus a minimal set of the rest (0: only add)
#   BUILD=build-fuzz  the clang-14 libFuzzer tree (configured here with ccache when missing)
#   BUILD_JOBS=$(nproc)  compile jobs
#   OUT=fuzz-findings  where findings are kept
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:?usage: bench/fuzz.sh MINUTES [target...]}
shift
build=${BUILD:-build-fuzz}
out=${OUT:-fuzz-findings}
jobs=${JOBS:-1}
timeout=${TIMEOUT:-10}
rss=${RSS_MB:-2048}
minimise=${MINIMISE:-1}
execs=${EXECS:-}
seconds=$(python3 -c "print(max(1, int(float('$minutes') * 60)))")

if [ ! -f "$build/CMakeCache.txt" ]; then
  launcher=()
  if command -v ccache >/dev/null; then
    launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
  fi
  CC=clang-14 CXX=clang++-14 cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only" -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only" \
    -DKILN_FUZZ=ON -DKILN_TESTS=OFF "${launcher[@]}" >&2
fi
targets=()
for name in "$@"; do targets+=("${name%_fuzz}_fuzz"); done
if [ ${#targets[@]} -eq 0 ]; then
  for src in fuzz/*_fuzz.cpp; do targets+=("$(basename "$src" .cpp)"); done
fi
cmake --build "$build" -j "${BUILD_JOBS:-$(nproc)}" --target "${targets[@]}" >&2

rows=$(mktemp -d)
trap 'rm -rf "$rows"' EXIT

# Fuzzes one target and writes its row to $rows/<name>.
fuzz_one() {
  local name=$1 short=${1%_fuzz}
  local corpus=fuzz/corpus/$short bin=$build/fuzz/$1
  local work found log
  work=$(mktemp -d)
  found=$work/found
  log=$work/log
  mkdir -p "$corpus" "$out/$short" "$found"
  local before
  before=$(find "$corpus" -type f | wc -l)
  echo "-- $name: ${seconds}s${execs:+ or $execs executions} from $before kept inputs" >&2
  local limits=(-max_total_time="$seconds" -timeout="$timeout" -rss_limit_mb="$rss")
  [ -n "$execs" ] && limits+=(-runs="$execs")
  local rc=0
  "$bin" "${limits[@]}" -print_final_stats=1 -artifact_prefix="$out/$short/" "$found" "$corpus" >"$log" 2>&1 || rc=$?
  # Keep what was found, minimised: named seeds (regression inputs) always stay; the fuzzer's own inputs
  # (named by their SHA-1) stay only as far as they add coverage to the seeds.
  if [ "$minimise" = 1 ]; then
    local merged=$work/merged rest=$work/rest
    mkdir -p "$merged" "$rest"
    find "$corpus" -maxdepth 1 -type f -regextype egrep ! -regex '.*/[0-9a-f]{40}' -exec cp {} "$merged/" \;
    find "$corpus" -maxdepth 1 -type f -regextype egrep -regex '.*/[0-9a-f]{40}' -exec cp {} "$rest/" \;
    if "$bin" -merge=1 -timeout="$timeout" -rss_limit_mb="$rss" "$merged" "$rest" "$found" >"$work/merge.log" 2>&1; then
      find "$corpus" -maxdepth 1 -type f -delete
      find "$merged" -maxdepth 1 -type f -exec cp {} "$corpus/" \;
    else
      echo "-- $name: minimising failed (see below); the corpus only grows" >&2
      tail -5 "$work/merge.log" >&2
      "$bin" -merge=1 -timeout="$timeout" -rss_limit_mb="$rss" "$corpus" "$found" >/dev/null 2>&1 || true
    fi
  else
    "$bin" -merge=1 -timeout="$timeout" -rss_limit_mb="$rss" "$corpus" "$found" >/dev/null 2>&1 || true
  fi
  local after
  after=$(find "$corpus" -type f | wc -l)
  local units rate cov ft findings
  units=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | awk '{print $2}')
  ft=$(grep -oE 'ft: [0-9]+' "$log" | tail -1 | awk '{print $2}')
  findings=$(find "$out/$short" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l)
  local result="$findings"
  if [ "$rc" -ne 0 ]; then
    result="$findings (exit $rc, see $out/$short/)"
    [ "$findings" -gt 0 ] || result="exit $rc"
    { echo "-- $name:"; grep -E "^==[0-9]+==|SUMMARY|deadly signal|ERROR|terminate|what\(\)" "$log" | head -8; } >&2 || true
    cp "$log" "$out/$short/fuzz.log"
  fi
  printf '%-22s %12s %8s %7s %8s %7s %7s  %s\n' "$name" "${units:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" \
    "$before" "$after" "$result" >"$rows/$name"
  echo "$rc" >"$rows/$name.rc"
  rm -rf "$work"
}

running=0
for name in "${targets[@]}"; do
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
  fuzz_one "$name" &
  running=$((running + 1))
done
wait

status=0
printf '%-22s %12s %8s %7s %8s %7s %7s  %s\n' target executions exec/s cov ft before after findings
for name in "${targets[@]}"; do
  cat "$rows/$name"
  [ "$(cat "$rows/$name.rc")" = 0 ] || status=1
done
exit $status
