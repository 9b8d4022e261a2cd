#!/usr/bin/env bash
# Installs the build and test dependencies from Debian 12 packages.
# Idempotent and non-interactive; skips apt entirely when everything is there.
set -euo pipefail
PACKAGES=(
  build-essential cmake ninja-build pkg-config python3
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libopenblas-dev libabsl-dev libgtest-dev libgmock-dev nlohmann-json3-dev libcpp-httplib-dev prometheus libcurl4-openssl-dev
  python3-grpcio python3-protobuf
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
