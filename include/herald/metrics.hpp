// What a bus can tell about itself: latency histograms, and a snapshot of every topic and
// subscriber with its counters, gauges and histograms (`basic_bus::metrics()`).
#pragma once

#include <herald/detail/chrono.hpp>

#include <array>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace herald {

namespace detail {
struct latency_access;
} // namespace detail

/// A latency histogram with log-linear buckets: exact below 8 ns, then four buckets per
/// power of two (each at most 25 % wider than the values it starts at, so a quantile read
/// from it is within 25 % of the true value), up to 2^43 ns (about 2.4 hours; longer
/// times land in the last bucket). A value type: a snapshot, copied out of the live cells
/// the workers write (see `basic_bus::metrics()`).
class latency_histogram {
public:
    /// Number of buckets.
    static constexpr std::size_t bucket_count = 8 + 4 * 40;

    /// The bucket that holds `ns` nanoseconds.
    [[nodiscard]] static constexpr std::size_t bucket_of(std::uint64_t ns) noexcept {
        if (ns < 8) {
            return static_cast<std::size_t>(ns);
        }
        const auto power = static_cast<std::size_t>(std::bit_width(ns) - 1); // >= 3
        const auto quarter = static_cast<std::size_t>((ns >> (power - 2)) & 3U);
        const std::size_t index = 8 + (power - 3) * 4 + quarter;
        return index < bucket_count ? index : bucket_count - 1;
    }

    /// The largest value (in ns) bucket `index` holds; the last bucket holds everything
    /// above its predecessor, and says so with UINT64_MAX.
    [[nodiscard]] static constexpr std::uint64_t upper_bound(std::size_t index) noexcept {
        if (index < 8) {
            return index;
        }
        if (index + 1 >= bucket_count) {
            return UINT64_MAX;
        }
        const std::size_t power = 3 + (index - 8) / 4;
        const std::uint64_t quarter = (index - 8) % 4;
        return ((std::uint64_t{4} + quarter + 1) << (power - 2)) - 1;
    }

    /// How many values were recorded.
    [[nodiscard]] std::uint64_t count() const noexcept { return count_; }
    /// The sum of the recorded values.
    [[nodiscard]] std::chrono::nanoseconds sum() const noexcept {
        return std::chrono::nanoseconds(static_cast<std::int64_t>(sum_ns_));
    }
    /// Values recorded in bucket `index`.
    [[nodiscard]] std::uint64_t in_bucket(std::size_t index) const noexcept {
        return index < bucket_count ? buckets_[index] : 0;
    }
    /// Values recorded that were at most `bound` (exact when `bound` + 1 ns is a power of
    /// two at or above 8 ns, or below 8 ns; otherwise the buckets wholly at or under it).
    [[nodiscard]] std::uint64_t count_at_most(std::chrono::nanoseconds bound) const noexcept {
        if (bound.count() < 0) {
            return 0;
        }
        const auto limit = static_cast<std::uint64_t>(bound.count());
        std::uint64_t total = 0;
        for (std::size_t i = 0; i < bucket_count && upper_bound(i) <= limit; ++i) {
            total += buckets_[i];
        }
        return total;
    }
    /// The value at quantile `q` (0..1): the upper bound of the bucket where that rank
    /// falls (so p50 = 0.5). Zero for an empty histogram.
    [[nodiscard]] std::chrono::nanoseconds quantile(double q) const noexcept {
        if (count_ == 0) {
            return std::chrono::nanoseconds::zero();
        }
        q = q < 0 ? 0 : (q > 1 ? 1 : q);
        auto rank = static_cast<std::uint64_t>(q * static_cast<double>(count_));
        rank = rank == 0 ? 1 : (rank > count_ ? count_ : rank);
        std::uint64_t seen = 0;
        for (std::size_t i = 0; i < bucket_count; ++i) {
            seen += buckets_[i];
            if (seen >= rank) {
                const std::uint64_t top = upper_bound(i) == UINT64_MAX ? upper_bound(i - 1) + 1 : upper_bound(i);
                return std::chrono::nanoseconds(static_cast<std::int64_t>(top));
            }
        }
        return std::chrono::nanoseconds::zero();
    }

