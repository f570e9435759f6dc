#!/usr/bin/env bash
# Installs what is missing, builds the tests, the examples and the header
# self-containment check, and runs the whole CTest suite. Non-zero exit on any failure.
# The benchmarks are not built here (scripts/bench.sh builds them optimised; .ci/run's
# clang stage builds them to check they compile).
#   bash scripts/test.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/deps.sh

# Ninja for a fresh build/ if installed; an existing build/ keeps its generator.
generator=()
if [ ! -f build/CMakeCache.txt ] && command -v ninja >/dev/null 2>&1; then
    generator=(-G Ninja)
fi

# Optimised with debug info: the configuration users ship, and the one where the
# optimiser's extra warnings fire. The Debug build with assertions is .ci/run's clang
# stage; the sanitizer builds keep assertions too. Line tables only (-g1): full -g made
# each test's compile a third slower (33 s against 25 s for tests/testing/toolkit_test.cpp)
# for variable locations that a failing test's backtrace does not need.
cmake -S . -B build "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" -DHERALD_BUILD_BENCHMARKS=OFF
cmake --build build -j "$(nproc)"
ctest --test-dir build --output-on-failure -j 2
