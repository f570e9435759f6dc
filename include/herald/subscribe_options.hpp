// How a subscription receives events: where its handler runs, in what order, which events.
#pragma once

#include <herald/detail/chrono.hpp>
#include <herald/envelope.hpp>
#include <herald/executor.hpp>
#include <herald/flow_control.hpp>
#include <herald/track.hpp>

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

namespace herald {

/// Where a subscriber's handler runs.
enum class delivery : std::uint8_t {
    async,     ///< on a worker of the subscriber's executor; `publish` only enqueues
    immediate, ///< in the publisher's thread, before `publish` returns
};

/// Handler runs in the publisher's thread before `publish` returns.
inline constexpr delivery inline_delivery = delivery::immediate;
/// Handler runs on a worker thread (the default).
inline constexpr delivery async_delivery = delivery::async;

/// How an async subscriber's handler calls may overlap.
enum class ordering : std::uint8_t {
    /// One call at a time; the events of one publishing thread arrive in publish order
    /// (the default).
    serial,
    /// Calls may run in parallel on every worker of the executor; no order is promised.
    concurrent,
    /// Events with equal keys (`subscribe_options::key`) are handled one at a time, in
    /// each publishing thread's order; events with different keys run in parallel on the
    /// executor's workers, so a slow key holds back only its own events.
    by_key,
};

/// A predicate choosing which events a subscriber receives. Accepts a callable taking
/// `const Event&` or `const envelope<Event>&` and returning something convertible to
/// `bool`. An empty filter accepts everything. Filters run on the publisher's thread,
/// so they must be cheap and thread-safe; a filter that throws counts as a failure of
/// the subscriber for that event.
template <class Event>
class filter {
public:
    /// Accepts every event.
    filter() = default;

    /// Wraps a predicate on the event or on its envelope.
    template <class F>
        requires(!std::same_as<std::remove_cvref_t<F>, filter> &&
                 (std::predicate<const F&, const envelope<Event>&> || std::predicate<const F&, const Event&>))
    filter(F predicate) // NOLINT(google-explicit-constructor): designated-initializer friendly
    {
        // Stored as a predicate on `envelope_base`, so that every topic shares one
        // std::function type (the downcast is safe: the bus passes only envelopes of
        // `Event` to this subscriber's filter).
        if constexpr (std::predicate<const F&, const envelope<Event>&>) {
            test_ = [p = std::move(predicate)](const envelope_base& env) {
                return static_cast<bool>(p(static_cast<const envelope<Event>&>(env)));
            };
            reads_envelope_ = true;
        } else {
            test_ = [p = std::move(predicate)](const envelope_base& env) {
                return static_cast<bool>(p(static_cast<const envelope<Event>&>(env).event()));
            };
        }
    }

    /// True when no predicate was given.
    [[nodiscard]] bool is_empty() const noexcept { return !test_; }
    /// True when the predicate takes the envelope (so it may read its metadata).
    [[nodiscard]] bool reads_envelope() const noexcept { return reads_envelope_; }
    /// Applies the predicate (true when empty).
    [[nodiscard]] bool operator()(const envelope<Event>& env) const { return !test_ || test_(env); }

private:
    std::function<bool(const envelope_base&)> test_;
    bool reads_envelope_ = false;
};

/// Settings for one subscription; every field has a sensible default, so pass only what
/// you need with designated initializers:
///
///     bus.subscribe<orders>(handler, {.name = "barista", .filter = is_coffee});
template <class Event>
struct subscribe_options {
    /// Shown in error reports and statistics. Default: "<topic>#<n>".
    std::string name{};
    /// Where the handler runs.
    delivery mode = delivery::async;
    /// Whether async handler calls may overlap.
    ordering order = ordering::serial;
    /// Which events to receive.
    herald::filter<Event> filter{};
    /// Objects whose lifetime bounds the subscription.
    tracked_objects track{};
    /// Executor for an async subscriber (a bulkhead: a slow subscriber on its own pool
    /// cannot starve others). Empty: the bus's default pool. The bus keeps it alive and
    /// stops it at shutdown.
    std::shared_ptr<executor> pool{};
    /// The most events that may wait for this async subscriber (see docs/flow-control.md):
    /// a number, `herald::unbounded`, or 0 for the bus's `bus_options::default_capacity`.
    std::size_t capacity = 0;
    /// What a full mailbox does with one more event.
    herald::overflow overflow = herald::overflow::block;
    /// With `overflow::block`: how long a publisher waits for room before the event is
    /// refused.
    std::chrono::nanoseconds block_timeout = std::chrono::seconds(1);
    /// The key of the events, for `ordering::by_key` and `overflow::conflate`.
    key_of<Event> key{};
};

} // namespace herald