    /// Adds another histogram's values to this one.
    latency_histogram& operator+=(const latency_histogram& more) noexcept {
        for (std::size_t i = 0; i < bucket_count; ++i) {
            buckets_[i] += more.buckets_[i];
        }
        count_ += more.count_;
        sum_ns_ += more.sum_ns_;
        return *this;
    }

private:
    friend struct detail::latency_access;
    std::array<std::uint64_t, bucket_count> buckets_{};
    std::uint64_t count_ = 0;
    std::uint64_t sum_ns_ = 0;
};

namespace detail {
/// herald's back door into a histogram (the live cells fill snapshots through it).
struct latency_access {
    static void set(latency_histogram& h, std::size_t index, std::uint64_t value) noexcept {
        h.buckets_[index] = value;
        h.count_ += value;
    }
    static void set_sum(latency_histogram& h, std::uint64_t ns) noexcept { h.sum_ns_ = ns; }
};

/// The live side of a latency histogram: lock-free cells that any thread may record into
/// (relaxed atomic additions; one cache line per eight buckets), read into a
/// `latency_histogram` snapshot. A snapshot taken while values are recorded may miss the
/// newest ones, never counts one twice.
class latency_cells {
public:
    void record(std::chrono::nanoseconds took) noexcept {
        const std::uint64_t ns = took.count() < 0 ? 0 : static_cast<std::uint64_t>(took.count());
        buckets_[latency_histogram::bucket_of(ns)].fetch_add(1, std::memory_order_relaxed);
        sum_ns_.fetch_add(ns, std::memory_order_relaxed);
    }

    [[nodiscard]] latency_histogram snapshot() const noexcept {
        latency_histogram out;
        for (std::size_t i = 0; i < latency_histogram::bucket_count; ++i) {
            latency_access::set(out, i, buckets_[i].load(std::memory_order_relaxed));
        }
        latency_access::set_sum(out, sum_ns_.load(std::memory_order_relaxed));
        return out;
    }

private:
    std::array<std::atomic<std::uint64_t>, latency_histogram::bucket_count> buckets_{};
    std::atomic<std::uint64_t> sum_ns_{0};
};

/// A subscriber's two histograms: time waiting in its mailbox, time in its handler.
struct subscriber_latencies {
    latency_cells waited;
    latency_cells handled;
};
} // namespace detail

/// What one subscription has done so far, and its mailbox now.
///
/// Every event the subscription accepted (its filter let it through) ends in exactly one
/// of `delivered`, `failed`, `dropped`, `rejected`, `conflated`, `dead_lettered`,
/// `discarded` or `expired`, or still waits (`waiting`, or a retry on its timer): on a
/// fire-and-forget topic, once the bus is drained, `accepted` is their sum. On an
/// at-least-once topic `failed` counts failed attempts, and an event that finally fails
/// ends in `dead_lettered`.
struct subscription_stats {
    std::uint64_t accepted = 0;  ///< events its filter let through (all of them without a filter)
    std::uint64_t delivered = 0; ///< handler calls that returned normally
    std::uint64_t failed = 0;    ///< handler (or filter) calls that threw or returned a failure
    std::uint64_t discarded = 0; ///< queued events dropped because it had unsubscribed
    /// Events dropped by `shutdown(herald::discard)`, or by a full mailbox
    /// (`overflow::drop_oldest`, `drop_newest`, or a new key of a full conflating one).
    std::uint64_t dropped = 0;
    /// Events a full mailbox refused (`overflow::reject`, or `block` that timed out or
    /// was called from inside a handler).
    std::uint64_t rejected = 0;
    std::uint64_t conflated = 0;     ///< waiting events replaced by a newer one of the same key
    std::uint64_t retried = 0;       ///< retries scheduled after failures (at-least-once topics)
    std::uint64_t dead_lettered = 0; ///< events that ended as dead letters (failures, expiry, overflow)
    std::uint64_t expired = 0;       ///< queued events whose time-to-live ran out (priority topics)
    /// Events waiting in its mailbox now (async subscribers; 0 once it is disconnected).
    std::size_t waiting = 0;
    /// Its mailbox's capacity (`herald::unbounded` without a bound; 0 for inline ones).
    std::size_t capacity = 0;
    /// The most events that waited at once (exact for bounded mailboxes; for unbounded
    /// ones, the largest backlog the subscriber found when it started a batch).
    std::size_t high_water = 0;
    /// Time publishers spent blocked on its full mailbox (`overflow::block`), all together.
    std::chrono::nanoseconds blocked{0};
};

