// Exports buses' metrics to Prometheus: a prometheus-cpp `Collectable` that reads
// `basic_bus::metrics()` on every scrape and turns it into counters, gauges and
// histograms named by Prometheus's conventions. Optional: needs prometheus-cpp (Debian
// prometheus-cpp-dev); link `herald::prometheus` (and `prometheus-cpp::pull` for its
// `Exposer`). See docs/observability.md.
#pragma once

#include <herald/bus.hpp>
#include <herald/flow_control.hpp>
#include <herald/metrics.hpp>
#include <herald/subscription.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <prometheus/client_metric.h>
#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>
#include <prometheus/metric_type.h>
#include <string>
#include <utility>
#include <vector>

namespace herald::prometheus {

/// The `le` bounds of `herald_handler_seconds` and `herald_wait_seconds` besides `+Inf`,
/// in nanoseconds: 2^k - 1 ns for k = 6, 10, ..., 34 (64 ns, 1 µs, 16 µs, 262 µs, 4.2 ms,
/// 67 ms, 1.07 s and 17.2 s, each less one nanosecond). herald times whole nanoseconds and
/// its histogram buckets split at every power of two, so each of these Prometheus buckets
/// is exact: it counts the calls that took at most its bound, no more and no fewer.
inline constexpr std::array<std::uint64_t, 8> histogram_bounds_ns = [] {
    std::array<std::uint64_t, 8> bounds{};
    for (std::size_t i = 0; i < bounds.size(); ++i) {
        bounds[i] = (std::uint64_t{1} << (6 + 4 * i)) - 1;
    }
    return bounds;
}();

namespace detail {

/// One bus a collector reads. It is attached to the bus as an extension, so the bus's
/// shutdown tells it to stop reading: it takes one last snapshot (the final counters) and
/// drops its way to the bus, waiting for a read in progress first. After that nothing
/// touches the bus again, however long the source lives. Thread-safe.
class bus_source final : public herald::detail::bus_extension {
public:
    /// `live` reads the bus; called only until `freeze()` or `forget()`.
    explicit bus_source(std::function<bus_metrics()> live) : live_(std::move(live)) {}

    /// The bus's metrics now; its final ones once it has shut down; nullopt when its
    /// collector is gone or the final snapshot could not be taken. Throws what
    /// `basic_bus::metrics()` throws (`std::bad_alloc`).
    [[nodiscard]] std::optional<bus_metrics> read() const {
        std::lock_guard lock(mutex_);
        if (live_) {
            return live_();
        }
        return final_;
    }

    /// Takes the final snapshot and stops reading the bus (idempotent).
    void freeze() noexcept {
        std::lock_guard lock(mutex_);
        if (!live_) {
            return;
        }
        try {
            final_ = live_();
        } catch (...) {
            final_.reset();
        }
        live_ = nullptr;
    }

    /// The collector is gone: stop reading, keep nothing (the bus still owns this object
    /// until it is destroyed, so it should be small).
    void forget() noexcept {
        std::lock_guard lock(mutex_);
        live_ = nullptr;
        final_.reset();
    }

