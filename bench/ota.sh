#!/usr/bin/env bash
# OTA benchmark: N emulated boards (default 200) running the update agent with a 1 s check-in
# interval, provisioned by `kiln factory run` (firmware 1.0.0) and claimed on a local kiln-service.
# Measures, for a 1 MiB image 1.1.0:
#   - the time from `kiln deployment create` (one wave, 100%) until every board reported `installed`
#     (polled every 0.2 s with `kiln deployment show`);
#   - the service's CPU time per agent check-in, in a steady window where the only traffic is the
#     fleet's check-ins (utime+stime of the kiln-service process from /proc; the check-in count is
#     boards x window / mean interval, since the agents jitter +-10% around 1 s).
# Usage: bench/ota.sh [BUILD_DIR] [BOARDS]   (defaults: build 200)
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
boards=${2:-200}
export PATH="$build/bin:$PATH"
source "$(dirname "$0")/../scripts/lib/local-fleet.sh"
local_fleet_workspace kiln-ota-bench
ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
now() { date +%s.%N; }

local_fleet_service --check-in-after 1
local_fleet_boards "$boards"

kiln key generate -t ecdsa-p256 -o boot.pem >/dev/null
local_fleet_station_ca "Bench Station CA"
for v in 1.0.0:1 1.1.0:2; do
  version=${v%:*} sequence=${v#*:}
  head -c $((1024 * 1024 - 1024)) /dev/urandom > app-$version.bin
  kiln image sign app-$version.bin app-$version.signed.bin -k boot.pem --version "$version" --header-size 0x200 \
    --slot-size 0x200000 --pad-header --public-key-format full >/dev/null
  kiln manifest create --component app-$version.signed.bin --vendor-domain example.com --class-name bench-board \
    --sequence "$sequence" --key boot.pem -o app-$version.suit >/dev/null
done
kiln-board-emu --dir boards --print-vendor-root > vendor-root.pem
kiln factory init --ca-key station-ca.pem --ca-cert station-ca.crt --vendor-root vendor-root.pem --boot-key boot.pem \
  --image app-1.0.0.signed.bin --manifest app-1.0.0.suit --manifest-key boot.pem --product Bench \
  --service "$agents" --trust-anchor svc/ca.pem -o station.toml >/dev/null
start=$(now)
kiln factory run --all --jobs 32 --profile station.toml -o json > provisioned.json
echo "factory: $boards boards provisioned (firmware 1.0.0, 1 MiB) in $(echo "$(now) - $start" | bc) s" >&2
kiln factory ledger export --profile station.toml -o units.jsonl >/dev/null
kiln login --service "$service" --token-file svc/admin.token --ca-file svc/ca.pem >/dev/null
kiln product create Bench --boot-key boot.pem --manifest-key boot.pem >/dev/null
kiln device ca add station-ca.crt --key station-ca.pem >/dev/null
kiln device import units.jsonl >/dev/null
kiln device claim --from-file units.jsonl >/dev/null
kiln -o csv device list | tail -n +2 | cut -d, -f1 > uids.txt
kiln device assign $(cat uids.txt) --group "Bench/Field Test" >/dev/null
image=$(kiln -o json image upload app-1.1.0.signed.bin --manifest app-1.1.0.suit | sed -n 's/.*"id": *"\([0-9a-f]*\)".*/\1/p' | head -1)

# Steady state: every board checks in every second and has nothing to do.
sleep 3
window=20
cpu0=$(cpu_ticks "$service_pid")
sleep "$window"
cpu1=$(cpu_ticks "$service_pid")
checkins=$((boards * window))

start=$(now)
deployment=$(kiln -o json deployment create --group "Bench/Field Test" --image "$image" --rollout 100% |
  sed -n 's/.*"id": *"\(dep_[0-9a-zA-Z_]*\)".*/\1/p' | head -1)
while :; do
  installed=$(kiln -o json deployment show "$deployment" | python3 -c 'import json,sys; print(json.load(sys.stdin)["device_status"].get("installed", 0))')
  [ "$installed" -ge "$boards" ] && break
  sleep 0.2
done
elapsed=$(echo "$(now) - $start" | bc)

python3 - "$boards" "$elapsed" "$cpu0" "$cpu1" "$ticks" "$checkins" "$window" <<'PY'
import sys
boards, elapsed, cpu0, cpu1, ticks, checkins, window = int(sys.argv[1]), float(sys.argv[2]), *map(int, sys.argv[3:8])
cpu = (cpu1 - cpu0) / ticks
print(f"boards                          {boards}")
print(f"image                           1 MiB, one wave (100%), check-in interval 1 s")
print(f"deployment create -> all installed  {elapsed:.2f} s")
print(f"service CPU in a {window} s idle window  {cpu:.2f} s for ~{checkins} check-ins")
print(f"service CPU per check-in        {cpu * 1e6 / checkins:.0f} us (mutual TLS; idle agent connections close after 1 s, so most check-ins at a 1 s interval include a handshake)")
PY
