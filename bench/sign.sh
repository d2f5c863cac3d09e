#!/usr/bin/env bash
# Benchmark: `kiln image sign` (ECDSA P-256, header 0x200, --pad-header) of a 512 MiB image against
# `openssl dgst -sha256` of the same file in the same hyperfine run; kiln's peak RSS; startup time.
# Targets: wall ratio <= 1.15, peak RSS <= 32 MiB, `kiln --version` <= 3 ms median.
# Usage: bench/sign.sh [path/to/kiln]   (SIZE_MIB=512 RUNS=5 WORK=/tmp override the defaults)
set -euo pipefail
kiln=$(realpath "${1:-build/bin/kiln}")
size_mib=${SIZE_MIB:-512}
runs=${RUNS:-5}
work=$(mktemp -d "${WORK:-/tmp}/kiln-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT

head -c "${size_mib}M" /dev/urandom >"$work/fw.bin"
"$kiln" -q key generate --type ecdsa-p256 -o "$work/key.pem" >/dev/null
slot=$(( (size_mib + 1) * 1024 * 1024 ))
sign="$kiln -q image sign -k $work/key.pem --version 1.0.0 --header-size 0x200 --pad-header --slot-size $slot $work/fw.bin $work/fw.signed.bin"
dgst="openssl dgst -sha256 $work/fw.bin"

echo "== ${size_mib} MiB: kiln image sign vs openssl dgst -sha256 (page cache warm)"
# The previous run's output is removed before each run: freeing 512 MiB of old blocks on rename
# is the filesystem's cost, not signing's.
hyperfine --warmup 1 --runs "$runs" --prepare "rm -f $work/fw.signed.bin" --export-json "$work/sign.json" \
  -n "kiln image sign" "$sign" -n "openssl dgst -sha256" "$dgst"
python3 - "$work/sign.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
k, o = r["kiln image sign"], r["openssl dgst -sha256"]
print(f"wall: kiln {k['mean']:.3f} s (median {k['median']:.3f}), openssl {o['mean']:.3f} s (median {o['median']:.3f}), "
      f"ratio of means {k['mean'] / o['mean']:.2f}, of medians {k['median'] / o['median']:.2f} (target <= 1.15)")
PY

echo "== peak RSS"
rm -f "$work/fw.signed.bin"
/usr/bin/time -f "kiln image sign: %M KiB peak RSS (target <= 32768)" $sign >/dev/null
/usr/bin/time -f "openssl dgst:    %M KiB peak RSS" $dgst >/dev/null

echo "== startup"
hyperfine -N --warmup 20 --runs 300 --export-json "$work/start.json" "$kiln --version" "openssl version"
python3 - "$work/start.json" <<'PY'
import json, sys
for x in json.load(open(sys.argv[1]))["results"]:
    print(f"{x['command']}: median {x['median'] * 1000:.2f} ms")
PY
