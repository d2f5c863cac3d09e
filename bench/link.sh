#!/usr/bin/env bash
# Board link benchmark: 8 MiB upload to an emulated board shaped as USB full speed (12 Mbit/s,
# 1 ms one-way latency), windowed vs stop-and-wait, plus the CLI's CPU time per SMP packet.
# Usage: bench/link.sh [BUILD_DIR]   (default: build)
set -euo pipefail
build=${1:-build}
kiln="$build/bin/kiln"
emu="$build/bin/kiln-board-emu"
bandwidth=1500000   # 12 Mbit/s
latency_us=1000
size=$((8 * 1024 * 1024))

work=$(mktemp -d)
emu_pid=
cleanup() {
  if [[ -n $emu_pid ]]; then kill "$emu_pid" 2>/dev/null || true; wait "$emu_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# An MCUboot-formatted 8 MiB image (header: magic, hdr_size 32, img_size, version 9.0.0).
python3 - "$work/fw.bin" "$size" <<'PY'
import os, struct, sys
path, size = sys.argv[1], int(sys.argv[2])
header = struct.pack('<IIHHIIBBHII', 0x96f3b83d, 0, 32, 0, size - 32, 0, 9, 0, 0, 0, 0)
with open(path, 'wb') as f:
    f.write(header + os.urandom(size - 32))
PY

"$emu" --dir "$work/emu" --bandwidth "$bandwidth" --latency-us "$latency_us" > "$work/emu.out" &
emu_pid=$!
for _ in $(seq 100); do grep -q ready "$work/emu.out" 2>/dev/null && break; sleep 0.1; done
export KILN_EMU_DIR="$work/emu"

printf '%-14s %8s %10s %12s %9s %14s\n' mode window seconds "KiB/s" "% of link" "CPU us/packet"
for window in 8 1; do
  /usr/bin/time -f '%U %S' -o "$work/time" "$kiln" -o json board upload "$work/fw.bin" --window "$window" > "$work/out.json"
  read -r user sys < "$work/time"
  python3 - "$work/out.json" "$window" "$bandwidth" "$user" "$sys" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
window, bandwidth, cpu = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]) + float(sys.argv[5])
rate = (r['size'] - r['resumed_from']) / r['seconds']
mode = 'windowed' if window > 1 else 'stop-and-wait'
print(f"{mode:<14} {window:>8} {r['seconds']:>10.2f} {rate / 1024:>12.0f} {100 * rate / bandwidth:>8.1f}% {1e6 * cpu / r['packets']:>14.1f}")
PY
done
