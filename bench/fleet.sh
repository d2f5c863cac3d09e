#!/usr/bin/env bash
# Fleet benchmark (issue 13 item 8), on each store backend: a local kiln-service with N devices (default
# 1,000,000) imported from one signed ledger bundle, then
#   - the import's wall time, and the p99 check-in latency while it runs (200 check-ins/s on fresh
#     connections resuming their sessions, each timed from its scheduled start);
#   - `kiln device list -o jsonl` of every device (wall time, client peak RSS) and `device count --by version`;
#   - last, all N assigned to one group, a staged deployment to it, and `deployment show` and `list` of it;
#   - check-ins per second (bench/checkin_bench.cpp, THREADS closed-loop clients for SECONDS each) on kept-alive
#     connections, on fresh connections with a full TLS 1.3 handshake each, and on fresh connections
#     resuming their session (what polling devices do), with stateless tickets and with `--session-cache`;
#     with the CPU each check-in cost the service and the load generator (which share the machine's cores);
#   - PostgreSQL only: the resumed rate with a second instance on a copy of the directory (clients split
#     between both).
# PostgreSQL 15 runs from a private cluster in /tmp (as the postgres user, as the tests do). Prints a table.
# Environment: BUILD (build tree), N, CHECKIN_SECONDS (per check-in run, default 10), THREADS (default 4),
#   BACKENDS ("sqlite postgresql"), IMPORT_RATE (check-ins/s during the import, default 200).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$root/build}
N=${N:-1000000}
SECONDS_EACH=${CHECKIN_SECONDS:-10}
THREADS=${THREADS:-4}
BACKENDS=${BACKENDS:-sqlite postgresql}
IMPORT_RATE=${IMPORT_RATE:-200}
KILN="$BUILD/bin/kiln"
SERVICE="$BUILD/bin/kiln-service"
LOAD="$BUILD/bin/kiln_bench_checkin"
PGBIN=/usr/lib/postgresql/15/bin
for program in "$KILN" "$SERVICE" "$LOAD"; do
  [ -x "$program" ] || { echo "fleet.sh: $program is missing: build first (cmake --build build)" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/kiln-fleet.XXXXXX)
chmod 755 "$WORK"
PIDS=()
PG_DATA=
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "$PG_DATA" ] && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PG_DATA" -m immediate -w stop >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT
export XDG_CONFIG_HOME="$WORK/xdg" NO_COLOR=1

# The fleet's material, made once: one device key for every unit (the benchmark measures the service, not key
# generation), a factory CA that signs the bundle, and dev-0000000's certificate for the check-ins.
openssl ecparam -name prime256v1 -genkey -noout -out "$WORK/device.key" 2>/dev/null
openssl pkey -in "$WORK/device.key" -pubout -out "$WORK/device.pub"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$WORK/ca.key" \
  -out "$WORK/ca.pem" -subj "/CN=Bench Factory CA" -days 2 2>/dev/null
openssl req -new -key "$WORK/device.key" -subj "/CN=dev-0000000" -out "$WORK/device.csr"
openssl x509 -req -in "$WORK/device.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial \
  -days 2 -out "$WORK/device.pem" 2>/dev/null
# Two bundles signed as a station signs them (kiln factory ledger export: ECDSA over the SHA-256 of every unit
# byte, in a trailer line, docs/ledger-bundle.md): dev-0000000 alone, imported first so that check-ins during
# the big import have a device to answer for, then the N-1 others.
python3 - "$N" "$WORK" <<'PY'
import hashlib, json, subprocess, sys
n, work = int(sys.argv[1]), sys.argv[2]
pem = open(f"{work}/device.pub").read()
ca_key = subprocess.run(["openssl", "x509", "-in", f"{work}/ca.pem", "-noout", "-pubkey"], capture_output=True,
                        text=True, check=True).stdout
def bundle(path, first, last):
    units = "".join(json.dumps({"uid": f"dev-{i:07d}", "product": "Thermo", "state": "secured",
                                "version": f"1.{i % 10}.0", "public_key": pem}) + "\n" for i in range(first, last))
    digest = hashlib.sha256(units.encode()).digest()
    sig = subprocess.run(["openssl", "pkeyutl", "-sign", "-inkey", f"{work}/ca.key"], input=digest,
                         capture_output=True, check=True).stdout
    with open(path, "w") as out:
        out.write(units)
        out.write(json.dumps({"bundle_signature": sig.hex(), "algorithm": "ecdsa-p256-sha256",
                              "bundle_sha256": digest.hex(), "units": last - first, "station_public_key": ca_key}) + "\n")
bundle(f"{work}/first.jsonl", 0, 1)
bundle(f"{work}/bundle.jsonl", 1, n)
PY

