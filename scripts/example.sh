#!/usr/bin/env bash
# Quick start: installs what is missing, builds examples/quickstart.cpp and runs it.
#   bash scripts/example.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/deps.sh

# A fresh build/ gets Ninja (if installed) and Release. An existing one keeps its
# generator (CMake cannot switch) and its build type, so alternating with test.sh does
# not rebuild everything.
settings=()
if [ ! -f build/CMakeCache.txt ]; then
    settings=(-DCMAKE_BUILD_TYPE=Release)
    if command -v ninja >/dev/null 2>&1; then
        settings+=(-G Ninja)
    fi
fi

cmake -S . -B build "${settings[@]}"
cmake --build build --target example_quickstart -j "$(nproc)"
./build/examples/example_quickstart
