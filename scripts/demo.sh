#!/usr/bin/env bash
# The main job, end to end on this machine: installs dependencies, builds, starts a local
# kiln-service and 8 emulated boards, and walks the story with a line of explanation per step:
# keys -> sign -> manifest -> factory provisioning -> import and claim -> upload -> deployment ->
# a board takes the update -> fleet queries. Everything runs in a temporary directory on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
if [ -z "${KILN_DEMO_SKIP_BUILD:-}" ]; then
  bash scripts/setup.sh
  bash scripts/build.sh >/dev/null
fi
bin="$root/build/bin"
export PATH="$bin:$PATH"
work=$(mktemp -d /tmp/kiln-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
export XDG_CONFIG_HOME="$work/config" XDG_CACHE_HOME="$work/cache" NO_COLOR=1

step() { printf '\n== %s\n' "$*" >&2; }
run() { printf '$ %s\n' "$*" >&2; "$@"; }

step "1. Start a local security service (TLS on 127.0.0.1, SQLite) and 8 emulated boards"
run kiln-service init --dir svc >/dev/null
kiln-service run --dir svc --listen 127.0.0.1:0 2> svc.log &
pids+=($!)
for _ in $(seq 100); do grep -q "listening on https://" svc.log && break; sleep 0.1; done
service=$(grep -o "https://127.0.0.1:[0-9]*" svc.log | head -1)
echo "service at $service" >&2
kiln-board-emu --dir boards --count 8 > emu.log 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ "$(ls boards/*.sock 2>/dev/null | wc -l)" = 8 ] && break; sleep 0.1; done
export KILN_EMU_DIR="$work/boards"
run kiln board list

step "2. Keys: an image signing key and a station CA (a file here; a pkcs11: URI works the same)"
run kiln key generate --type ecdsa-p256 -o signing.pem >/dev/null
run kiln key generate --type ecdsa-p256 -o station-ca.pem >/dev/null
openssl req -x509 -new -key station-ca.pem -subj "/CN=Demo Station CA/O=Demo" -days 365 -out station-ca.crt \
  -addext basicConstraints=critical,CA:true -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
run kiln key show signing.pem

step "3. Sign firmware 1.1.0 as an MCUboot image and describe it in a signed SUIT manifest"
head -c 300000 /dev/urandom > app.bin
run kiln image sign app.bin app.signed.bin -k signing.pem --version 1.1.0 --header-size 0x200 \
  --slot-size 0x80000 --pad-header --security-counter auto >/dev/null
run kiln image verify app.signed.bin -k signing.pem
run kiln manifest create --component app.signed.bin --uri "$service/v1/images/app" --vendor-domain example.com \
  --class-name demo-board --sequence 2 --key signing.pem -o app.suit >/dev/null
run kiln manifest verify app.suit --key signing.pem --image app.signed.bin

step "4. Factory: a station profile, then provision all 8 boards at once (attestation, on-board keys, certificates, ledger)"
kiln-board-emu --dir boards --print-vendor-root > vendor-root.pem
run kiln factory init --ca-key station-ca.pem --ca-cert station-ca.crt --vendor-root vendor-root.pem \
  --boot-key signing.pem --product Thermo --service "$service" --quota 100 -o station.toml >/dev/null
run kiln factory run --all --jobs 8 --profile station.toml -o table
run kiln factory ledger verify --profile station.toml
run kiln factory ledger export --profile station.toml -o units.jsonl >/dev/null

step "5. Service: log in, create the product, import the ledger bundle, claim every board (the board signs a challenge)"
run kiln login --service "$service" --token-file svc/admin.token --ca-file svc/ca.pem >/dev/null
run kiln product create Thermo >/dev/null
run kiln device ca add station-ca.crt >/dev/null    # the tenant trusts bundles signed by this station
run kiln device import units.jsonl
run kiln device claim --from-file units.jsonl >/dev/null   # each board, found by its UID, signs its challenge
run kiln device assign $(kiln board list -o csv | tail -n +2 | cut -d, -f2) --group "Thermo/Field Test" >/dev/null
run kiln device list --group "Thermo/Field Test"

step "6. Upload the image and create a deployment to Thermo/Field Test"
image_id=$(kiln image upload app.signed.bin --manifest app.suit -o json | sed -n 's/.*"id": *"\([0-9a-f]*\)".*/\1/p' | head -1)
run kiln image list
run kiln deployment create --group "Thermo/Field Test" --image "$image_id" --rollout 100%

step "7. A board takes the update over SMP: upload to the secondary slot, test boot, confirm on the next run"
first=$(kiln board list -o csv | tail -n +2 | head -1 | cut -d, -f2)
run kiln board upload app.signed.bin -b "$first" --reset
run kiln board images -b "$first"

step "8. Fleet queries"
run kiln device count --by state
run kiln device list -o jsonl --claimed true | head -3

step "Done: everything above ran in $work (removed on exit)."
