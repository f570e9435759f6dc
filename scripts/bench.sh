#!/usr/bin/env bash
# Builds herald's benchmarks (Release, in build-bench/), runs every bench_* binary with
# JSON output and prints herald next to the baselines measured in the same binaries,
# with the ratio and PASS/MISS against the targets in docs/performance.md.
#   bash scripts/bench.sh                  full run: 5 repetitions, medians (a few minutes)
#   bash scripts/bench.sh --quick          smoke test: small counts, short runs, 3 repetitions
#   bash scripts/bench.sh --update-docs    full run, then regenerate the results section
#                                          of docs/performance.md and docs/performance.png
#   bash scripts/bench.sh --runs 3 ...     the whole suite 3 times; the table gives the
#                                          median of each ratio and its range over the runs
# Installs what is missing (Debian) first. HERALD_BENCH_TOPIC_CHUNKS=<n> sets how many
# chunks of 50 topic types bench_many_topics links (default 10: up to 500 topics).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

usage() { sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

quick=0
update_docs=0
runs=1
expect_runs=0
for arg in "$@"; do
    if [ "$expect_runs" -eq 1 ]; then
        runs=$arg
        expect_runs=0
        if ! [[ "$runs" =~ ^[1-9][0-9]*$ ]]; then
            echo "bench.sh: --runs wants a positive number, not '$runs'" >&2
            exit 2
        fi
        continue
    fi
    case "$arg" in
    --quick) quick=1 ;;
    --update-docs) update_docs=1 ;;
    --runs) expect_runs=1 ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        echo "bench.sh: unknown argument '$arg'" >&2
        usage >&2
        exit 2
        ;;
    esac
done

bash scripts/deps.sh python3 gnuplot-nox

python=python3
if [ -x /usr/bin/python3 ]; then
    python=/usr/bin/python3
fi

build=build-bench
generator=()
if [ ! -f "$build/CMakeCache.txt" ] && command -v ninja >/dev/null 2>&1; then
    generator=(-G Ninja)
fi
cmake -S . -B "$build" "${generator[@]}" \
    -DCMAKE_BUILD_TYPE=Release \
    -DHERALD_BUILD_TESTS=OFF \
    -DHERALD_BUILD_EXAMPLES=OFF \
    -DHERALD_BUILD_BENCHMARKS=ON \
    -DHERALD_INSTALL=OFF \
    -DHERALD_WERROR=OFF \
    -DHERALD_BENCH_TOPIC_CHUNKS="${HERALD_BENCH_TOPIC_CHUNKS:-10}" >/dev/null
echo "bench.sh: building $build/ (Release)"
cmake --build "$build" -j "$(nproc)"

if [ "$quick" -eq 1 ]; then
    export HERALD_BENCH_QUICK=1
    repetitions=3
    min_time=0.01
    mode=quick
else
    unset HERALD_BENCH_QUICK
    repetitions=5
    min_time=0.3
    mode=full
fi

if [ "$expect_runs" -eq 1 ]; then
    echo "bench.sh: --runs wants a number" >&2
    exit 2
fi

results_root="$build/results"
rm -rf "$results_root"
mkdir -p "$results_root"

shopt -s nullglob
binaries=("$build"/benchmarks/bench_*)
if [ "${#binaries[@]}" -eq 0 ]; then
    echo "bench.sh: no benchmark binaries in $build/benchmarks" >&2
    exit 1
fi
result_dirs=()
for run in $(seq 1 "$runs"); do
    results="$results_root"
    if [ "$runs" -gt 1 ]; then
        results="$results_root/run-$run"
        mkdir -p "$results"
        echo "bench.sh: run $run of $runs (load: $(cut -d' ' -f1-3 /proc/loadavg))"
    fi
    result_dirs+=(--results "$results")
    for binary in "${binaries[@]}"; do
        [ -x "$binary" ] && [ -f "$binary" ] || continue
        name=$(basename "$binary")
        start=$SECONDS
        printf 'bench.sh: running %-24s' "$name"
        # Benchmarks with a fixed iteration count ignore min_time; the rest run at least
        # that long per repetition. Repetitions of a binary's benchmarks run in random
        # order, so a burst of background load hits herald and its baselines alike. The
        # console output goes to <name>.txt.
        "$binary" \
            --benchmark_repetitions="$repetitions" \
            --benchmark_min_time="$min_time" \
            --benchmark_enable_random_interleaving=true \
            --benchmark_display_aggregates_only=true \
            --benchmark_out="$results/$name.json" \
            --benchmark_out_format=json \
            >"$results/$name.txt" 2>&1 || {
            echo
            echo "bench.sh: $name failed; its output:" >&2
            cat "$results/$name.txt" >&2
            exit 1
        }
        echo " $((SECONDS - start)) s"
    done
done

report=("$python" scripts/bench_report.py "${result_dirs[@]}" --build "$build" --mode "$mode")
if [ "$update_docs" -eq 1 ]; then
    report+=(--update-docs docs/performance.md --plot docs/performance.png)
fi
"${report[@]}" | tee "$results_root/report.txt"
