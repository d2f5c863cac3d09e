#!/usr/bin/env bash
# Benchmark: `kiln manifest create` over a large image vs `openssl dgst -sha256` (target ratio <= 1.15).
# Usage: bench/manifest.sh [BUILD_DIR] [SIZE_MIB]   (defaults: build, 512). Needs hyperfine.
set -euo pipefail

build_dir=${1:-build}
size_mib=${2:-512}
kiln="$(cd "$build_dir" && pwd)/bin/kiln"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT  # never leave a 512 MiB file behind

image="$work/image.bin"
head -c "$((size_mib * 1024 * 1024))" /dev/urandom > "$image"
cat "$image" > /dev/null  # warm the page cache for both contenders

hyperfine --warmup 1 --runs 5 --export-json "$work/result.json" \
  -n "openssl dgst -sha256" "openssl dgst -sha256 $image" \
  -n "kiln manifest create" "$kiln -q manifest create --component $image --vendor-domain example.com --sequence 1 --unsigned -o $work/out.suit"

python3 - "$work/result.json" "$size_mib" <<'PY'
import json, sys
results = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
openssl = results["openssl dgst -sha256"]["mean"]
kiln = results["kiln manifest create"]["mean"]
mib = int(sys.argv[2])
print(f"image {mib} MiB: openssl {openssl:.3f} s ({mib / openssl:.0f} MiB/s), kiln {kiln:.3f} s ({mib / kiln:.0f} MiB/s)")
print(f"ratio kiln/openssl = {kiln / openssl:.3f} (target <= 1.15)")
sys.exit(0 if kiln / openssl <= 1.15 else 1)
PY
