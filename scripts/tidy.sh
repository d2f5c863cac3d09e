#!/usr/bin/env bash
# Runs clang-tidy-14 with the checks in .clang-tidy over every library, program and command source
# (not tests or fuzz targets), using ./build/compile_commands.json; any finding fails (exit 1).
# Needs a configured ./build (scripts/build.sh). Extra arguments: a regex of files to check instead.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f build/compile_commands.json ] || { echo "tidy: build/compile_commands.json is missing: run scripts/build.sh first" >&2; exit 1; }
dirs='(core|signing|manifests|transport|provisioning|service|emulator|cli|commands)'
filter="${1:-^${PWD}/${dirs}/[^/]+\.cpp$}"
run-clang-tidy-14 -p build -quiet -j "$(nproc)" "$filter" >build/tidy.log 2>&1 || true
# run-clang-tidy's exit status is not reliable across versions: findings are decided from its output.
# clang-tidy colours its diagnostics even into a file: strip the escapes before matching, or no line matches.
if sed 's/\x1b\[[0-9;]*m//g' build/tidy.log | grep -E '^(/|[a-z]).*: (warning|error): ' | grep -v '^clang-tidy' \
  >build/tidy-findings.txt; then
  sort -u build/tidy-findings.txt >&2
  echo "tidy: $(sort -u build/tidy-findings.txt | wc -l) finding(s) (full log: build/tidy.log)" >&2
  exit 1
fi
echo "tidy: $(grep -c '^clang-tidy' build/tidy.log || true) files, no findings" >&2
