#!/usr/bin/env bash
# Factory benchmark: 32 emulated boards with 1 ms one-way link latency (a USB board's round trip
# is ~2 ms) provisioned by one `kiln factory run --all --jobs N`: boards per hour, station CPU
# time per board, and the scaling from 1 to 32 jobs. Each run starts from 32 blank boards.
# Usage: bench/factory.sh [BUILD_DIR] [BOARDS]   (defaults: build 32)
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
boards=${2:-32}
kiln="$build/bin/kiln"
emu="$build/bin/kiln-board-emu"
latency_us=1000

work=$(mktemp -d)
emu_pid=
stop_emulator() {
  if [[ -n $emu_pid ]]; then kill "$emu_pid" 2>/dev/null || true; wait "$emu_pid" 2>/dev/null || true; fi
  emu_pid=
}
trap 'stop_emulator; rm -rf "$work"' EXIT

"$kiln" key generate -t ecdsa-p256 -o "$work/ca.key.pem" > /dev/null
"$kiln" key generate -t ecdsa-p256 -o "$work/boot.pem" > /dev/null
openssl req -x509 -new -key "$work/ca.key.pem" -subj "/CN=Bench CA" -days 30 -out "$work/ca.pem" 2> /dev/null

printf '%5s %7s %10s %12s %16s\n' jobs boards seconds boards/hour "CPU ms/board"
for jobs in 1 2 4 8 16 32; do
  run="$work/run-$jobs"
  mkdir -p "$run"
  "$emu" --dir "$run/emu" --count "$boards" --latency-us "$latency_us" > "$run/emu.out" &
  emu_pid=$!
  for _ in $(seq 300); do grep -q ready "$run/emu.out" 2>/dev/null && break; sleep 0.1; done
  "$emu" --dir "$run/emu" --print-vendor-root > "$run/vendor.pem"
  "$kiln" factory init --ca-key "$work/ca.key.pem" --ca-cert "$work/ca.pem" --vendor-root "$run/vendor.pem" \
    --boot-key "$work/boot.pem" --product Bench --service https://kiln.example -o "$run/station.toml" > /dev/null
  start=$(date +%s.%N)
  KILN_EMU_DIR="$run/emu" /usr/bin/time -f '%U %S' -o "$run/time" \
    "$kiln" -o json factory run --all --jobs "$jobs" --profile "$run/station.toml" > "$run/out.json"
  end=$(date +%s.%N)
  stop_emulator
  read -r user sys < "$run/time"
  python3 - "$run/out.json" "$jobs" "$start" "$end" "$user" "$sys" <<'PY'
import json, sys
outcomes = json.load(open(sys.argv[1]))
jobs, start, end, user, sys_time = int(sys.argv[2]), *map(float, sys.argv[3:7])
ok = sum(1 for o in outcomes if o["result"] == "provisioned")
seconds = end - start
print(f"{jobs:5d} {ok:7d} {seconds:10.2f} {ok * 3600 / seconds:12.0f} {(user + sys_time) * 1000 / max(ok, 1):16.2f}")
PY
done
