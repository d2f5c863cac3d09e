#!/usr/bin/env bash
# Startup time: `kiln --version` and `kiln --help` (full command tree) beside `openssl version`,
# in one hyperfine run. Targets: --version <= 3 ms median, --help <= 5 ms median.
set -euo pipefail
cd "$(dirname "$0")/.."
kiln=${KILN:-build/bin/kiln}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
hyperfine -N --warmup 50 --runs "${RUNS:-500}" --export-json "$out" \
  "$kiln --version" "$kiln --help" "openssl version" >&2
python3 - "$out" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    print(f'{r["command"]:<40} median {r["median"]*1000:6.2f} ms   mean {r["mean"]*1000:6.2f} ms')
PY
echo "kiln binary links: $(ldd "$kiln" | wc -l) shared libraries (libcurl: $(ldd "$kiln" | grep -c curl || true))"
