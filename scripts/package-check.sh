#!/usr/bin/env bash
# Builds the Debian packages (from the README's build/ by default), lints them, unpacks them into a
# temporary root and runs what they hold: --version of each program, a key generate + image sign +
# image verify round trip, kiln-service init + run + GET /v1/version on loopback + SIGTERM, and
# systemd-analyze verify on the packaged unit. Exit 0 when everything holds; CI runs it after the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
# By default the packages come from the README's build (build/, made by scripts/build.sh): CI then
# compiles nothing twice. KILN_PACKAGE_BUILD=build-package configures a separate tree with Debian's
# hardening flags (dpkg-buildflags) and line tables only, as a distribution build would.
build=${KILN_PACKAGE_BUILD:-build}
start=$SECONDS
step() { printf '== %s (%ss)\n' "$*" "$((SECONDS - start))" >&2; }
fail() { printf 'package-check: FAILED: %s\n' "$*" >&2; exit 1; }

if [ "$build" = build ]; then
  step "build (scripts/build.sh: nothing to do when already built)"
  bash scripts/build.sh >/dev/null
else
  step "configure $build"
  launcher=()
  command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
  # Warnings are errors here too (_FORTIFY_SOURCE adds warn_unused_result checks the plain build lacks).
  cmake -S . -B "$build" -G Ninja "${launcher[@]}" -DCMAKE_BUILD_TYPE=None -DKILN_TESTS=OFF -DKILN_WERROR=ON \
    -DCMAKE_CXX_FLAGS="-O2 -g1 -DNDEBUG -fstack-protector-strong -fstack-clash-protection -Wformat -Werror=format-security -D_FORTIFY_SOURCE=2" \
    -DCMAKE_C_FLAGS="-O2 -g1 -DNDEBUG -fstack-protector-strong -D_FORTIFY_SOURCE=2" \
    -DCMAKE_EXE_LINKER_FLAGS="-Wl,-z,relro -Wl,-z,now" >/dev/null
fi
step "build and package"
rm -f "$build"/*.deb "$build"/*.ddeb
cmake --build "$build" -j2 --target package > "$build/package.log" 2>&1 || { tail -30 "$build/package.log" >&2; fail "build or package (log: $build/package.log)"; }
shopt -s nullglob
debs=("$build"/*.deb)
ddebs=("$build"/*.ddeb)
[ "${#debs[@]}" -eq 3 ] || fail "expected 3 .deb files in $build, found: ${debs[*]:-none}"
[ "${#ddebs[@]}" -eq 3 ] || fail "expected 3 -dbgsym .ddeb files in $build, found: ${ddebs[*]:-none}"
for deb in "${debs[@]}"; do printf '%s: %s\n' "$(basename "$deb")" "$(dpkg-deb -f "$deb" Depends)" >&2; done

step "lintian"
# Errors fail the check; warnings are shown. --tag-display-limit 0: every instance, not the first few.
lintian --fail-on error --tag-display-limit 0 "${debs[@]}" || fail "lintian reports errors"

root=$(mktemp -d)
service_pid=
cleanup() {
  [ -n "$service_pid" ] && kill "$service_pid" 2>/dev/null || true
  rm -rf "$root"
}
trap cleanup EXIT
for deb in "${debs[@]}"; do dpkg-deb -x "$deb" "$root"; done
bin=$root/usr/bin

step "extracted binaries"
want=$(dpkg-deb -f "${debs[0]}" Version)
want=${want%-*}  # without the Debian revision
for program in kiln kiln-service kiln-board-emu; do
  got=$("$bin/$program" --version)
  [ "$got" = "$want" ] || fail "$program --version says '$got', the package is $want"
  file -b "$bin/$program" | grep -q 'not stripped' && fail "$program is not stripped"
done
for f in usr/share/bash-completion/completions/kiln usr/share/zsh/vendor-completions/_kiln \
         usr/share/fish/vendor_completions.d/kiln.fish usr/share/man/man1/kiln.1.gz \
         usr/share/man/man8/kiln-service.8.gz usr/share/man/man1/kiln-board-emu.1.gz \
         lib/systemd/system/kiln-service.service etc/kiln-service/config.toml \
         usr/share/doc/kiln/copyright usr/share/doc/kiln-service/changelog.Debian.gz; do
  [ -f "$root/$f" ] || fail "no $f in the packages"
done

work=$root/work
mkdir -p "$work"
head -c 100000 /dev/urandom > "$work/app.bin"
"$bin/kiln" -q key generate --type ecdsa-p256 -o "$work/signing.pem"
"$bin/kiln" -q image sign "$work/app.bin" "$work/app.signed.bin" -k "$work/signing.pem" --version 1.2.3 \
  --header-size 0x200 --slot-size 0x40000 --pad-header >/dev/null
"$bin/kiln" image verify "$work/app.signed.bin" -k "$work/signing.pem" >/dev/null 2>&1 || fail "image verify"
"$bin/kiln" -q key generate --type ecdsa-p256 -o "$work/other.pem"
if "$bin/kiln" image verify "$work/app.signed.bin" -k "$work/other.pem" >/dev/null 2>&1; then
  fail "image verify accepted another key"
fi

step "kiln-service init and run from the packaged config"
# The packaged config, pointed at the temporary root.
sed "s|/var/lib/kiln-service|$root/var/lib/kiln-service|; s|127.0.0.1:8443|127.0.0.1:0|" \
  "$root/etc/kiln-service/config.toml" > "$work/config.toml"
"$bin/kiln-service" init --config "$work/config.toml" --if-missing
[ -f "$root/var/lib/kiln-service/admin.token" ] || fail "init made no admin.token"
token=$(cat "$root/var/lib/kiln-service/admin.token")
"$bin/kiln-service" init --config "$work/config.toml" --if-missing || fail "init --if-missing on an initialised directory"
[ "$token" = "$(cat "$root/var/lib/kiln-service/admin.token")" ] || fail "init --if-missing replaced the admin token"
"$bin/kiln-service" run --config "$work/config.toml" 2> "$work/service.log" &
service_pid=$!
port=
for _ in $(seq 100); do
  port=$(sed -n 's|^listening on https://127.0.0.1:\([0-9]*\)$|\1|p' "$work/service.log")
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || fail "kiln-service did not start: $(cat "$work/service.log")"
answer=$(curl -sS --cacert "$root/var/lib/kiln-service/ca.pem" "https://127.0.0.1:$port/v1/version")
[ "$answer" = "{\"service\":\"kiln-service\",\"version\":\"$want\"}" ] || fail "GET /v1/version answered: $answer"
kill -TERM "$service_pid"
wait "$service_pid" || fail "kiln-service exited $? on SIGTERM: $(cat "$work/service.log")"
service_pid=

step "systemd-analyze verify"
# The unit as installed: its programs resolved inside the temporary root.
mkdir -p "$work/unit"
sed "s|/usr/bin/kiln-service|$bin/kiln-service|g" "$root/lib/systemd/system/kiln-service.service" \
  > "$work/unit/kiln-service.service"
MANPATH=$root/usr/share/man systemd-analyze verify "$work/unit/kiln-service.service" || fail "systemd-analyze verify"

step "package check passed"
