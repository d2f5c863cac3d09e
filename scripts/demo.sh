#!/usr/bin/env bash
# The main job, end to end on this machine: installs dependencies, builds, starts a local
# kiln-service and 8 emulated boards running the update agent, and walks the story with a line of
# explanation per step: keys -> sign -> manifest -> factory provisioning -> import and claim ->
# upload -> staged deployment -> the boards update themselves over the air -> a fleet query
# showing the new version. Everything runs in a temporary directory on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
if [ -z "${KILN_DEMO_SKIP_BUILD:-}" ]; then
  bash scripts/setup.sh
  bash scripts/build.sh >/dev/null
fi
bin="${KILN_DEMO_BIN:-$root/build/bin}"  # the tests point it at their own build
export PATH="$bin:$PATH"
source "$root/scripts/lib/local-fleet.sh"
local_fleet_workspace kiln-demo
boards=8

step() { printf '\n== %s\n' "$*" >&2; }
run() { printf '$ %s\n' "$*" >&2; "$@"; }

step "1. Start a local security service (TLS on 127.0.0.1, SQLite; a second mutual-TLS listener for device agents) and $boards emulated boards"
printf '$ %s\n' "kiln-service init --dir svc" "kiln-service run --dir svc --listen 127.0.0.1:0 --agent-listen 127.0.0.1:0 &" >&2
local_fleet_service
echo "service at $service, device agents at $agents" >&2
# Each board runs an update agent: once provisioned it checks in every second (jittered).
printf '$ %s\n' "kiln-board-emu --dir boards --count $boards --agent --check-in-interval 1 &" >&2
local_fleet_boards $boards
run kiln board list

step "2. Keys: MCUboot image signing, SUIT manifest signing, and a station CA (files here; a pkcs11: URI works the same)"
run kiln key generate --type ecdsa-p256 -o boot.pem >/dev/null
run kiln key generate --type ecdsa-p256 -o manifest.pem >/dev/null
run kiln key generate --type ecdsa-p256 -o station-ca.pem >/dev/null
run kiln cert create --key station-ca.pem --subject "/CN=Demo Station CA/O=Demo" --ca --days 365 -o station-ca.crt
run kiln key show boot.pem

step "3. Sign firmware 1.0.0 (the factory image) and 1.1.0 (the update) as MCUboot images, each described by a signed SUIT manifest"
head -c 200000 /dev/urandom > app-1.0.0.bin
head -c 200000 /dev/urandom > app-1.1.0.bin
for v in 1.0.0:1 1.1.0:2; do
  version=${v%:*} sequence=${v#*:}
  run kiln image sign app-$version.bin app-$version.signed.bin -k boot.pem --version $version --header-size 0x200 \
    --slot-size 0x80000 --pad-header --public-key-format full >/dev/null
  run kiln manifest create --component app-$version.signed.bin --uri "$agents/v1/agent/images" \
    --vendor-domain example.com --class-name demo-board --sequence $sequence --key manifest.pem -o app-$version.suit >/dev/null
done
run kiln image verify app-1.1.0.signed.bin -k boot.pem
run kiln manifest verify app-1.1.0.suit --key manifest.pem --image app-1.1.0.signed.bin

step "4. Factory: a station profile, then provision all $boards boards at once (attestation, firmware 1.0.0, on-board keys, certificates, trust anchors, ledger)"
kiln-board-emu --dir boards --print-vendor-root > vendor-root.pem
run kiln factory init --ca-key station-ca.pem --ca-cert station-ca.crt --vendor-root vendor-root.pem \
  --boot-key boot.pem --image app-1.0.0.signed.bin --manifest app-1.0.0.suit --manifest-key manifest.pem \
  --product Thermo --service "$agents" --trust-anchor svc/ca.pem --quota 100 -o station.toml >/dev/null
run kiln factory run --all --jobs $boards --profile station.toml -o table
run kiln factory ledger verify --profile station.toml
run kiln factory ledger export --profile station.toml -o units.jsonl >/dev/null

step "5. Service: log in, create the product, trust the station CA, import the ledger bundle, claim every board (each signs a challenge)"
run kiln login --service "$service" --token-file svc/admin.token --ca-file svc/ca.pem >/dev/null
run kiln product create Thermo --boot-key boot.pem --manifest-key manifest.pem >/dev/null   # what the boards trust: deployments are checked against it
run kiln device ca add station-ca.crt --key station-ca.pem >/dev/null    # the tenant trusts bundles and device certificates from this station (the CA key signs the service's challenge)
run kiln device import units.jsonl
run kiln device claim --from-file units.jsonl >/dev/null   # each board, found by its UID, signs its challenge
uids=$(kiln board list -o csv | tail -n +2 | cut -d, -f2)
run kiln device assign $uids --group "Thermo/Field Test" >/dev/null
run kiln device list --group "Thermo/Field Test"

step "6. Upload firmware 1.1.0 with its manifest (content-addressed: an image the service has costs one request)"
image_id=$(kiln image upload app-1.1.0.signed.bin --manifest app-1.1.0.suit -o json | sed -n 's/.*"id": *"\([0-9a-f]*\)".*/\1/p' | head -1)
run kiln image list

step "7. A staged deployment: 25% of the group first, everyone 3 s later; it halts by itself if more than 20% fail"
deployment=$(kiln deployment create --group "Thermo/Field Test" --image "$image_id" --rollout 25%,100% --step-after 3s \
  --halt-on-failure 20% -o json | sed -n 's/.*"id": *"\(dep_[0-9a-zA-Z_]*\)".*/\1/p' | head -1)
echo "deployment $deployment" >&2

step "8. The boards check in over mutual TLS, verify the manifest and image signatures, install, test-boot, confirm and report"
run kiln deployment watch "$deployment" --interval 1 -o table
run kiln deployment show "$deployment"

step "9. Fleet queries: every board now runs 1.1.0, as the service sees it and as a board says itself"
run kiln device count --by version
# The whole list goes to a file first: `| head -3` under pipefail fails the script whenever head
# exits before kiln has written everything (SIGPIPE, exit 141).
kiln device list -o jsonl --claimed true >claimed.jsonl
printf '$ %s\n' "kiln device list -o jsonl --claimed true | head -3" >&2
head -3 claimed.jsonl
first=$(echo "$uids" | head -1)
run kiln board images -b "$first"

step "Done: everything above ran in $work (removed on exit)."
