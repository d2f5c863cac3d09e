#!/usr/bin/env bash
# Runs clang-tidy-14 with the checks in .clang-tidy over every library, program and command source
# (not tests or fuzz targets), using ./build/compile_commands.json; any finding fails (exit 1).
# Needs a configured ./build (scripts/build.sh).
#
# A source is checked unless .ci/tidy-clean records its key: a hash of the clang-tidy version, .clang-tidy,
# its compile flags and its preprocessed text, every included header expanded (scripts/tidy_keys.py). Equal
# keys mean clang-tidy sees the same input and finds the same, so a source whose key a clean run recorded is
# not checked again, as ccache skips a compilation it has seen; any change to it or to a header it includes
# gives a new key. Computing the keys takes about a CPU-minute; checking everything, about twelve.
#
#   scripts/tidy.sh              check every source whose key is not recorded
#   scripts/tidy.sh REGEX        check only sources matching REGEX (the record is still used)
#   scripts/tidy.sh --record     as the first, then, with no findings, record every source's key in .ci/tidy-clean
#   KILN_TIDY_ALL=1 scripts/tidy.sh   ignore the record: check every source
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f build/compile_commands.json ] || { echo "tidy: build/compile_commands.json is missing: run scripts/build.sh first" >&2; exit 1; }
record=0
if [ "${1:-}" = "--record" ]; then record=1; shift; fi
dirs='(core|signing|manifests|transport|provisioning|service|emulator|cli|commands)'
filter="${1:-^${PWD}/${dirs}/[^/]+\.cpp$}"
[ "$record" = 0 ] || [ $# -eq 0 ] || { echo "tidy: --record records every source: give no REGEX with it" >&2; exit 2; }

python3 scripts/tidy_keys.py "$PWD" build "$filter" >build/tidy-keys.txt
total=$(wc -l <build/tidy-keys.txt)
if [ "${KILN_TIDY_ALL:-0}" != 1 ] && [ -f .ci/tidy-clean ]; then
  awk 'NR == FNR { clean[$1] = 1; next } !($1 in clean) { print $2 }' .ci/tidy-clean build/tidy-keys.txt >build/tidy-todo.txt
else
  awk '{ print $2 }' build/tidy-keys.txt >build/tidy-todo.txt
fi
todo=$(wc -l <build/tidy-todo.txt)

: >build/tidy.log
if [ "$todo" -gt 0 ]; then
  # Source paths are letters, digits, '_', '-', '/' and '.': only the dots need escaping.
  regex="^($(sed 's/\./\\./g' build/tidy-todo.txt | paste -sd '|'))\$"
  run-clang-tidy-14 -p build -quiet -j "$(nproc)" "$regex" >build/tidy.log 2>&1 || true
fi
# run-clang-tidy's exit status is not reliable across versions: findings are decided from its output.
# clang-tidy colours its diagnostics even into a file: strip the escapes before matching, or no line matches.
if sed 's/\x1b\[[0-9;]*m//g' build/tidy.log | grep -E '^(/|[a-z]).*: (warning|error): ' | grep -v '^clang-tidy' \
  >build/tidy-findings.txt; then
  sort -u build/tidy-findings.txt >&2
  echo "tidy: $(sort -u build/tidy-findings.txt | wc -l) finding(s) (full log: build/tidy.log)" >&2
  exit 1
fi
# A crash prints no finding: it fails the run, and nothing is recorded.
if grep -qE 'Stack dump|PLEASE submit|Error while processing|clang-tidy-14: .*(error|Segmentation)' build/tidy.log; then
  echo "tidy: clang-tidy failed on a source (full log: build/tidy.log)" >&2
  exit 1
fi
checked=$(grep -c '^clang-tidy' build/tidy.log || true)
[ "$checked" -ge "$todo" ] || { echo "tidy: clang-tidy ran on ${checked} of ${todo} files (full log: build/tidy.log)" >&2; exit 1; }
echo "tidy: ${total} files, ${checked} checked ($((total - todo)) unchanged since a clean run), no findings" >&2
if [ "$record" = 1 ]; then
  awk '$1 != "none" { print $1 }' build/tidy-keys.txt | sort -u >.ci/tidy-clean
  echo "tidy: recorded ${total} clean keys in .ci/tidy-clean" >&2
fi
