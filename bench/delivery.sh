#!/usr/bin/env bash
# Benchmark: the cost per device of confidential delivery (docs/encrypted-delivery.md). A 1 MiB release encrypted
# (AES-128-CTR) for an ECIES-P256 delivery key; device keys of each type MCUboot decrypts with. Prints, per
# device key type, the content-key wraps per second (open with the delivery key + wrap to the device key) and
# the device images per second (a wrap plus the SHA-256 of the device's whole image, what kiln-service does once
# per device and release). Target: >= 1000 ECIES-P256 wraps/s on one core.
# Usage: bench/delivery.sh [BUILD_DIR]   (SIZE_KIB=1024 BENCH_SECONDS=2 override the defaults)
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
size_kib=${SIZE_KIB:-1024}
seconds=${BENCH_SECONDS:-2}
work=$(mktemp -d /tmp/kiln-delivery-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
cmake --build "$build" --target kiln_bench_delivery kiln >/dev/null
kiln="$build/bin/kiln"

head -c "${size_kib}K" /dev/urandom >"$work/app.bin"
"$kiln" -q key generate --type ecdsa-p256 -o "$work/release.pem" >/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/delivery.pem" 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/dev-p256.pem" 2>/dev/null
openssl genpkey -algorithm X25519 -out "$work/dev-x25519.pem" 2>/dev/null
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/dev-rsa.pem" 2>/dev/null
for k in p256 x25519 rsa; do openssl pkey -in "$work/dev-$k.pem" -pubout -out "$work/dev-$k.pub.pem"; done
"$kiln" -q image sign -k "$work/release.pem" -E "$work/delivery.pem" --version 1.0.0 --header-size 0x200 \
  --pad-header --slot-size 0x1000000 "$work/app.bin" "$work/release.bin" >/dev/null

echo "== confidential delivery per device: ${size_kib} KiB release, ECIES-P256 delivery key, one core"
"$build/bin/kiln_bench_delivery" "$work/release.bin" "$work/delivery.pem" "$work/dev-p256.pub.pem" \
  "$work/dev-x25519.pub.pem" "$work/dev-rsa.pub.pem" --seconds "$seconds"
