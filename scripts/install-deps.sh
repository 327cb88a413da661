#!/usr/bin/env bash
# Installs the Debian 12 packages ompq needs, only those missing. Idempotent and quiet
# when everything is present. Needs root (or sudo) only when something is missing.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config git ca-certificates
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev
  libtorch-dev libonnx-dev libopenblas-dev coinor-libclp-dev prometheus-cpp-dev
  libsqlite3-dev libpqxx-dev libssl-dev libzip-dev nlohmann-json3-dev libcli11-dev
  libgtest-dev libgmock-dev
  python3-torch python3-torchvision python3-numpy dataset-fashion-mnist
  postgresql openssl procps coreutils
)
# Extra packages a caller may ask for (e.g. the test suite's browser and fuzzer toolchain).
PACKAGES+=("$@")

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "ompq: installing missing Debian packages: ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