/// Totals over the bus's life; each field is read atomically, the set is not a snapshot.
struct bus_stats {
    std::uint64_t published = 0; ///< events accepted
    std::uint64_t rejected = 0;  ///< publishes refused because the bus was stopping
    std::uint64_t delivered = 0; ///< handler calls that returned normally
    /// Failed deliveries: the handler threw or returned a failure, the filter threw, the
    /// subscriber's copy of the event could not be made, or its executor refused the work.
    std::uint64_t failed = 0;
    std::uint64_t discarded = 0; ///< deliveries dropped because the subscriber left or its owner died
    /// Deliveries dropped by `shutdown(discard)` or by full mailboxes (`overflow::drop_oldest`,
    /// `drop_newest`).
    std::uint64_t dropped = 0;
    std::uint64_t refused = 0;                ///< deliveries full mailboxes refused (`overflow::reject`, `block`)
    std::uint64_t conflated = 0;              ///< waiting events replaced by newer ones of their key
    std::uint64_t error_handler_failures = 0; ///< times the error handler itself threw
    std::uint64_t observer_failures = 0;      ///< calls of an observer (`bus_options::observers`) that threw
    std::uint64_t retried = 0;                ///< retries scheduled (at-least-once topics)
    std::uint64_t dead_lettered = 0;          ///< deliveries that ended as dead letters
    std::uint64_t expired = 0;                ///< queued deliveries whose time-to-live ran out
    std::uint64_t dead_letters_stored = 0;    ///< dead letters now in the stores (nobody subscribed)
    std::uint64_t dead_letters_evicted = 0;   ///< dead letters a full store dropped (oldest first)
    std::size_t topics = 0;                   ///< topics used so far
    std::size_t subscribers = 0;              ///< current subscriptions
};

/// One subscriber in a `bus_metrics` snapshot.
struct subscriber_metrics {
    std::string name;              ///< the subscription's name
    bool async = true;             ///< false for inline (`delivery::immediate`) subscribers
    std::string ordering;          ///< "serial", "concurrent" or "by_key" (async only)
    std::string pool;              ///< the executor's label (async only; inline: empty)
    std::size_t pool_threads = 0;  ///< its executor's concurrency (async only)
    const void* pool_id = nullptr; ///< identifies the executor (equal for subscribers sharing one)
    subscription_stats stats;      ///< counters and gauges, as `subscription::stats()`
    /// Time from publish to the start of the handler call, for the sampled events of an
    /// async subscriber (first attempts only; retries wait for their backoff on purpose).
    latency_histogram waited;
    /// Time in the handler (and the filter's second look, if any), for the sampled calls.
    latency_histogram handled;
    /// Time since the subscription was made.
    std::chrono::nanoseconds age{0};
};

/// One topic in a `bus_metrics` snapshot.
struct topic_metrics {
    std::string name;                            ///< the topic's name (CloudEvents `type`)
    std::uint64_t published = 0;                 ///< events published on it (its last sequence number)
    std::uint64_t dead_letters_stored = 0;       ///< dead letters kept because nobody subscribed
    std::vector<subscriber_metrics> subscribers; ///< current subscribers, in delivery order
};

/// A snapshot of a bus (`basic_bus::metrics()`): cold path, takes locks and allocates.
/// Counters are read one by one while the bus runs, so the set is not atomic.
struct bus_metrics {
    std::string source; ///< the bus's CloudEvents `source`
    bus_stats totals;   ///< `basic_bus::stats()`
    /// 0 when the bus's traits disable latency metrics; otherwise one event in this many
    /// is timed (`Traits::latency_sample_every`).
    std::uint32_t sample_every = 0;
    std::vector<topic_metrics> topics; ///< every topic used so far, in order of first use
    /// When the snapshot was taken (steady clock), for rates between two snapshots.
    std::chrono::steady_clock::time_point taken{};
};

} // namespace herald
