#!/usr/bin/env bash
# The main job, end to end: installs dependencies, builds, then walks through what kiln does with a
# line of explanation per step. Everything happens in a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bash scripts/setup.sh
bash scripts/build.sh >/dev/null
kiln="$root/build/bin/kiln"
work=$(mktemp -d /tmp/kiln-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"

step() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }
run() { printf '$ kiln %s\n' "$*" >&2; "$kiln" "$@"; }

step "1. Generate a signing key (PKCS#8 PEM, mode 0600)"
run key generate --type ecdsa-p256 -o signing.pem
ls -l signing.pem >&2

step "2. Build a firmware payload and sign it as an MCUboot image (imgtool-compatible options)"
head -c 200000 /dev/urandom > app.bin
run image sign app.bin app.signed.bin --key signing.pem --version 1.2.0+7 --header-size 0x200 \
  --slot-size 0x80000 --pad-header --security-counter auto

step "3. Verify the image with the key (exit code 3 if anything is wrong)"
run image verify app.signed.bin --key signing.pem

step "4. Inspect the image: header, TLVs, key hash"
run image info app.signed.bin --key signing.pem

step "5. Tamper with one byte and verify again: kiln refuses with the reason"
cp app.signed.bin tampered.bin
printf '\x00' | dd of=tampered.bin bs=1 seek=1000 conv=notrunc status=none
if run image verify tampered.bin --key signing.pem; then echo "unexpected: tampered image verified" >&2; exit 1; fi
echo "(exit code $? as expected)" >&2

if "$kiln" manifest --help >/dev/null 2>&1; then
  step "6. Describe the update in a signed SUIT manifest"
  run manifest create --component app.signed.bin --uri https://updates.example/app.signed.bin \
    --vendor-domain example.com --class-name demo-board --sequence 1 --key signing.pem -o app.suit
  run manifest verify app.suit --key signing.pem --image app.signed.bin
  run manifest show app.suit
fi

step "Done. Everything above ran in $work (removed on exit)."