# An update for the deployment to the whole fleet: a small MCUboot image and its signed SUIT manifest.
head -c 65536 /dev/urandom >"$WORK/app.bin"
"$KILN" -q key generate --type ecdsa-p256 -o "$WORK/boot.pem" >/dev/null
"$KILN" -q key generate --type ecdsa-p256 -o "$WORK/manifest.pem" >/dev/null
"$KILN" -q image sign "$WORK/app.bin" "$WORK/app.signed.bin" -k "$WORK/boot.pem" --version 2.0.0 --header-size 0x200 \
  --slot-size 0x20000 --pad-header --public-key-format full >/dev/null
"$KILN" -q manifest create --component "$WORK/app.signed.bin" --uri "https://127.0.0.1/v1/agent/images" \
  --vendor-domain example.com --class-name bench-board --sequence 2 --key "$WORK/manifest.pem" -o "$WORK/app.suit" \
  >/dev/null

# Starts `kiln-service run` on DIR [LOG [extra flags]]; sets API_PORT and AGENT_PORT.
start_service() {
  local dir=$1 log=${2:-$1.log}
  shift $(($# < 2 ? $# : 2))
  "$SERVICE" run --dir "$dir" --listen 127.0.0.1:0 --agent-listen 127.0.0.1:0 --max-connections-per-address 0 \
    "$@" 2>"$log" &
  SERVICE_PID=$!
  PIDS+=($!)
  for _ in $(seq 300); do grep -q '^listening' "$log" 2>/dev/null && break; sleep 0.1; done
  API_PORT=$(grep '^listening' "$log" | grep -o '[0-9]*$') || { cat "$log" >&2; exit 1; }
  AGENT_PORT=$(grep '^agents' "$log" | grep -o '127.0.0.1:[0-9]*' | cut -d: -f2)
}

start_postgres() {
  PG_DATA="$WORK/pg/data"
  mkdir -p "$WORK/pg"
  chown postgres "$WORK/pg"
  runuser -u postgres -- "$PGBIN/initdb" -D "$PG_DATA" -A trust -U postgres --no-sync -E UTF8 --locale=C.UTF-8 >/dev/null
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PG_DATA" -l "$WORK/pg/server.log" -w -t 60 \
    -o "-k $WORK/pg -p 5432 -c listen_addresses='' -c max_connections=200" start >/dev/null
  runuser -u postgres -- "$PGBIN/createdb" -h "$WORK/pg" -p 5432 kiln
}

load() {  # MODE PORTS [extra args]: one JSON line
  local mode=$1 ports=$2
  shift 2
  exec "$LOAD" --port "$ports" --ca "$SVC/ca.pem" --cert "$WORK/device.pem" --key "$WORK/device.key" --mode "$mode" "$@"
}
# CPU seconds (user + system) the process has used so far.
cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat"; }
# `load`, and the CPU it and the service (SERVICE_PID) used: sets RESULT (its JSON line) and CPU_NOTE.
load_measured() {
  local before after
  before=$(cpu_of "$SERVICE_PID")
  RESULT=$(/usr/bin/time -f "%U %S" -o "$WORK/load.time" "$LOAD" --port "$2" --ca "$SVC/ca.pem" --cert "$WORK/device.pem" \
    --key "$WORK/device.key" --mode "$1" "${@:3}")
  after=$(cpu_of "$SERVICE_PID")
  CPU_NOTE=$(python3 -c "
import json, sys
r = json.loads(sys.argv[1]); user, system = map(float, open(sys.argv[4]).read().split()[-2:])
n = max(r['requests'], 1)
print(f'CPU per check-in: service {(float(sys.argv[3]) - float(sys.argv[2])) * 1000 / n:.2f} ms, load generator {(user + system) * 1000 / n:.2f} ms')
" "$RESULT" "$before" "$after" "$WORK/load.time")
}
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])['$2'])" "$1"; }
timed() { /usr/bin/time -f "%e %M" "$@" 2>&1 >/dev/null | tail -1; }

ROWS="$WORK/rows"
: >"$ROWS"
row() { printf '| %s | %s | %s |\n' "$1" "$2" "$3" >>"$ROWS"; }

