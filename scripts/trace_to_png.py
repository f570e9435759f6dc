#!/usr/bin/env python3
"""Draws a Chrome trace-event JSON file written by herald::trace_recorder as a PNG.

    python3 scripts/trace_to_png.py docs/observability-trace.json docs/observability-trace.png

A stand-in for a screenshot of Perfetto UI, which cannot run here: one row per thread
track (named as in the trace), complete events ("X") as boxes nested by depth, flow
arrows (publish -> handler call solid, cause -> effect dashed) and instant events as
markers. Needs matplotlib (Debian: python3-matplotlib, for /usr/bin/python3).
"""

import argparse
import json
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, Rectangle  # noqa: E402

LANE = 1.0  # height of one nesting level
GAP = 0.6  # space between threads


def load(path):
    with open(path, encoding="utf-8") as f:
        events = json.load(f)["traceEvents"]
    names, order = {}, {}
    slices, flows, instants = defaultdict(list), defaultdict(list), []
    for e in events:
        where = (e.get("pid"), e.get("tid"))
        if e["ph"] == "M":
            if e["name"] == "thread_name":
                names[where] = e["args"]["name"]
            elif e["name"] == "thread_sort_index":
                order[where] = e["args"]["sort_index"]
        elif e["ph"] == "X":
            slices[where].append(e)
        elif e["ph"] in ("s", "f"):
            flows[e["id"]].append(e)
        elif e["ph"] in ("i", "I"):
            instants.append(e)
    return names, order, slices, flows, instants


def nest(group):
    """Gives each slice of one thread its depth; returns the deepest level used."""
    group.sort(key=lambda e: (e["ts"], -e["dur"]))
    stack, deepest = [], 0
    for e in group:
        while stack and stack[-1]["ts"] + stack[-1]["dur"] <= e["ts"]:
            stack.pop()
        e["_depth"] = len(stack)
        deepest = max(deepest, len(stack))
        stack.append(e)
    return deepest


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace")
    parser.add_argument("png")
    parser.add_argument("--width", type=float, default=14.0, help="inches")
    args = parser.parse_args()

    names, order, slices, flows, instants = load(args.trace)
    threads = sorted(set(slices) | {(e.get("pid"), e.get("tid")) for e in instants},
                     key=lambda w: (order.get(w, 1 << 30), w[1]))

    # Rows from the top: each thread gets as many lanes as its slices nest deep.
    top = {}
    y = 0.0
    for where in threads:
        depth = nest(slices[where]) if slices[where] else 0
        top[where] = y
        y += (depth + 1) * LANE + GAP
    height = y

    def lane_y(where, depth):
        return top[where] + depth * LANE + LANE / 2

    times = [e["ts"] for g in slices.values() for e in g] + [e["ts"] + e["dur"] for g in slices.values() for e in g]
    times += [e["ts"] for e in instants]
    start, end = (min(times), max(times)) if times else (0.0, 1.0)
    span = max(end - start, 1e-3)

    fig, ax = plt.subplots(figsize=(args.width, 1.2 + height * 0.45))
    topics = sorted({e["args"].get("topic", e["name"]) for g in slices.values() for e in g})
    palette = plt.get_cmap("tab10")
    color = {t: palette(i % 10) for i, t in enumerate(topics)}
    px_per_us = args.width * 72 * 0.85 / span

    for where in threads:
        for e in slices[where]:
            publish = e.get("cat") == "herald.publish"
            topic = e["args"].get("topic", e["name"])
            y0 = top[where] + e["_depth"] * LANE + 0.08
            ax.add_patch(Rectangle((e["ts"], y0), max(e["dur"], span * 0.001), LANE - 0.16,
                                   facecolor=color[topic], alpha=0.35 if publish else 0.85,
                                   edgecolor=color[topic], hatch="//" if publish else None, linewidth=0.8))
            label = "publish" if publish else e["args"].get("subscriber", e["name"])
            if e["dur"] * px_per_us > len(label) * 4.5:
                ax.text(e["ts"] + e["dur"] / 2, y0 + (LANE - 0.16) / 2, label, ha="center", va="center",
                        fontsize=7, clip_on=True)

    def slice_at(event, starting):
        """The deepest slice on the event's thread that contains (or starts at) its time."""
        where = (event.get("pid"), event.get("tid"))
        found = [s for s in slices.get(where, [])
                 if (abs(s["ts"] - event["ts"]) < 1e-6 if starting else s["ts"] <= event["ts"] <= s["ts"] + s["dur"])]
        return (where, max(found, key=lambda s: s["_depth"])) if found else (where, None)

    drawn = set()
    for group in flows.values():
        s = next((e for e in group if e["ph"] == "s"), None)
        f = next((e for e in group if e["ph"] == "f"), None)
        if s is None or f is None:
            continue
        (from_thread, source), (to_thread, target) = slice_at(s, False), slice_at(f, True)
        if source is None or target is None:
            continue
        cause = s.get("cat") == "herald.cause"
        arrow = FancyArrowPatch((s["ts"], lane_y(from_thread, source["_depth"])),
                                (f["ts"], lane_y(to_thread, target["_depth"])),
                                arrowstyle="-|>", mutation_scale=9, linewidth=0.9,
                                color="tab:red" if cause else "0.25", linestyle="--" if cause else "-",
                                connectionstyle="arc3,rad=0.15" if from_thread == to_thread else "arc3,rad=0.0")
        ax.add_patch(arrow)
        drawn.add("cause" if cause else "delivery")

    for e in instants:
        where = (e.get("pid"), e.get("tid"))
        ax.plot([e["ts"]], [top[where] + 0.1], marker="v", color="black", markersize=6)
        ax.text(e["ts"], top[where] + 0.05, e["name"], fontsize=6, va="bottom")

    ax.set_xlim(start - span * 0.01, end + span * 0.01)
    ax.set_ylim(height, -0.2)
    ax.set_yticks([top[w] + LANE / 2 for w in threads])
    ax.set_yticklabels([names.get(w, f"tid {w[1]}") for w in threads])
    ax.set_xlabel("microseconds since the first record")
    for where in threads[1:]:
        ax.axhline(top[where] - GAP / 2, color="0.85", linewidth=0.8)
    handles = [Rectangle((0, 0), 1, 1, facecolor=color[t], alpha=0.85) for t in topics]
    labels = [f"handler call on {t} (labelled with its subscriber)" for t in topics]
    handles.append(Rectangle((0, 0), 1, 1, facecolor="white", edgecolor="0.3", hatch="//"))
    labels.append("publish (hatched)")
    if "delivery" in drawn:
        handles.append(plt.Line2D([], [], color="0.25"))
        labels.append("publish -> handler call")
    if "cause" in drawn:
        handles.append(plt.Line2D([], [], color="tab:red", linestyle="--"))
        labels.append("handler call -> publish it caused")
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, fontsize=7, frameon=False)
    ax.set_title(f"{args.trace}, drawn by scripts/trace_to_png.py (not a Perfetto screenshot)", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.png, dpi=130)


if __name__ == "__main__":
    main()