    /// Nothing to finish: the source holds no events.
    void on_drain() noexcept override {}
    /// The bus is shutting down: take the final snapshot, then let go of the bus.
    void on_shutdown(bool /*drain*/) noexcept override { freeze(); }

private:
    mutable std::mutex mutex_;
    std::function<bus_metrics()> live_;
    std::optional<bus_metrics> final_;
};

/// A series' labels, in the order they are written.
using label_list = std::vector<::prometheus::ClientMetric::Label>;

/// A subscriber's numbers, summed over the subscribers one topic has under one name.
struct subscriber_row {
    label_list labels; ///< source, topic, subscriber
    bool async = false;
    bool bounded = true; ///< every mailbox summed here has a capacity
    bool timed = false;  ///< its bus keeps latency histograms
    subscription_stats stats;
    latency_histogram waited;
    latency_histogram handled;
};

/// A topic's numbers, summed over buses that share a source.
struct topic_row {
    label_list labels; ///< source, topic
    std::uint64_t published = 0;
    std::uint64_t dead_letters_stored = 0;
    std::size_t subscribers = 0;
};

/// A bus's totals, summed over buses that share a source.
struct bus_row {
    label_list labels; ///< source
    bus_stats totals;
};

/// Adds `more`'s counters and gauges to `into` (not `capacity`: the caller decides).
inline void add_to(subscription_stats& into, const subscription_stats& more) noexcept {
    into.accepted += more.accepted;
    into.delivered += more.delivered;
    into.failed += more.failed;
    into.discarded += more.discarded;
    into.dropped += more.dropped;
    into.rejected += more.rejected;
    into.conflated += more.conflated;
    into.retried += more.retried;
    into.dead_lettered += more.dead_lettered;
    into.expired += more.expired;
    into.waiting += more.waiting;
    into.high_water += more.high_water;
    into.blocked += more.blocked;
}

/// Rows in order of first appearance; equal label sets are summed into one row, since a
/// Prometheus exposition must not repeat a series.
template <class Row>
class row_table {
public:
    /// The row for `labels`, and whether it was just made.
    std::pair<Row&, bool> find_or_add(label_list labels) {
        const auto [where, added] = index_.try_emplace(labels, rows_.size());
        if (added) {
            rows_.push_back(Row{});
            rows_.back().labels = std::move(labels);
        }
        return {rows_[where->second], added};
    }
    [[nodiscard]] const std::vector<Row>& rows() const noexcept { return rows_; }

private:
    std::vector<Row> rows_;
    std::map<label_list, std::size_t> index_;
};

/// Nanoseconds as seconds, Prometheus's base unit.
inline double seconds(std::uint64_t ns) noexcept { return static_cast<double>(ns) / 1e9; }

/// A duration as seconds (negative ones as 0).
inline double seconds(std::chrono::nanoseconds ns) noexcept {
    return ns.count() < 0 ? 0.0 : seconds(static_cast<std::uint64_t>(ns.count()));
}

/// An empty family.
inline ::prometheus::MetricFamily family(std::string name, std::string help, ::prometheus::MetricType type) {
    ::prometheus::MetricFamily out;
    out.name = std::move(name);
    out.help = std::move(help);
    out.type = type;
    return out;
}

/// Appends a counter sample to `to`.
inline void add_counter(::prometheus::MetricFamily& to, label_list labels, double value) {
    ::prometheus::ClientMetric sample;
    sample.label = std::move(labels);
    sample.counter.value = value;
    to.metric.push_back(std::move(sample));
}

/// Appends a gauge sample to `to`.
inline void add_gauge(::prometheus::MetricFamily& to, label_list labels, double value) {
    ::prometheus::ClientMetric sample;
    sample.label = std::move(labels);
    sample.gauge.value = value;
    to.metric.push_back(std::move(sample));
}

/// `h` as a Prometheus histogram: the buckets of `histogram_bounds_ns`, then `+Inf`.
inline void add_histogram(::prometheus::MetricFamily& to, label_list labels, const latency_histogram& h) {
    ::prometheus::ClientMetric sample;
    sample.label = std::move(labels);
    sample.histogram.sample_count = h.count();
    sample.histogram.sample_sum = seconds(h.sum());
    sample.histogram.bucket.reserve(histogram_bounds_ns.size() + 1);
    for (const std::uint64_t bound : histogram_bounds_ns) {
        ::prometheus::ClientMetric::Bucket bucket;
        bucket.upper_bound = seconds(bound);
        bucket.cumulative_count = h.count_at_most(std::chrono::nanoseconds(static_cast<std::int64_t>(bound)));
        sample.histogram.bucket.push_back(bucket);
    }
    ::prometheus::ClientMetric::Bucket all;
    all.upper_bound = std::numeric_limits<double>::infinity();
    all.cumulative_count = h.count();
    sample.histogram.bucket.push_back(all);
    to.metric.push_back(std::move(sample));
}

/// `labels` and one more.
inline label_list with(label_list labels, std::string name, std::string value) {
    labels.push_back({std::move(name), std::move(value)});
    return labels;
}

/// The families of every metric in `snapshots` (families without samples left out).
inline std::vector<::prometheus::MetricFamily> families_of(const std::vector<bus_metrics>& snapshots) {
    using ::prometheus::MetricType;
    row_table<bus_row> buses;
    row_table<topic_row> topics;
    row_table<subscriber_row> subscribers;
    for (const auto& snapshot : snapshots) {
        auto [bus, bus_added] = buses.find_or_add({{"source", snapshot.source}});
        if (bus_added) {
            bus.totals = snapshot.totals;
        } else {
            bus.totals.rejected += snapshot.totals.rejected;
            bus.totals.error_handler_failures += snapshot.totals.error_handler_failures;
            bus.totals.observer_failures += snapshot.totals.observer_failures;
            bus.totals.dead_letters_evicted += snapshot.totals.dead_letters_evicted;
        }
        for (const auto& t : snapshot.topics) {
            auto& topic = topics.find_or_add({{"source", snapshot.source}, {"topic", t.name}}).first;
            topic.published += t.published;
            topic.dead_letters_stored += t.dead_letters_stored;
            topic.subscribers += t.subscribers.size();
            for (const auto& s : t.subscribers) {
                auto [row, added] = subscribers.find_or_add(with(topic.labels, "subscriber", s.name));
                if (added) {
                    row.async = s.async;
                    row.bounded = s.stats.capacity != unbounded;
                    row.timed = snapshot.sample_every != 0;
                    row.stats = s.stats;
                    row.waited = s.waited;
                    row.handled = s.handled;
                    continue;
                }
                row.async = row.async || s.async;
                row.bounded = row.bounded && s.stats.capacity != unbounded;
                row.timed = row.timed && snapshot.sample_every != 0;
                row.stats.capacity = row.bounded ? row.stats.capacity + s.stats.capacity : unbounded;
                add_to(row.stats, s.stats);
                row.waited += s.waited;
                row.handled += s.handled;
            }
        }
    }

    auto published = family("herald_published_total", "Events published on the topic.", MetricType::Counter);
    auto subscriber_count = family("herald_subscribers", "Current subscriptions to the topic.", MetricType::Gauge);
    auto dead_stored = family(
        "herald_dead_letters_stored",
        "Dead letters of the topic kept by the bus because nobody subscribed to its dead letters.", MetricType::Gauge);
    for (const auto& topic : topics.rows()) {
        add_counter(published, topic.labels, static_cast<double>(topic.published));
        add_gauge(subscriber_count, topic.labels, static_cast<double>(topic.subscribers));
        add_gauge(dead_stored, topic.labels, static_cast<double>(topic.dead_letters_stored));
    }

    auto deliveries = family("herald_deliveries_total",
                             "Deliveries to the subscriber that ended, by outcome (an accepted event ends in "
                             "exactly one outcome; failed counts each failed attempt).",
                             MetricType::Counter);
    auto accepted = family("herald_accepted_total", "Events the subscriber's filter let through (all without one).",
                           MetricType::Counter);
    auto retries = family("herald_retries_total", "Retries scheduled after failed deliveries (at-least-once topics).",
                          MetricType::Counter);
    auto depth = family("herald_mailbox_depth",
                        "Events in the async subscriber's mailbox, counting the batch its worker is handling.",
                        MetricType::Gauge);
    auto high_water = family("herald_mailbox_high_water",
                             "The most events that waited in the subscriber's mailbox at once.", MetricType::Gauge);
    auto capacity =
        family("herald_mailbox_capacity",
               "Capacity of the subscriber's bounded mailbox (no sample for an unbounded one).", MetricType::Gauge);
    auto blocked = family("herald_blocked_seconds_total",
                          "Time publishers spent blocked on the subscriber's full mailbox (overflow::block).",
                          MetricType::Counter);
    auto handled = family("herald_handler_seconds",
                          "Time in the subscriber's handler, for the sampled calls (one in "
                          "latency_sample_every; see the deliveries for every call).",
                          MetricType::Histogram);
    auto waited = family("herald_wait_seconds",
                         "Time from publish to the start of the handler call, for the sampled first attempts of "
                         "an async subscriber.",
                         MetricType::Histogram);
    for (const auto& row : subscribers.rows()) {
        const auto& s = row.stats;
        const std::pair<const char*, std::uint64_t> outcomes[] = {
            {"delivered", s.delivered},         {"failed", s.failed},
            {"discarded", s.discarded},         {"dropped", s.dropped},
            {"rejected", s.rejected},           {"conflated", s.conflated},
            {"dead_lettered", s.dead_lettered}, {"expired", s.expired}};
        for (const auto& [outcome, count] : outcomes) {
            add_counter(deliveries, with(row.labels, "outcome", outcome), static_cast<double>(count));
        }
        add_counter(accepted, row.labels, static_cast<double>(s.accepted));
        add_counter(retries, row.labels, static_cast<double>(s.retried));
        if (row.async) {
            add_gauge(depth, row.labels, static_cast<double>(s.waiting));
            add_gauge(high_water, row.labels, static_cast<double>(s.high_water));
            if (row.bounded) {
                add_gauge(capacity, row.labels, static_cast<double>(s.capacity));
            }
            add_counter(blocked, row.labels, seconds(s.blocked));
        }
        if (row.timed) {
            add_histogram(handled, row.labels, row.handled);
            if (row.async) {
                add_histogram(waited, row.labels, row.waited);
            }
        }
    }

    auto rejected = family("herald_rejected_publishes_total", "Publishes refused because the bus was stopping.",
                           MetricType::Counter);
    auto error_handler = family("herald_error_handler_failures_total", "Times the bus's error handler itself threw.",
                                MetricType::Counter);
    auto observer =
        family("herald_observer_failures_total", "Calls of the bus's observers that threw.", MetricType::Counter);
    auto evicted = family("herald_dead_letters_evicted_total",
                          "Dead letters a full store dropped (oldest first) to make room.", MetricType::Counter);
    for (const auto& bus : buses.rows()) {
        add_counter(rejected, bus.labels, static_cast<double>(bus.totals.rejected));
        add_counter(error_handler, bus.labels, static_cast<double>(bus.totals.error_handler_failures));
        add_counter(observer, bus.labels, static_cast<double>(bus.totals.observer_failures));
        add_counter(evicted, bus.labels, static_cast<double>(bus.totals.dead_letters_evicted));
    }

    std::vector<::prometheus::MetricFamily> out;
    for (auto* f : {&published, &subscriber_count, &dead_stored, &deliveries, &accepted, &retries, &depth, &high_water,
                    &capacity, &blocked, &handled, &waited, &rejected, &error_handler, &observer, &evicted}) {
        if (!f->metric.empty()) {
            out.push_back(std::move(*f));
        }
    }
    return out;
}

} // namespace detail

/// A prometheus-cpp `Collectable` that exports one or more buses: register it with a
/// `prometheus::Exposer` (or anything that collects `Collectable`s), and every scrape
/// reads `basic_bus::metrics()` afresh; nothing is cached or counted twice.
///
///     auto metrics = herald::prometheus::collector::attach(bus);
///     exposer.RegisterCollectable(metrics);
///
/// Lifetimes: either may end first. When a bus shuts down (explicitly or in its
/// destructor), its collector takes a final snapshot and never touches that bus again:
/// later scrapes report the bus's final values, and a scrape running at that moment
/// finishes first (the shutdown waits for it). Destroying the collector (the last
/// `shared_ptr`; the `Exposer` holds only a `weak_ptr`) ends the export; the bus keeps
/// only a small detached record until it is destroyed. Thread safety: every member may be
/// called from any thread, concurrently with scrapes and with the buses' work.
class collector final : public ::prometheus::Collectable {
    struct private_tag {};

public:
    /// A collector that exports `bus`; attach it before the bus shuts down (one attached
    /// later reports the bus's counters as they were when it was attached). Cold path:
    /// allocates, takes the bus's registry lock once.
    template <class Traits>
    [[nodiscard]] static std::shared_ptr<collector> attach(basic_bus<Traits>& bus) {
        auto out = std::make_shared<collector>(private_tag{});
        out->add(bus);
        return out;
    }

