# Sourced by scripts/demo.sh and bench/ota.sh: a local kiln-service and emulated boards running the update
# agent, all on 127.0.0.1 inside a temporary directory that is removed (and every process stopped) on exit.
# Needs kiln, kiln-service and kiln-board-emu on PATH.
#   local_fleet_workspace PREFIX      creates and enters $work (/tmp/PREFIX.XXXXXX), sets the XDG and emulator
#                                     directories inside it and installs the cleanup trap
#   local_fleet_service [ARGS...]     `kiln-service init` + `run` in $work/svc; sets $service (operator API),
#                                     $agents (device agents' mutual-TLS listener) and $service_pid
#   local_fleet_boards N [ARGS...]    N emulated boards with the update agent (1 s check-ins); waits until
#                                     every board's link is up
#   local_fleet_station_ca NAME       a station CA key (station-ca.pem) and self-signed certificate (station-ca.crt)
pids=()
local_fleet_cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}

local_fleet_workspace() {
  work=$(mktemp -d "/tmp/$1.XXXXXX")
  trap local_fleet_cleanup EXIT
  cd "$work"
  export XDG_CONFIG_HOME="$work/config" XDG_CACHE_HOME="$work/cache" NO_COLOR=1 KILN_EMU_DIR="$work/boards"
}

local_fleet_service() {
  kiln-service init --dir svc >/dev/null
  kiln-service run --dir svc --listen 127.0.0.1:0 --agent-listen 127.0.0.1:0 "$@" 2> svc.log &
  service_pid=$!
  pids+=("$service_pid")
  for _ in $(seq 100); do grep -q "agents: listening on https://" svc.log && break; sleep 0.1; done
  service=$(grep -o "^listening on https://127.0.0.1:[0-9]*" svc.log | head -1 | cut -d' ' -f3)
  agents=$(grep -o "agents: listening on https://127.0.0.1:[0-9]*" svc.log | head -1 | cut -d' ' -f4)
  if [ -z "$service" ] || [ -z "$agents" ]; then
    echo "kiln-service did not start; its log:" >&2
    cat svc.log >&2
    return 1
  fi
}

local_fleet_boards() {
  local count=$1
  shift
  kiln-board-emu --dir boards --count "$count" --agent --check-in-interval 1 "$@" > emu.log 2>&1 &
  pids+=($!)
  for _ in $(seq 600); do [ "$(ls boards/*.sock 2>/dev/null | wc -l)" -ge "$count" ] && return 0; sleep 0.1; done
  echo "the $count emulated boards did not come up; the emulator's log:" >&2
  cat emu.log >&2
  return 1
}

local_fleet_station_ca() {
  kiln key generate --type ecdsa-p256 -o station-ca.pem >/dev/null
  kiln cert create --key station-ca.pem --subject "/CN=$1" --ca --days 365 -o station-ca.crt >/dev/null
}
