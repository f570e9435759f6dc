#!/usr/bin/env python3
"""Reads the Google Benchmark JSON files that scripts/bench.sh wrote and prints herald
next to its baselines: one fixed-width table, scenario | herald | baseline | ratio |
target | result. Every figure comes from this run's JSON (medians over repetitions).

With --update-docs, rewrites the generated section of docs/performance.md (between the
marker comments) with the machine description and the table; with --plot, draws
docs/performance.png with gnuplot.

    python3 scripts/bench_report.py --results build-bench/results [--build build-bench]
        [--mode full|quick] [--update-docs docs/performance.md] [--plot docs/performance.png]
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

BEGIN_MARKER = "<!-- BEGIN GENERATED: scripts/bench.sh --update-docs -->"
END_MARKER = "<!-- END GENERATED -->"

UNIT_TO_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}
# Suffixes Google Benchmark appends to a run's name for its settings.
SETTING_SUFFIX = re.compile(r"/(iterations|repeats|min_time|min_warmup_time|threads):[^/]+|/(real_time|manual_time)")


class Results:
    """Medians by benchmark name (settings suffixes stripped), e.g. "inline/herald/10"."""

    def __init__(self, directory):
        self.runs = {}  # name -> {"median": entry} or {"iterations": [entries]}
        self.errors = {}
        self.context = {}
        for path in sorted(pathlib.Path(directory).glob("*.json")):
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            if not self.context:
                self.context = data.get("context", {})
            for entry in data.get("benchmarks", []):
                name = SETTING_SUFFIX.sub("", entry.get("run_name", entry["name"]))
                if entry.get("error_occurred"):
                    self.errors[name] = entry.get("error_message", "error")
                    continue
                slot = self.runs.setdefault(name, {"iterations": []})
                if entry.get("run_type") == "aggregate":
                    if entry.get("aggregate_name") == "median":
                        slot["median"] = entry
                else:
                    slot["iterations"].append(entry)

    def names(self, prefix):
        return sorted(n for n in self.runs if n.startswith(prefix))

    def value(self, name, metric):
        """The median of `metric` ("cpu_time"/"real_time" in ns, or a counter) for a run,
        or None when the run or the metric is missing."""
        slot = self.runs.get(name)
        if slot is None:
            return None
        entries = [slot["median"]] if "median" in slot else slot["iterations"]
        values = []
        for entry in entries:
            if metric in ("cpu_time", "real_time"):
                values.append(entry[metric] * UNIT_TO_NS[entry.get("time_unit", "ns")])
            elif metric in entry:
                values.append(float(entry[metric]))
        if not values:
            return None
        values.sort()
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def fmt(value):
    """Three significant digits, with k/M/G for large values."""
    if value is None:
        return "n/a"
    magnitude = abs(value)
    for limit, scale, suffix in ((1e9, 1e9, "G"), (1e6, 1e6, "M"), (1e4, 1e3, "k")):
        if magnitude >= limit:
            return f"{value / scale:.3g}{suffix}"
    if magnitude == 0:
        return "0"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude < 0.01:
        return f"{value:.2e}"
    return f"{value:.3g}"


def count_label(n):
    """A run size as written in the targets: 10000 -> "10k", 1000000 -> "1M"."""
    for scale, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{suffix}"
    return str(n)


class Row:
    def __init__(self, scenario, herald, baseline, target=None, check=None, ratio=True):
        self.scenario = scenario
        self.herald = herald
        self.baseline = baseline
        self.target = target or "-"
        self.check = check  # callable(herald, baseline, ratio) -> bool, or None (info)
        self.show_ratio = ratio

    def ratio(self):
        if not self.show_ratio or self.herald is None or self.baseline in (None, 0):
            return None
        return self.herald / self.baseline

    def result(self):
        if self.check is None:
            return ""
        if self.herald is None:
            return "MISSING"
        try:
            return "PASS" if self.check(self.herald, self.baseline, self.ratio()) else "MISS"
        except TypeError:  # the check needs a baseline or ratio that is missing
            return "MISSING"


def build_rows(r):
    """The table. Targets are the ones from the benchmark issue (see docs/performance.md)."""
    sections = []

    # 1 and 5a: inline publish.
    rows = []
    t = lambda name: r.value(name, "cpu_time")  # noqa: E731 (single-threaded: CPU time resists preemption)
    for subs, limit in ((1, 2.0), (10, 1.3)):
        h = t(f"inline/herald/{subs}")
        noun = "sub" if subs == 1 else "subs"
        rows.append(Row(f"inline {subs} {noun} (ns/publish) vs virtual loop", h, t(f"inline/virtual_loop/{subs}"),
                        f"ratio <= {limit}", lambda h, b, q, limit=limit: q <= limit))
        rows.append(Row(f"inline {subs} {noun} vs std::function loop", h, t(f"inline/function_loop/{subs}")))
        rows.append(Row(f"inline {subs} {noun} vs signals2 emit", h, t(f"inline/signals2/{subs}")))
    for subs in (100, 1000):
        h = t(f"inline/herald/{subs}")
        rows.append(Row(f"inline {subs} subs (ns/publish) vs virtual loop", h, t(f"inline/virtual_loop/{subs}")))
        rows.append(Row(f"inline {subs} subs vs signals2 emit", h, t(f"inline/signals2/{subs}")))
    sections.append(("Inline publish (ns per publish, lower is better)", rows))

    # Observability: the cost of the latency metrics (on by default, one event in 64 timed).
    rows = []
    for subs in (1, 10):
        noun = "sub" if subs == 1 else "subs"
        rows.append(Row(f"inline {subs} {noun}, latency metrics on vs off (ns/publish)", t(f"inline/herald/{subs}"),
                        t(f"inline/herald_no_metrics/{subs}"), "ratio <= 1.10" if subs == 1 else None,
                        (lambda h, b, q: q <= 1.10) if subs == 1 else None))
    ips_ = lambda name: r.value(name, "items_per_second")  # noqa: E731
    rows.append(Row("async 1->1, latency metrics on vs off (events/s)", ips_("async_1to1/herald"),
                    ips_("async_1to1/herald_no_metrics"), "ratio >= 0.91", lambda h, b, q: q >= 0.91))
    rows.append(Row("async 1->1, latency metrics off vs swap-list queue", ips_("async_1to1/herald_no_metrics"),
                    ips_("async_1to1/swap_list")))
    sections.append(("Observability cost (metrics on vs off in the same run)", rows))

    # 5: growth.
    rows = []
    per_sub = lambda kind, n: None if t(f"inline/{kind}/{n}") is None else t(f"inline/{kind}/{n}") / n  # noqa: E731
    rows.append(Row("per-subscriber ns: 1000 subs vs 10 subs", per_sub("herald", 1000), per_sub("herald", 10),
                    "ratio <= 1.5", lambda h, b, q: q <= 1.5))
    rows.append(Row("  (virtual loop, same comparison)", per_sub("virtual_loop", 1000), per_sub("virtual_loop", 10)))
    topic_counts = sorted(int(n.rsplit("/", 1)[1]) for n in r.names("topics/herald/"))
    if topic_counts:
        low, high = topic_counts[0], topic_counts[-1]
        for n in topic_counts[1:]:
            rows.append(Row(f"publish ns: {n} topics vs {low} topic", t(f"topics/herald/{n}"), t(f"topics/herald/{low}"),
                            "ratio <= 1.2" if n == high else None,
                            (lambda h, b, q: q <= 1.2) if n == high else None))
    else:
        rows.append(Row("publish ns: many topics vs 1 topic", None, None, "ratio <= 1.2", lambda h, b, q: q <= 1.2))
    sections.append(("Cost growth (herald against itself)", rows))

    # 2 and 3: throughput.
    rows = []
    ips = lambda name: r.value(name, "items_per_second")  # noqa: E731
    h = ips("async_1to1/herald")
    rows.append(Row("async 1->1 (events/s) vs swap-list queue", h, ips("async_1to1/swap_list"),
                    "ratio >= 1.5", lambda h, b, q: q >= 1.5))
    rows.append(Row("async 1->1 vs mutex+condvar queue", h, ips("async_1to1/mutex_condvar"),
                    "ratio >= 3", lambda h, b, q: q >= 3.0))
    rows.append(Row("async 1->1 vs moodycamel spin", h, ips("async_1to1/moodycamel_spin")))
    rows.append(Row("async 1->1 vs moodycamel blocking", h, ips("async_1to1/moodycamel_blocking")))

    def best_of(scenario, names):
        """The fastest baseline of `scenario` in this run: (label, events/s)."""
        found = [(name, ips(f"{scenario}/{name}")) for name in names]
        found = [(name, v) for name, v in found if v is not None]
        return max(found, key=lambda pair: pair[1]) if found else (names[0], None)

    # The fastest baseline may differ between runs; the row's name must not, so that
    # runs merge (the per-baseline rows below say which one it was).
    _, best = best_of("async_1to4", ("moodycamel_blocking", "swap_list"))
    rows.append(Row("async 1->4 (deliveries/s) vs the fastest of 4 queues", ips("async_1to4/herald"), best,
                    "ratio >= 1.0", lambda h, b, q: q >= 1.0))
    rows.append(Row("async 1->4 vs 4x moodycamel blocking", ips("async_1to4/herald"),
                    ips("async_1to4/moodycamel_blocking")))
    rows.append(Row("async 1->4 vs 4x swap-list", ips("async_1to4/herald"), ips("async_1to4/swap_list")))
    h = ips("async_2to1/herald")
    _, best = best_of("async_2to1", ("moodycamel_blocking", "mutex_condvar", "swap_list"))
    rows.append(Row("async 2->1 (events/s) vs the fastest baseline", h, best,
                    "ratio >= 1.0", lambda h, b, q: q >= 1.0))
    rows.append(Row("async 2->1 vs swap-list queue", h, ips("async_2to1/swap_list")))
    rows.append(Row("async 2->1 vs moodycamel blocking", h, ips("async_2to1/moodycamel_blocking")))
    rows.append(Row("async 2->1 vs mutex+condvar queue", h, ips("async_2to1/mutex_condvar")))
    sections.append(("Async throughput (higher is better)", rows))

    # 4: latency.
    rows = []
    lat = lambda regime, who, p: r.value(f"{regime}/{who}", f"{p}_ns")  # noqa: E731
    for regime, label in (("latency_10us", "10us pacing"), ("latency_idle", "idle, 1 ms apart")):
        for p in ("p50", "p90", "p99"):
            target = check = None
            if regime == "latency_10us" and p == "p50":
                target, check = "herald <= 3000 ns", (lambda h, b, q: h <= 3000)
            rows.append(Row(f"latency {label} {p} (ns) vs moodycamel spin", lat(regime, "herald", p),
                            lat(regime, "moodycamel_spin", p), target, check))
        target = check = None
        if regime == "latency_10us":
            target, check = "ratio <= 1.5", (lambda h, b, q: q <= 1.5)
        rows.append(Row(f"latency {label} p50, low-latency pool (100 us spin) vs moodycamel spin",
                        lat(regime, "herald_low_latency", "p50"), lat(regime, "moodycamel_spin", "p50"), target, check))
        if regime == "latency_10us":
            rows.append(Row(f"latency {label} p50, default pool vs moodycamel blocking", lat(regime, "herald", "p50"),
                            lat(regime, "moodycamel_blocking", "p50"), "ratio <= 1.0", lambda h, b, q: q <= 1.0))
        for who, name in (("moodycamel_blocking", "moodycamel blocking"), ("mutex_condvar", "mutex+condvar")):
            for p in ("p50", "p99"):
                rows.append(Row(f"latency {label} {p} vs {name}", lat(regime, "herald", p), lat(regime, who, p)))
    sections.append(("Publish-to-handler latency (ns, lower is better)", rows))

    # 6: memory.
    rows = []
    mem = lambda name, c: r.value(name, c)  # noqa: E731
    for size in (16, 256):
        rows.append(Row(f"bytes per queued {size} B event vs moodycamel", mem(f"queued_bytes/herald/{size}", "bytes_per_event"),
                        mem(f"queued_bytes/moodycamel/{size}", "bytes_per_event")))
        rows.append(Row(f"  overhead beyond payload ({size} B)", mem(f"queued_bytes/herald/{size}", "overhead_bytes"),
                        mem(f"queued_bytes/moodycamel/{size}", "overhead_bytes"), "herald <= 64 B",
                        lambda h, b, q: h <= 64, ratio=False))
    for size in (16, 64):
        rows.append(Row(f"allocs per async publish ({size} B) vs moodycamel spin",
                        mem(f"allocs_per_publish/herald/{size}", "allocs_per_publish"),
                        mem("allocs_per_publish/moodycamel_spin/16", "allocs_per_publish"),
                        "herald < 0.001", lambda h, b, q: h < 0.001, ratio=False))
    rows.append(Row("  (16 B) vs moodycamel blocking", mem("allocs_per_publish/herald/16", "allocs_per_publish"),
                    mem("allocs_per_publish/moodycamel_blocking/16", "allocs_per_publish"), ratio=False))
    rows.append(Row("  (16 B) vs mutex+condvar (std::deque)", mem("allocs_per_publish/herald/16", "allocs_per_publish"),
                    mem("allocs_per_publish/mutex_condvar/16", "allocs_per_publish"), ratio=False))
    sections.append(("Memory", rows))

    # Hardening: subscribe/unsubscribe churn in bounded memory and constant time per pair;
    # the heap returns to its level before a large burst once the backlog has drained.
    rows = []
    churn_counts = sorted(int(n.rsplit("/", 1)[1]) for n in r.names("churn/herald/"))
    small, large = (churn_counts[0], churn_counts[-1]) if len(churn_counts) >= 2 else (10_000, 1_000_000)
    churn = lambda who, n, c: r.value(f"churn/{who}/{n}", c)  # noqa: E731
    rows.append(Row(f"churn: ns per sub+unsub pair, {count_label(large)} pairs vs {count_label(small)}",
                    churn("herald", large, "ns_per_pair"), churn("herald", small, "ns_per_pair"),
                    "ratio <= 1.5", lambda h, b, q: q <= 1.5))
    rows.append(Row(f"  churn {count_label(small)} (ns/pair) vs signals2 connect+disconnect",
                    churn("herald", small, "ns_per_pair"), churn("signals2", small, "ns_per_pair")))
    rows.append(Row(f"  bytes held after {count_label(large)} pairs vs after {count_label(small)}",
                    churn("herald", large, "held_bytes"), churn("herald", small, "held_bytes"),
                    "herald <= baseline + 16 KiB", lambda h, b, q: h <= b + 16 * 1024, ratio=False))
    events = r.value("burst_1k/herald", "events")
    burst = f"{count_label(int(events))} x 1 KB" if events else "1 KB"
    rows.append(Row(f"bytes held 200 ms after a {burst} burst vs its peak",
                    r.value("burst_1k/herald", "held_bytes"), r.value("burst_1k/herald", "peak_growth_bytes"),
                    "herald <= 1 MB", lambda h, b, q: h <= 1024 * 1024))
    rows.append(Row("  vs raw moodycamel queue, same burst drained",
                    r.value("burst_1k/herald", "held_bytes"), r.value("burst_1k/moodycamel", "held_bytes")))
    sections.append(("Churn and bursts (heap held by the bus, bytes)", rows))

    # Delivery policies (the policies issue): the same async 1->1 run per policy, one
    # binary; the targets are on time per event, i.e. the inverse throughput ratio.
    rows = []
    faf = ips("fire_and_forget_1to1")
    rows.append(Row("at-least-once, no failures (events/s) vs fire-and-forget", ips("at_least_once_1to1/0"), faf,
                    "time <= 1.15x", lambda h, b, q: q >= 1 / 1.15))
    rows.append(Row("at-least-once, 10% failing vs fire-and-forget", ips("at_least_once_1to1/10"), faf))
    rows.append(Row("priority<3> (events/s) vs fire-and-forget", ips("priority_1to1"), faf,
                    "time <= 1.5x", lambda h, b, q: q >= 1 / 1.5))
    sections.append(("Delivery policies, async 1->1 (higher is better)", rows))

    # Flow control (the flow-control issue): what a bound costs, block's pace, keyed ordering.
    rows = []
    rows.append(Row("async 1->1, capacity 1M (block) vs unbounded (events/s)", ips("bounded_1to1/capacity_1M"),
                    ips("bounded_1to1/unbounded"), "ratio >= 0.9", lambda h, b, q: q >= 0.9))
    over = lambda c: r.value("block_overload/herald", c)  # noqa: E731
    rows.append(Row("block under overload: publisher rate vs consumer rate (events/s)", over("publisher_per_s"),
                    over("consumer_per_s"), "ratio within 0.9-1.1", lambda h, b, q: 0.9 <= q <= 1.1))
    rows.append(Row("by_key, 1000 keys, 100 us handlers, 8 workers vs serial (events/s)",
                    ips("keyed_parallel/by_key"), ips("keyed_parallel/serial"), "ratio >= 5", lambda h, b, q: q >= 5))
    rows.append(Row("by_key, one key vs serial, 1->1 (events/s)", ips("keyed_one_key/by_key"),
                    ips("keyed_one_key/serial"), "ratio >= 0.8", lambda h, b, q: q >= 0.8))
    for rule in ("drop_newest", "drop_oldest"):
        rows.append(Row(f"bounded backlog, 1 KB events ({rule}): bytes per place beyond the event",
                        r.value(f"bounded_backlog/{rule}", "overhead_bytes"), None, "herald <= 64 B",
                        lambda h, b, q: h <= 64, ratio=False))
    # Conflation also keeps each waiting event's key and its index entry: no target.
    rows.append(Row("bounded backlog, 1 KB events (conflate, 8-byte keys): bytes per place beyond the event",
                    r.value("bounded_backlog/conflate", "overhead_bytes"), None, None, None, ratio=False))
    sections.append(("Flow control", rows))

    # The NATS bridge (the scale-out issue): bridged publish vs the raw C client, same
    # bytes, asynchronous acknowledgements (bench_nats_publish; absent without libnats).
    rows = []
    rows.append(Row("bridged publish, acknowledged (events/s) vs raw C client, same bytes",
                    ips("nats_publish/bridged"), ips("nats_publish/raw_client"), "ratio >= 0.8",
                    lambda h, b, q: q >= 0.8))
    rows.append(Row("  the same, each event encoded by the JSON codec, vs raw C client",
                    ips("nats_publish/bridged_json"), ips("nats_publish/raw_client")))
    sections.append(("NATS bridge", rows))

    # 7: idle.
    rows = []
    cpu = lambda name: r.value(name, "cpu_pct")  # noqa: E731
    rows.append(Row("idle CPU (% of one core) vs idle blocking consumer", cpu("idle_cpu/herald"),
                    cpu("idle_cpu/moodycamel_blocking"), "herald < 2 %", lambda h, b, q: h < 2.0, ratio=False))
    rows.append(Row("  idle after a burst of events", cpu("idle_cpu/herald_after_burst"),
                    cpu("idle_cpu/moodycamel_blocking"), "herald < 2 %", lambda h, b, q: h < 2.0, ratio=False))
    rows.append(Row("  low-latency pool (100 us spin), after a burst", cpu("idle_cpu/herald_low_latency"),
                    cpu("idle_cpu/moodycamel_blocking"), "herald < 2 %", lambda h, b, q: h < 2.0, ratio=False))
    sections.append(("Idle cost", rows))
    return sections


class MergedRow(Row):
    """One row over several runs: the medians of herald's and the baseline's figures, and
    the median and range of the per-run ratios; the target is checked on the medians."""

    def __init__(self, rows):
        first = rows[0]
        present = lambda values: [v for v in values if v is not None]  # noqa: E731
        med = lambda values: statistics.median(present(values)) if present(values) else None  # noqa: E731
        super().__init__(first.scenario, med([r.herald for r in rows]), med([r.baseline for r in rows]),
                         first.target, first.check, first.show_ratio)
        self.ratios = present([r.ratio() for r in rows])

    def ratio(self):
        return statistics.median(self.ratios) if self.ratios else None

    def ratio_text(self):
        if not self.ratios:
            return "-"
        if len(self.ratios) == 1:
            return f"{self.ratios[0]:.2f}x"
        return f"{self.ratio():.2f}x ({min(self.ratios):.2f}-{max(self.ratios):.2f})"


def merge_runs(per_run):
    """The sections of several runs as one table of `MergedRow`s (rows matched by name)."""
    merged = []
    for index, (title, rows) in enumerate(per_run[0]):
        out = []
        for row in rows:
            same = [next((r for r in run[index][1] if r.scenario == row.scenario), None) for run in per_run]
            out.append(MergedRow([r for r in same if r is not None]))
        merged.append((title, out))
    return merged


def render_table(sections, runs=1):
    header = ("scenario", "herald", "baseline", "ratio", "target", "result")
    lines = []
    all_rows = [row for _, rows in sections for row in rows]

    def ratio_cell(row):
        if isinstance(row, MergedRow):
            return row.ratio_text()
        return "-" if row.ratio() is None else f"{row.ratio():.2f}x"

    cells = [(row.scenario, fmt(row.herald), fmt(row.baseline), ratio_cell(row), row.target, row.result())
             for row in all_rows]
    widths = [max(len(header[i]), *(len(c[i]) for c in cells)) for i in range(len(header))]

    def line(values):
        parts = [values[0].ljust(widths[0])] + [values[i].rjust(widths[i]) for i in (1, 2, 3)] + \
                [values[4].ljust(widths[4]), values[5]]
        return " | ".join(parts).rstrip()

    lines.append(line(header))
    lines.append("-+-".join("-" * w for w in widths))
    it = iter(cells)
    for title, rows in sections:
        lines.append(f"[{title}]")
        for _ in rows:
            lines.append(line(next(it)))
    passed = sum(1 for row in all_rows if row.result() == "PASS")
    checked = sum(1 for row in all_rows if row.result())
    lines.append("")
    if runs == 1:
        lines.append(f"{passed} of {checked} targets met (PASS); ratio = herald / baseline; medians of this run.")
    else:
        lines.append(f"{passed} of {checked} targets met (PASS) by the medians of {runs} full runs; ratio = herald / "
                     "baseline per run, median (range) over the runs; herald and baseline: medians over the runs.")
    return "\n".join(lines)


# --- machine description ------------------------------------------------------------------

def compiler_version(build):
    cache = pathlib.Path(build) / "CMakeCache.txt"
    compiler = "c++"
    if cache.exists():
        for text in cache.read_text(encoding="utf-8", errors="replace").splitlines():
            if text.startswith("CMAKE_CXX_COMPILER:"):
                compiler = text.split("=", 1)[1]
                break
    try:
        out = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True).stdout
        return out.splitlines()[0].strip()
    except (OSError, subprocess.CalledProcessError):
        return compiler


def machine(build, context):
    model = "unknown CPU"
    try:
        for text in pathlib.Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if text.startswith("model name"):
                model = text.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mem = ""
    try:
        for text in pathlib.Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if text.startswith("MemTotal:"):
                mem = f", {int(text.split()[1]) / 1024 / 1024:.0f} GiB RAM"
                break
    except OSError:
        pass
    caches = ", ".join(f"L{c['level']} {c['type'].lower()} {c['size'] // 1024} KiB"
                       + (f" (shared by {c['num_sharing']})" if c.get("num_sharing", 0) > 1 else "")
                       for c in context.get("caches", []))
    os_name = platform.platform()
    try:
        for text in pathlib.Path("/etc/os-release").read_text(encoding="utf-8").splitlines():
            if text.startswith("PRETTY_NAME="):
                os_name = text.split("=", 1)[1].strip('"') + f" (kernel {platform.release()})"
    except OSError:
        pass
    return [
        f"CPU: {model}, {cores} logical cores available (nproc), "
        f"{context.get('mhz_per_cpu', '?')} MHz" + mem,
        f"Caches: {caches}" if caches else "Caches: unknown",
        f"OS: {os_name}",
        f"Compiler: {compiler_version(build)}, CMAKE_BUILD_TYPE=Release",
        f"Google Benchmark library build type: {context.get('library_build_type', '?')}; "
        f"load average at start: {', '.join(f'{x:.2f}' for x in context.get('load_avg', []))}",
    ]


# --- documentation and plot ---------------------------------------------------------------

def update_docs(path, mode, run_date, machine_lines, table, plot_name, runs=1):
    doc = pathlib.Path(path)
    text = doc.read_text(encoding="utf-8")
    if BEGIN_MARKER not in text or END_MARKER not in text:
        sys.exit(f"bench_report.py: {path} lacks the markers {BEGIN_MARKER} ... {END_MARKER}")
    when = run_date or datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    body = [BEGIN_MARKER, "",
            (f"Generated by `bash scripts/bench.sh --update-docs` from a {mode} run started {when}." if runs == 1 else
             f"Generated by `bash scripts/bench.sh --update-docs --runs {runs}` from {runs} {mode} runs, the first "
             f"started {when}; the plot shows the first run."), ""]
    body += [f"- {line}" for line in machine_lines]
    body += ["", "```text", table, "```", ""]
    if plot_name:
        body += [f"![herald vs baselines: throughput, latency, inline cost]({plot_name})", ""]
    body.append(END_MARKER)
    before, rest = text.split(BEGIN_MARKER, 1)
    _, after = rest.split(END_MARKER, 1)
    doc.write_text(before + "\n".join(body) + after, encoding="utf-8")


SERIES = ("herald", "moodycamel_spin", "moodycamel_blocking", "mutex_condvar", "swap_list")
LATENCY_SERIES = ("herald", "herald_low_latency", "moodycamel_spin", "moodycamel_blocking", "mutex_condvar")


def series_words(keys):
    """gnuplot titles for `keys`, one word each."""
    return " ".join(key.replace("moodycamel_", "").replace("mutex_condvar", "mutex+condvar")
                    .replace("swap_list", "swap-list").replace("herald_low_latency", "herald-spin") for key in keys)


def plot(r, path):
    gnuplot = shutil.which("gnuplot")
    if gnuplot is None:
        sys.exit("bench_report.py: gnuplot not found (bash scripts/deps.sh gnuplot-nox)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)

        def table_file(name, rows):
            (tmp / name).write_text("\n".join(rows) + "\n", encoding="utf-8")

        def val(x, scale=1.0):
            return "NaN" if x is None else f"{x * scale:.6g}"

        # Throughput, M events/s, one row per scenario, one column per implementation.
        rows = []
        for scenario, label in (("async_1to1", '"1 -> 1"'), ("async_1to4", '"1 -> 4 (deliveries)"'),
                                ("async_2to1", '"2 -> 1"')):
            rows.append(label + " " + " ".join(val(r.value(f"{scenario}/{key}", "items_per_second"), 1e-6)
                                               for key in SERIES))
        table_file("throughput.dat", rows)
        for regime in ("latency_10us", "latency_idle"):
            rows = []
            for p in ("p50", "p90", "p99"):
                rows.append(f"{p} " + " ".join(val(r.value(f"{regime}/{key}", f"{p}_ns"), 1e-3)
                                               for key in LATENCY_SERIES))
            table_file(f"{regime}.dat", rows)
        rows = []
        for n in (1, 10, 100, 1000):
            rows.append(f"{n} " + " ".join(val(r.value(f"inline/{key}/{n}", "cpu_time"))
                                           for key in ("herald", "virtual_loop", "function_loop", "signals2")))
        table_file("inline.dat", rows)

        words = series_words(SERIES)
        latency_words = series_words(LATENCY_SERIES)
        script = f"""
