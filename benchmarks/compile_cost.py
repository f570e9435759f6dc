#!/usr/bin/env python3
"""What herald costs the compiler: time and peak memory for translation units that
declare N topics, against an empty TU with the same standard headers.

Each generated TU declares N distinct 16-byte event types, one topic per type, and per
topic subscribes one async handler and publishes once: what a module of a monolith
does. Every TU is compiled with `<compiler> -O2 -std=c++20 -c` under /usr/bin/time,
`--repeat` times (default 5, the sizes interleaved); the table gives the median and the
range, and checks the targets of docs/performance.md ("Compile cost"):

  * 50 topics cost at most 3x the time of 1 topic, and at most 600 MB;
  * including <herald/herald.hpp> alone costs at most 2x the empty TU.

Not run by CI (it takes minutes). From the repository root:
  python3 benchmarks/compile_cost.py [--compiler g++] [--topics 0,1,50,200] [--repeat 5]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STD_HEADERS = "#include <functional>\n#include <memory>\n#include <vector>\n"


def source(topics):
    """The TU for `topics` topics; None means the empty TU (standard headers only)."""
    if topics is None:
        return STD_HEADERS + "int herald_compile_cost_empty() { return 0; }\n"
    lines = [STD_HEADERS, "#include <herald/herald.hpp>\n", "#include <cstdint>\n\n"]
    for i in range(topics):
        lines.append(f"struct event{i} {{ std::uint64_t id; std::uint64_t value; }};\n")
        lines.append(f"struct topic{i} : herald::topic<event{i}> {{}};\n")
    lines.append("\nstd::uint64_t herald_compile_cost(herald::bus& bus, std::vector<herald::subscription>& subs) {\n")
    lines.append("    std::uint64_t sum = 0;\n")
    for i in range(topics):
        lines.append(f"    subs.push_back(bus.subscribe<topic{i}>([&sum](const event{i}& e) {{ sum += e.value; }}));\n")
        lines.append(f"    bus.publish<topic{i}>({{{i}, {i}}});\n")
    lines.append("    return sum;\n}\n")
    return "".join(lines)


def include_flags():
    flags = ["-I", os.path.join(ROOT, "include")]
    for candidate in ("/usr/include/concurrentqueue", "/usr/local/include/concurrentqueue"):
        if os.path.isdir(candidate):
            flags += ["-I", os.path.dirname(candidate)]
    return flags


def measure(compiler, text, workdir):
    """(seconds, megabytes) of one compilation of `text`."""
    path = os.path.join(workdir, "tu.cpp")
    with open(path, "w", encoding="utf-8") as out:
        out.write(text)
    stats = os.path.join(workdir, "time.txt")
    cmd = ["/usr/bin/time", "-f", "%e %M", "-o", stats, compiler, "-O2", "-std=c++20", "-c", path, "-o",
           os.path.join(workdir, "tu.o")] + include_flags()
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"compile failed:\n{result.stderr[-4000:]}")
    with open(stats, encoding="utf-8") as f:
        seconds, kilobytes = f.read().split()[-2:]
    return float(seconds), int(kilobytes) / 1024.0


def summary(values, unit, digits):
    med = statistics.median(values)
    return f"{med:.{digits}f} {unit} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compiler", default=os.environ.get("CXX", "g++"))
    parser.add_argument("--topics", default="0,1,50", help="comma-separated topic counts (200 takes long)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    counts = [int(n) for n in args.topics.split(",")]

    # Rounds interleave the sizes, so that a slow spell of the (shared) machine hits
    # every row alike instead of one row's repetitions.
    cases = [("empty TU (std headers)", None)] + [(f"{n} topics", n) for n in counts]
    rows = {topics: [] for _, topics in cases}
    with tempfile.TemporaryDirectory() as workdir:
        for _ in range(args.repeat):
            for _, topics in cases:
                rows[topics].append(measure(args.compiler, source(topics), workdir))
    print(f"| {'translation unit':<24} | {'time: median (range)':<24} | {'peak memory':<24} |")
    print(f"|{'-' * 26}|{'-' * 26}|{'-' * 26}|")
    for label, topics in cases:
        secs = [r[0] for r in rows[topics]]
        mbs = [r[1] for r in rows[topics]]
        print(f"| {label:<24} | {summary(secs, 's', 2):<24} | {summary(mbs, 'MB', 0):<24} |", flush=True)

    def med(topics, index):
        return statistics.median(r[index] for r in rows[topics])

    verdicts = []
    if 0 in rows:
        ratio = med(0, 0) / med(None, 0)
        verdicts.append((f"include alone / empty TU = {ratio:.2f}x (target <= 2x)", ratio <= 2.0))
    if 1 in rows and 50 in rows:
        ratio = med(50, 0) / med(1, 0)
        verdicts.append((f"50 topics / 1 topic = {ratio:.2f}x time (target <= 3x)", ratio <= 3.0))
        peak = med(50, 1)
        verdicts.append((f"50 topics peak memory = {peak:.0f} MB (target <= 600 MB)", peak <= 600))
    if 1 in rows and 50 in rows:
        per_topic = (med(50, 0) - med(1, 0)) / 49
        per_topic_mb = (med(50, 1) - med(1, 1)) / 49
        print(f"\nper extra topic: {per_topic * 1000:.0f} ms, {per_topic_mb:.1f} MB")
    print()
    for text, ok in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    return 0 if all(ok for _, ok in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
