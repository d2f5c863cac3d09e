#!/usr/bin/env bash
# Blob benchmark: `kiln image upload` and `kiln image download` of a 1 GiB image (random bytes) against a
# local kiln-service (SQLite, TLS on loopback): wall time of each, kiln's peak RSS for each, and the
# service's peak RSS (VmHWM) over both. Target: service peak RSS < 64 MiB (it streams: 64 KiB pieces).
# Usage: bench/blobs.sh   (SIZE_MIB=1024 BUILD=build override the defaults)
set -euo pipefail

BUILD=$(realpath "${BUILD:-$(dirname "$0")/../build}")
SIZE_MIB=${SIZE_MIB:-1024}
export PATH="$BUILD/bin:$PATH"
source "$(cd "$(dirname "$0")/.." && pwd)/scripts/lib/local-fleet.sh"
local_fleet_workspace kiln-bench-blobs
local_fleet_service
export KILN_SERVICE="$service" KILN_CA_FILE="$work/svc/ca.pem"
KILN_TOKEN=$(cat "$work/svc/admin.token")
export KILN_TOKEN
SERVICE_PID=$service_pid
WORK=$work

head -c "${SIZE_MIB}M" /dev/urandom >"$WORK/fw.bin"
ID=$(sha256sum "$WORK/fw.bin" | cut -d' ' -f1)
service_peak() { grep '^VmHWM' "/proc/$SERVICE_PID/status" | awk '{print $2}'; }
t() { /usr/bin/time -f "%e %M" "$@" 2>&1 >/dev/null | tail -1; }

echo "== ${SIZE_MIB} MiB image through kiln-service (SQLite, loopback TLS)"
echo "service at start:   $(service_peak) KiB peak RSS"
read -r wall rss < <(t kiln -q image upload "$WORK/fw.bin")
echo "upload:             ${wall} s, kiln ${rss} KiB peak RSS, service $(service_peak) KiB peak RSS so far"
read -r wall rss < <(t kiln -q image download "$ID" -O "$WORK/back.bin")
echo "download:           ${wall} s, kiln ${rss} KiB peak RSS, service $(service_peak) KiB peak RSS so far"
[ "$(sha256sum "$WORK/back.bin" | cut -d' ' -f1)" = "$ID" ] || { echo "download does not hash to $ID" >&2; exit 1; }
peak=$(service_peak)
echo "service peak RSS:   ${peak} KiB (target < 65536)"
[ "$peak" -lt 65536 ]