set terminal pngcairo size 1400,1000 font "Sans,11"
set output "{pathlib.Path(path).resolve()}"
set multiplot layout 2,2 title "herald vs baselines (medians of the first run, {r.context.get('num_cpus', '?')} CPUs)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set key outside bottom center horizontal

set title "Async throughput (M events/s, higher is better)"
set yrange [0:*]
plot for [i=2:{len(SERIES) + 1}] "{tmp / 'throughput.dat'}" using i:xtic(1) title word("{words}", i-1)

set title "Latency, one event every 10 us (us, log scale, lower is better)"
set logscale y
set yrange [*:*]
plot for [i=2:{len(LATENCY_SERIES) + 1}] "{tmp / 'latency_10us.dat'}" using i:xtic(1) title word("{latency_words}", i-1)

set title "Latency, idle bus, one event per ms (us, log scale)"
plot for [i=2:{len(LATENCY_SERIES) + 1}] "{tmp / 'latency_idle.dat'}" using i:xtic(1) title word("{latency_words}", i-1)

unset style
set style data linespoints
set title "Inline publish cost (ns per publish, log-log, lower is better)"
set logscale xy
set xlabel "subscribers"
plot "{tmp / 'inline.dat'}" using 1:2 title "herald" lw 2, \\
     "" using 1:3 title "virtual-call loop" lw 2, \\
     "" using 1:4 title "std::function loop" lw 2, \\
     "" using 1:5 title "Boost.Signals2 emit" lw 2