for backend in $BACKENDS; do
  SVC="$WORK/svc-$backend"
  store=()
  if [ "$backend" = postgresql ]; then
    start_postgres
    store=(--store "postgresql:///kiln?host=$WORK/pg&port=5432&user=postgres")
  fi
  "$SERVICE" init --dir "$SVC" "${store[@]}" >/dev/null
  start_service "$SVC"
  export KILN_SERVICE="https://127.0.0.1:$API_PORT" KILN_CA_FILE="$SVC/ca.pem"
  KILN_TOKEN=$(cat "$SVC/admin.token")
  export KILN_TOKEN
  "$KILN" -q product create Thermo --boot-key "$WORK/boot.pem" --manifest-key "$WORK/manifest.pem" >/dev/null
  "$KILN" -q device ca add "$WORK/ca.pem" --key "$WORK/ca.key" >/dev/null
  "$KILN" -q device import "$WORK/first.jsonl" >/dev/null

  echo "== $backend: importing $N devices with $IMPORT_RATE check-ins/s running" >&2
  load resumed "$AGENT_PORT" --threads 4 --rate "$IMPORT_RATE" --seconds 3600 >"$WORK/during-import.json" &
  load_pid=$!
  read -r wall _ < <(timed "$KILN" -q device import "$WORK/bundle.jsonl")
  kill -TERM "$load_pid"
  wait "$load_pid" || true
  during=$(cat "$WORK/during-import.json")
  row "$backend" "import of $((N - 1)) units" "${wall} s"
  row "$backend" "p99 check-in latency during the import ($IMPORT_RATE/s)" \
    "$(field "$during" p99_ms) ms (max $(field "$during" max_ms) ms, $(field "$during" errors) errors)"

  echo "== $backend: listing and counting" >&2
  read -r wall rss < <(timed "$KILN" -o jsonl device list)
  row "$backend" "\`device list -o jsonl\` of $N" "${wall} s, client RSS $((rss / 1024)) MiB"
  read -r wall _ < <(timed "$KILN" device count --by version)
  row "$backend" "\`device count --by version\`" "${wall} s"

  for mode in keepalive fresh resumed; do
    echo "== $backend: check-ins, $mode" >&2
    load_measured "$mode" "$AGENT_PORT" --threads "$THREADS" --seconds "$SECONDS_EACH"
    result=$RESULT
    row "$backend" "check-ins/s, $mode ($THREADS clients)" \
      "$(field "$result" per_second)/s (p99 $(field "$result" p99_ms) ms; $(field "$result" resumed) of $(field "$result" handshakes) handshakes resumed; $CPU_NOTE)"
  done
  # The same with the agent listener keeping sessions (stateful tickets): an instance on the same directory.
  plain_pid=$SERVICE_PID plain_port=$AGENT_PORT
  start_service "$SVC" "$SVC-cache.log" --session-cache 1000000
  echo "== $backend: check-ins, resumed, --session-cache" >&2
  load_measured resumed "$AGENT_PORT" --threads "$THREADS" --seconds "$SECONDS_EACH"
  result=$RESULT
  row "$backend" "check-ins/s, resumed, \`--session-cache\` ($THREADS clients)" \
    "$(field "$result" per_second)/s (p99 $(field "$result" p99_ms) ms; $(field "$result" resumed) of $(field "$result" handshakes) handshakes resumed; $CPU_NOTE)"
  kill "$SERVICE_PID"
  wait "$SERVICE_PID" 2>/dev/null || true
  SERVICE_PID=$plain_pid AGENT_PORT=$plain_port
  # Last, because its offers would change what the check-ins above measure.
  echo "== $backend: a staged deployment to all $N devices" >&2
  read -r wall _ < <(timed bash -c '"$1" -o jsonl device list | "$1" -q device assign --from-file - --group Thermo/Production' \
    assign "$KILN")
  row "$backend" "\`device assign\` of $N to one group" "${wall} s"
  image=$("$KILN" image upload "$WORK/app.signed.bin" --manifest "$WORK/app.suit" -o json |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
  deployment=$("$KILN" deployment create --group Thermo/Production --image "$image" --rollout 1%,10%,100% \
    --step-after 1h -o json | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
  read -r wall _ < <(timed "$KILN" deployment show "$deployment")
  row "$backend" "\`deployment show\` of a $N-device deployment" "${wall} s"
  read -r wall _ < <(timed "$KILN" deployment list)
  row "$backend" "\`deployment list\`" "${wall} s"
  if [ "$backend" = postgresql ]; then
    first_port=$AGENT_PORT
    cp -a "$SVC" "$SVC-2"
    start_service "$SVC-2"
    echo "== $backend: check-ins, resumed, two instances" >&2
    result=$(load resumed "$first_port,$AGENT_PORT" --threads "$THREADS" --seconds "$SECONDS_EACH")
    row "$backend" "check-ins/s, resumed, two instances ($THREADS clients split)" \
      "$(field "$result" per_second)/s (p99 $(field "$result" p99_ms) ms)"
  fi
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  PIDS=()
done

echo "| backend | measure | result |"
echo "|---|---|---|"
cat "$ROWS"
echo "($(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at the end)"
