#!/usr/bin/env python3
"""Checks a Chrome trace-event JSON file written by herald::trace_recorder.

    python3 tests/support/check_trace.py trace.json [--chain A,B,C] [--chains N]

Checks that the file is valid JSON in the "JSON Object Format" ({"traceEvents": [...]});
that every complete ("X") event has a non-negative duration and that the slices of each
thread nest; that every thread with events is named; that every flow id has exactly one
start ("s") and one end ("f") of one category; that each delivery flow starts inside a
publish slice on its thread and ends at the start of a handler slice, and each cause flow
starts inside a handler slice and ends at the start of a publish slice whose causation is
that handler's event.

With --chain A,B,C, also checks that at least --chains (default 1) chains exist in which
a publish of A is delivered to a handler of A, which publishes B (a cause flow), which is
delivered to a handler of B, which publishes C, which is delivered to a handler of C, with
one correlation id along the chain.

Prints what is wrong and exits 1, or prints a summary and exits 0.
"""

import argparse
import json
import sys
from collections import defaultdict

EPSILON = 1e-6  # microseconds; the recorder writes three decimals


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace")
    parser.add_argument("--chain", help="topics of a cause chain, comma-separated")
    parser.add_argument("--chains", type=int, default=1, help="how many complete chains at least")
    args = parser.parse_args()

    problems = []

    def problem(text):
        if len(problems) < 50:
            problems.append(text)

    try:
        with open(args.trace, encoding="utf-8") as f:
            document = json.load(f)
    except (OSError, ValueError) as e:
        print(f"check_trace: {args.trace}: not valid JSON: {e}")
        return 1
    if not isinstance(document, dict) or not isinstance(document.get("traceEvents"), list):
        print(f"check_trace: {args.trace}: no traceEvents list")
        return 1
    events = document["traceEvents"]

    named = set()
    slices = defaultdict(list)  # (pid, tid) -> complete events
    flows = defaultdict(list)  # id -> flow events
    used = set()
    for e in events:
        if not isinstance(e, dict) or "ph" not in e:
            problem(f"not a trace event: {e!r}")
            continue
        where = (e.get("pid"), e.get("tid"))
        phase = e["ph"]
        if phase == "M":
            if e.get("name") == "thread_name":
                named.add(where)
            continue
        used.add(where)
        if not isinstance(e.get("ts"), (int, float)) or e["ts"] < 0:
            problem(f"bad ts: {e!r}")
            continue
        if phase == "X":
            if not isinstance(e.get("dur"), (int, float)) or e["dur"] < 0:
                problem(f"complete event without a non-negative dur: {e!r}")
                continue
            slices[where].append(e)
        elif phase in ("s", "f"):
            flows[e.get("id")].append(e)
        elif phase not in ("i", "I"):
            problem(f"unexpected phase {phase!r}: {e!r}")

    for where in sorted(used - named, key=repr):
        problem(f"thread {where} has events but no thread_name")

    # Slices on one thread either nest or follow each other.
    for where, group in slices.items():
        group.sort(key=lambda e: (e["ts"], -e["dur"]))
        open_ends = []
        for e in group:
            while open_ends and open_ends[-1] <= e["ts"] + EPSILON:
                open_ends.pop()
            end = e["ts"] + e["dur"]
            if open_ends and end > open_ends[-1] + EPSILON:
                problem(f"slice overlaps its parent without nesting on {where}: {e!r}")
            open_ends.append(end)

    def inside(e, category):
        """The innermost slice of `category` on e's thread that contains e's time."""
        found = [
            s
            for s in slices.get((e.get("pid"), e.get("tid")), [])
            if s.get("cat") == category and s["ts"] - EPSILON <= e["ts"] <= s["ts"] + s["dur"] + EPSILON
        ]
        return min(found, key=lambda s: s["dur"]) if found else None

    def starting(e, category):
        """The slice of `category` on e's thread that starts at e's time."""
        for s in slices.get((e.get("pid"), e.get("tid")), []):
            if s.get("cat") == category and abs(s["ts"] - e["ts"]) <= EPSILON:
                return s
        return None

    expected = {  # flow category -> (category of the slice it leaves, of the slice it enters)
        "herald.delivery": ("herald.publish", "herald.handler"),
        "herald.cause": ("herald.handler", "herald.publish"),
    }
    edges = defaultdict(list)  # id(slice) -> slices its flows lead to
    by_identity = {}
    for flow_id, group in flows.items():
        starts = [e for e in group if e["ph"] == "s"]
        ends = [e for e in group if e["ph"] == "f"]
        if len(starts) != 1 or len(ends) != 1:
            problem(f"flow {flow_id}: {len(starts)} start(s) and {len(ends)} end(s)")
            continue
        start, end = starts[0], ends[0]
        category = start.get("cat")
        if end.get("cat") != category:
            problem(f"flow {flow_id}: start and end in different categories")
            continue
        if category not in expected:
            problem(f"flow {flow_id}: unknown category {category!r}")
            continue
        if end.get("bp") != "e":
            problem(f'flow {flow_id}: end not bound to its enclosing slice ("bp":"e")')
        if start["ts"] > end["ts"] + EPSILON:
            problem(f"flow {flow_id}: ends before it starts")
        source_category, target_category = expected[category]
        source = inside(start, source_category)
        target = starting(end, target_category)
        if source is None:
            problem(f"flow {flow_id} ({category}): start not inside a {source_category} slice on its thread")
            continue
        if target is None:
            problem(f"flow {flow_id} ({category}): end not at the start of a {target_category} slice")
            continue
        if category == "herald.delivery" and source["args"]["event"] != target["args"]["event"]:
            problem(f"flow {flow_id}: a delivery of another event than the one published")
        if category == "herald.cause" and target["args"]["causation"] != source["args"]["span"]:
            problem(f"flow {flow_id}: the publish's causation is not the handler's span")
        by_identity[id(source)] = source
        by_identity[id(target)] = target
        edges[id(source)].append(target)

    chains = 0
    if args.chain:
        topics = args.chain.split(",")

        def walk(publish, depth, correlation):
            """Complete chains from a publish of topics[depth]."""
            if publish["args"]["topic"] != topics[depth]:
                return 0
            if depth > 0 and publish["args"]["correlation"] != correlation:
                return 0
            total = 0
            for handler in edges[id(publish)]:
                if handler.get("cat") != "herald.handler" or handler["name"] != topics[depth]:
                    continue
                if depth + 1 == len(topics):
                    total += 1
                    continue
                for effect in edges[id(handler)]:
                    if effect.get("cat") == "herald.publish":
                        total += walk(effect, depth + 1, correlation)
            return total

        for where, group in slices.items():
            for s in group:
                if s.get("cat") == "herald.publish" and s["args"].get("causation") == "":
                    chains += walk(s, 0, s["args"]["correlation"] or s["args"]["event"])
        if chains < args.chains:
            problem(f"{chains} complete chain(s) {' -> '.join(topics)}, expected at least {args.chains}")

    if problems:
        for p in problems:
            print(f"check_trace: {args.trace}: {p}")
        return 1
    total_slices = sum(len(g) for g in slices.values())
    print(f"check_trace: {args.trace}: ok: {len(events)} events, {total_slices} slices, {len(flows)} flows, "
          f"{chains} chain(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