    /// Exports another bus through this collector as well: one set of families, the
    /// buses told apart by their `source` label (buses that share a source are summed).
    /// Same rules as `attach`.
    template <class Traits>
    void add(basic_bus<Traits>& bus) {
        const basic_bus<Traits>* const live = &bus;
        auto source = std::make_shared<detail::bus_source>([live] { return live->metrics(); });
        herald::detail::bus_access::attach(bus, source);
        // A shutdown that had already collected the bus's extensions will not call this
        // one: since it set the stop flag before, it is visible here, and the bus is
        // alive during this call, so the final snapshot can be taken now.
        if (bus.is_stopped()) {
            source->freeze();
        }
        std::lock_guard lock(mutex_);
        sources_.push_back(std::move(source));
    }

    /// Use `attach`.
    explicit collector(private_tag /*only attach makes collectors*/) {}
    collector(const collector&) = delete;
    collector& operator=(const collector&) = delete;

    /// Detaches from every bus (no bus is read after this returns; a read in progress
    /// finishes first).
    ~collector() override {
        for (const auto& source : sources_) {
            source->forget();
        }
    }

    /// The families of every attached bus (see docs/observability.md for the names),
    /// called by prometheus-cpp on each scrape from its server threads. Overlapping calls
    /// are fine. Cold path: reads each bus's `metrics()` (locks, allocations). Never
    /// throws: a bus whose snapshot cannot be taken is left out of this scrape (and
    /// everything, should building the result itself run out of memory).
    [[nodiscard]] std::vector<::prometheus::MetricFamily> Collect() const override {
        try {
            std::vector<std::shared_ptr<detail::bus_source>> sources;
            {
                std::lock_guard lock(mutex_);
                sources = sources_;
            }
            std::vector<bus_metrics> snapshots;
            snapshots.reserve(sources.size());
            for (const auto& source : sources) {
                try {
                    if (auto snapshot = source->read()) {
                        snapshots.push_back(std::move(*snapshot));
                    }
                } catch (...) {
                    // Left out of this scrape; the next one tries again.
                }
            }
            return detail::families_of(snapshots);
        } catch (...) {
            return {};
        }
    }

private:
    mutable std::mutex mutex_;
    std::vector<std::shared_ptr<detail::bus_source>> sources_;
};

} // namespace herald::prometheus
