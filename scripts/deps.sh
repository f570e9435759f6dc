#!/usr/bin/env bash
# Installs the Debian packages herald's build needs, and only those that are missing.
# Extra package names may be given as arguments (CI passes `clang`). Silent when
# everything is already installed.
#   bash scripts/deps.sh [extra-package...]
set -euo pipefail

packages=(g++ cmake ninja-build pkg-config libboost-dev libconcurrentqueue-dev doctest-dev libbenchmark-dev
    python3 libnats-dev nlohmann-json3-dev nats-server prometheus-cpp-dev "$@")

missing=()
for package in "${packages[@]}"; do
    # `dpkg -s` also succeeds for a removed package whose config files remain, so
    # look at its status, not just the exit code.
    if ! dpkg -s "$package" 2>/dev/null | grep -q '^Status: install ok installed$'; then
        missing+=("$package")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "deps.sh: missing ${missing[*]}; run as root or install sudo" >&2
    exit 1
fi

echo "deps.sh: installing ${missing[*]}"
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${missing[@]}"