unset multiplot
"""
        (tmp / "plot.gp").write_text(script, encoding="utf-8")
        subprocess.run([gnuplot, str(tmp / "plot.gp")], check=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", required=True, action="append",
                        help="directory with the benchmark JSON files; give it once per run to merge runs")
    parser.add_argument("--build", default="build-bench", help="build directory (for the compiler's name)")
    parser.add_argument("--mode", default="full", help="full or quick (printed in the docs)")
    parser.add_argument("--update-docs", metavar="MD", help="rewrite the generated section of this file")
    parser.add_argument("--plot", metavar="PNG", help="draw the plot into this file")
    args = parser.parse_args()

    all_results = [Results(directory) for directory in args.results]
    for directory, one in zip(args.results, all_results):
        if not one.runs:
            sys.exit(f"bench_report.py: no benchmark results in {directory}")
    results = all_results[0]  # the plot and the machine description come from the first run
    if len(all_results) == 1:
        table = render_table(build_rows(results))
    else:
        table = render_table(merge_runs([build_rows(one) for one in all_results]), runs=len(all_results))
    machine_lines = machine(args.build, results.context)
    print()
    for text in machine_lines:
        print(text)
    print()
    print(table)
    for name, message in sorted(results.errors.items()):
        print(f"error in {name}: {message}")
    if args.plot:
        plot(results, args.plot)
        print(f"\nwrote {args.plot}")
    if args.update_docs:
        plot_name = os.path.relpath(args.plot, os.path.dirname(os.path.abspath(args.update_docs))) if args.plot else None
        update_docs(args.update_docs, args.mode, results.context.get("date"), machine_lines, table, plot_name,
                    runs=len(all_results))
        print(f"updated {args.update_docs}")


if __name__ == "__main__":
    main()
