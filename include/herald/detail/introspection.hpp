// Turning a bus's snapshot into something a person reads: the subscriber's entry in
// `bus_metrics`, the text table of `basic_bus::report()` and the Graphviz diagram of
// `basic_bus::topology()`. Compiled once (nothing here depends on a topic or traits).
#pragma once

#include <herald/detail/chrono.hpp>
#include <herald/detail/subscriber.hpp>
#include <herald/metrics.hpp>
#include <herald/subscription.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

namespace herald::detail {

inline std::string_view ordering_name(ordering order) noexcept {
    switch (order) {
    case ordering::serial:
        return "serial";
    case ordering::concurrent:
        return "concurrent";
    case ordering::by_key:
        return "by_key";
    }
    return "unknown";
}

/// One subscriber's entry in a snapshot.
inline subscriber_metrics describe(subscriber_base& subscriber) {
    subscriber_metrics out;
    out.name = subscriber.name;
    out.async = subscriber.mode == delivery::async;
    out.stats = subscription::stats_of(subscriber.counters(), &subscriber);
    subscriber.read_latencies(out);
    if (out.async) {
        out.ordering = ordering_name(subscriber.order());
        if (const executor* pool = subscriber.runs_on()) {
            out.pool = pool->label();
            out.pool_threads = pool->concurrency();
            out.pool_id = pool;
        }
    }
    return out;
}

/// A duration for people: "830ns", "12.4us", "3.1ms", "2.0s"; "-" for none.
inline std::string human_time(std::chrono::nanoseconds d, bool any = true) {
    if (!any) {
        return "-";
    }
    char text[32];
    const double ns = static_cast<double>(d.count());
    if (ns < 1e3) {
        std::snprintf(text, sizeof text, "%.0fns", ns);
    } else if (ns < 1e6) {
        std::snprintf(text, sizeof text, "%.1fus", ns / 1e3);
    } else if (ns < 1e9) {
        std::snprintf(text, sizeof text, "%.1fms", ns / 1e6);
    } else {
        std::snprintf(text, sizeof text, "%.1fs", ns / 1e9);
    }
    return text;
}

/// `basic_bus::report()`: one row per subscriber, columns padded to their widest cell.
inline std::string report_table(const bus_metrics& m) {
    std::vector<std::vector<std::string>> rows;
    rows.push_back({"topic", "subscriber", "runs on", "waiting", "max", "delivered", "failed", "dropped", "wait p50",
                    "wait p99", "handler p50", "handler p99"});
    for (const auto& t : m.topics) {
        if (t.subscribers.empty()) {
            rows.push_back({t.name, "(none)", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-"});
        }
        for (const auto& s : t.subscribers) {
            const auto& st = s.stats;
            const bool waited = s.waited.count() != 0;
            const bool handled = s.handled.count() != 0;
            rows.push_back({t.name, s.name,
                            s.async ? s.pool + " x" + std::to_string(s.pool_threads) + " (" + s.ordering + ")"
                                    : std::string("inline"),
                            std::to_string(st.waiting), std::to_string(st.high_water), std::to_string(st.delivered),
                            std::to_string(st.failed),
                            std::to_string(st.dropped + st.discarded + st.rejected + st.expired + st.conflated),
                            human_time(s.waited.quantile(0.5), waited), human_time(s.waited.quantile(0.99), waited),
                            human_time(s.handled.quantile(0.5), handled),
                            human_time(s.handled.quantile(0.99), handled)});
        }
    }
    std::vector<std::size_t> width(rows.front().size(), 0);
    for (const auto& row : rows) {
        for (std::size_t i = 0; i < row.size(); ++i) {
            width[i] = std::max(width[i], row[i].size());
        }
    }
    std::string out = "herald bus '" + m.source + "': " + std::to_string(m.totals.published) + " published, " +
                      std::to_string(m.totals.delivered) + " delivered, " + std::to_string(m.totals.failed) +
                      " failed, " + std::to_string(m.totals.dead_lettered) + " dead letters";
    out += m.sample_every == 0 ? "; latency metrics off\n"
                               : "; times from 1 in " + std::to_string(m.sample_every) + " events\n";
    for (std::size_t r = 0; r < rows.size(); ++r) {
        for (std::size_t i = 0; i < rows[r].size(); ++i) {
            const std::string& cell = rows[r][i];
            const std::size_t pad = width[i] - cell.size();
            // Text left, numbers right.
            if (i < 3) {
                out += cell;
                out.append(pad, ' ');
            } else {
                out.append(pad, ' ');
                out += cell;
            }
            out += i + 1 < rows[r].size() ? "  " : "\n";
        }
        if (r == 0) {
            for (std::size_t i = 0; i < width.size(); ++i) {
                out.append(width[i], '-');
                out += i + 1 < width.size() ? "  " : "\n";
            }
        }
    }
    return out;
}

/// A Graphviz double-quoted string's content.
inline std::string dot_escape(std::string_view text) {
    std::string out;
    for (const char c : text) {
        if (c == '"' || c == '\\') {
            out += '\\';
        }
        out += c == '\n' ? ' ' : c;
    }
    return out;
}

/// Events per second handled by `s` since `before` (the same subscriber in an earlier
/// snapshot `then`), or over its life when there is none.
inline double delivery_rate(const subscriber_metrics& s, const subscriber_metrics* before,
                            std::chrono::nanoseconds since_then) {
    const std::uint64_t done = s.stats.delivered + s.stats.failed;
    if (before != nullptr && since_then.count() > 0) {
        const std::uint64_t earlier = before->stats.delivered + before->stats.failed;
        return static_cast<double>(done - std::min(done, earlier)) * 1e9 / static_cast<double>(since_then.count());
    }
    return s.age.count() > 0 ? static_cast<double>(done) * 1e9 / static_cast<double>(s.age.count()) : 0.0;
}

/// `basic_bus::topology()`: topics (boxes) -> subscribers (ellipses) -> executors
/// (components), left to right, with live depths and rates. `before` is the previous
/// snapshot (null: rates over each subscriber's life).
inline std::string topology_dot(const bus_metrics& m, const bus_metrics* before) {
    char number[64];
    std::string out = "digraph herald {\n  rankdir=LR;\n  labelloc=t;\n  label=\"" + dot_escape(m.source) +
                      "\";\n  node [fontname=\"Helvetica\", fontsize=10];\n  edge [fontname=\"Helvetica\", "
                      "fontsize=9];\n";
    std::vector<const void*> pools;
    std::string pool_nodes;
    std::string edges;
    for (std::size_t t = 0; t < m.topics.size(); ++t) {
        const auto& topic = m.topics[t];
        const std::string topic_node = "t" + std::to_string(t);
        out += "  " + topic_node + " [shape=box, style=\"rounded,filled\", fillcolor=\"#e8f0fe\", label=\"" +
               dot_escape(topic.name) + "\\n" + std::to_string(topic.published) + " published\"];\n";
        const topic_metrics* old_topic = nullptr;
        if (before != nullptr) {
            for (const auto& o : before->topics) {
                old_topic = o.name == topic.name ? &o : old_topic;
            }
        }
        for (std::size_t i = 0; i < topic.subscribers.size(); ++i) {
            const auto& s = topic.subscribers[i];
            const subscriber_metrics* old = nullptr;
            if (old_topic != nullptr) {
                for (const auto& o : old_topic->subscribers) {
                    old = o.name == s.name ? &o : old;
                }
            }
            const double rate =
                delivery_rate(s, old, before != nullptr ? m.taken - before->taken : std::chrono::nanoseconds::zero());
            std::snprintf(number, sizeof number, "%.1f/s", rate);
            const std::string node = "s" + std::to_string(t) + "_" + std::to_string(i);
            const bool busy = s.stats.waiting > 0;
            std::string label = dot_escape(s.name) + "\\n";
            label += s.async ? s.ordering + ", waiting " + std::to_string(s.stats.waiting) + " (max " +
                                   std::to_string(s.stats.high_water) + ")"
                             : std::string("inline");
            label += "\\n" + std::string(number);
            if (s.stats.failed != 0) {
                label += ", " + std::to_string(s.stats.failed) + " failed";
            }
            out += "  " + node + " [shape=ellipse, style=filled, fillcolor=\"" + (busy ? "#fde2c8" : "#e6f4ea") +
                   "\", label=\"" + label + "\"];\n";
            edges += "  " + topic_node + " -> " + node + " [label=\"" + std::to_string(s.stats.accepted) + "\"];\n";
            if (s.async && s.pool_id != nullptr) {
                auto found = std::find(pools.begin(), pools.end(), s.pool_id);
                const auto index = static_cast<std::size_t>(found - pools.begin());
                if (found == pools.end()) {
                    pools.push_back(s.pool_id);
                    pool_nodes += "  p" + std::to_string(index) + " [shape=component, label=\"" + dot_escape(s.pool) +
                                  "\\n" + std::to_string(s.pool_threads) + " thread" +
                                  (s.pool_threads == 1 ? "" : "s") + "\"];\n";
                }
                edges += "  " + node + " -> p" + std::to_string(index) + " [style=dashed, arrowhead=none];\n";
            }
        }
    }
    return out + pool_nodes + edges + "}\n";
}

} // namespace herald::detail
