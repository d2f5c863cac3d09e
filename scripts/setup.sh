#!/usr/bin/env bash
# Installs the Debian 12 packages kiln needs to build, test and benchmark. Idempotent; run as root.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libcli11-dev libfmt-dev libssl-dev openssl libcurl4-openssl-dev libusb-1.0-0-dev
  doctest-dev nlohmann-json3-dev libcbor-dev libsqlite3-dev sqlite3 libcpp-httplib-dev libpq-dev postgresql-15 haproxy
  libp11-kit-dev libtomlplusplus-dev libyaml-cpp-dev liblzma-dev xz-utils libhowardhinnant-date-dev tzdata
  umockdev libumockdev-dev softhsm2 opensc
  clang-14 libclang-rt-14-dev clang-tidy-14
  bash-completion zsh fish hyperfine time
  dpkg-dev lintian file curl systemd
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages already installed" >&2
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "setup: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
