#!/usr/bin/env bash
# Fleet benchmark: import N devices (default 1,000,000) into a local kiln-service, list them all with
# `kiln device list -o jsonl` (wall time, client peak RSS), `device count --by version`, and agent
# check-ins per second over mutual TLS with keep-alive (curl, one connection per client process).
set -euo pipefail

BUILD=${BUILD:-$(cd "$(dirname "$0")/.." && pwd)/build}
N=${N:-1000000}
CHECKINS=${CHECKINS:-20000}
CLIENTS=${CLIENTS:-4}
KILN="$BUILD/bin/kiln"
SERVICE="$BUILD/bin/kiln-service"
WORK=$(mktemp -d)
SERVICE_PID=
cleanup() {
  [ -n "$SERVICE_PID" ] && kill "$SERVICE_PID" 2>/dev/null && wait "$SERVICE_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

"$SERVICE" init --dir "$WORK/svc" >/dev/null
"$SERVICE" run --dir "$WORK/svc" --listen 127.0.0.1:0 --agent-listen 127.0.0.1:0 2>"$WORK/svc.log" &
SERVICE_PID=$!
for _ in $(seq 100); do grep -q '^listening' "$WORK/svc.log" 2>/dev/null && break; sleep 0.1; done
PORT=$(grep '^listening' "$WORK/svc.log" | grep -o '[0-9]*$')
AGENT_PORT=$(grep '^agents' "$WORK/svc.log" | grep -o '127.0.0.1:[0-9]*' | cut -d: -f2)
export KILN_SERVICE="https://127.0.0.1:$PORT" KILN_CA_FILE="$WORK/svc/ca.pem" XDG_CONFIG_HOME="$WORK/xdg"
KILN_TOKEN=$(cat "$WORK/svc/admin.token")
export KILN_TOKEN

"$KILN" -q product create Thermo >/dev/null

# One device key for the whole fleet (the benchmark measures the service, not key generation);
# dev-0000000 also gets a certificate from a registered factory CA for the check-ins.
openssl ecparam -name prime256v1 -genkey -noout -out "$WORK/device.key" 2>/dev/null
openssl pkey -in "$WORK/device.key" -pubout -out "$WORK/device.pub"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$WORK/ca.key" \
  -out "$WORK/ca.pem" -subj "/CN=Bench Factory CA" -days 2 2>/dev/null
openssl req -new -key "$WORK/device.key" -subj "/CN=dev-0000000" -out "$WORK/device.csr"
openssl x509 -req -in "$WORK/device.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial \
  -days 2 -out "$WORK/device.pem" 2>/dev/null
"$KILN" -q device ca add "$WORK/ca.pem" --key "$WORK/ca.key" >/dev/null

python3 - "$N" "$WORK/device.pub" >"$WORK/bundle.jsonl" <<'PY'
import json, sys
n, pem = int(sys.argv[1]), open(sys.argv[2]).read()
out = sys.stdout
for i in range(n):
    out.write(json.dumps({"uid": f"dev-{i:07d}", "product": "Thermo", "state": "secured",
                          "version": f"1.{i % 10}.0", "public_key": pem}) + "\n")
PY
# Sign it as a station would (kiln factory ledger export): ECDSA with the registered CA's key over the
# SHA-256 of every unit byte, in a trailer line (docs/ledger-bundle.md).
openssl dgst -sha256 -binary "$WORK/bundle.jsonl" >"$WORK/bundle.sha256"
openssl pkeyutl -sign -inkey "$WORK/ca.key" -in "$WORK/bundle.sha256" -out "$WORK/bundle.sig"
python3 - "$N" "$WORK/ca.pem" "$WORK/bundle.sha256" "$WORK/bundle.sig" >>"$WORK/bundle.jsonl" <<'PY'
import json, subprocess, sys
n, ca, digest, sig = int(sys.argv[1]), sys.argv[2], open(sys.argv[3], "rb").read(), open(sys.argv[4], "rb").read()
key = subprocess.run(["openssl", "x509", "-in", ca, "-noout", "-pubkey"], capture_output=True, text=True, check=True).stdout
print(json.dumps({"bundle_signature": sig.hex(), "algorithm": "ecdsa-p256-sha256", "bundle_sha256": digest.hex(),
                  "units": n, "station_public_key": key}))
PY

t() { /usr/bin/time -f "%e %M" "$@" 2>&1 >/dev/null | tail -1; }
echo "devices: $N (bundle $(du -h "$WORK/bundle.jsonl" | cut -f1))"
read -r wall rss < <(t "$KILN" -q device import "$WORK/bundle.jsonl")
echo "import:                  ${wall} s"
read -r wall rss < <(t "$KILN" -o jsonl device list)
lines=$("$KILN" -o jsonl device list --version 1.3.0 | wc -l)
echo "device list -o jsonl:    ${wall} s, client peak RSS $((rss / 1024)) MiB   (filtered --version 1.3.0: $lines rows)"
read -r wall rss < <(t "$KILN" device count --by version)
echo "device count --by version: ${wall} s"

# Check-ins: each curl process sends CHECKINS/CLIENTS requests over one kept-alive mutual-TLS connection.
per=$((CHECKINS / CLIENTS))
for c in $(seq "$CLIENTS"); do
  for _ in $(seq "$per"); do echo "url = \"https://127.0.0.1:$AGENT_PORT/v1/agent/check-in\""; done >"$WORK/urls.$c"
done
start=$(date +%s.%N)
for c in $(seq "$CLIENTS"); do
  curl -s --cacert "$WORK/svc/ca.pem" --cert "$WORK/device.pem" --key "$WORK/device.key" \
    -H 'Content-Type: application/json' -d '{"version":"1.0.0"}' -K "$WORK/urls.$c" >/dev/null &
done
wait $(jobs -p | grep -v "^$SERVICE_PID$") 2>/dev/null || true
end=$(date +%s.%N)
echo "agent check-ins:         $(python3 -c "print(round($CHECKINS / ($end - $start)))") /s ($CHECKINS over $CLIENTS keep-alive mTLS connections)"
