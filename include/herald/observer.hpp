// Hooks into a bus: what happens to every event, for users' own tracing and logging.
#pragma once

#include <herald/dead_letter.hpp>
#include <herald/detail/chrono.hpp>
#include <herald/envelope.hpp>
#include <herald/publish_result.hpp>

#include <cstdint>
#include <string_view>

namespace herald {

/// How a handler call ended.
enum class delivery_outcome : std::uint8_t {
    handled, ///< the handler returned normally (or acked)
    failed,  ///< the handler threw or returned a failure (a retry or dead letter may follow)
};

/// Why a delivery ended without a handler call (see `observer::on_drop`).
enum class drop_reason : std::uint8_t {
    dropped,   ///< `shutdown(herald::discard)`, or a full mailbox dropped it (`drop_newest`, `drop_oldest`)
    discarded, ///< the subscriber unsubscribed (or its tracked owner died) while it waited
    expired,   ///< its priority policy's time-to-live ran out while it waited
    refused,   ///< a full mailbox refused it (`overflow::reject`, or `block` that could not wait)
    conflated, ///< a newer event of the same key replaced it (`overflow::conflate`)
};

/// The readable names ("handled", "failed"; "dropped", "discarded", ...).
[[nodiscard]] constexpr std::string_view to_string(delivery_outcome outcome) noexcept {
    return outcome == delivery_outcome::handled ? "handled" : "failed";
}
[[nodiscard]] constexpr std::string_view to_string(drop_reason reason) noexcept {
    switch (reason) {
    case drop_reason::dropped:
        return "dropped";
    case drop_reason::discarded:
        return "discarded";
    case drop_reason::expired:
        return "expired";
    case drop_reason::refused:
        return "refused";
    case drop_reason::conflated:
        return "conflated";
    }
    return "unknown";
}

/// Watches a bus: override the calls you need (each does nothing by default) and pass the
/// observer in `bus_options::observers`. A bus without observers pays nothing for them.
///
/// Every call runs synchronously on the thread where the thing happened (the publisher,
/// the worker running the handler, the timer thread), possibly on many threads at once:
/// an observer must be thread-safe, and quick, since it delays the bus. The envelope is
/// valid only during the call (its event type is erased: read `topic()`, ids, times).
/// An exception thrown by a call is caught and counted in `bus_stats::observer_failures`.
/// While an observer call runs, the thread's other observer calls are skipped (an observer
/// that publishes does not observe itself), but anything it publishes is delivered as usual.
class observer {
public:
    virtual ~observer() = default;

    /// An event was accepted on its topic: called on the publishing thread once the inline
    /// handlers ran and the async subscribers' copies were queued. `began` is when the
    /// publish started (steady clock); `result` says what it did.
    virtual void on_publish(const envelope_base& event, const publish_result& result,
                            std::chrono::steady_clock::time_point began) {
        (void)event, (void)result, (void)began;
    }

    /// Subscriber `subscriber` is about to call its handler with `event`, on this thread.
    virtual void on_delivery_begin(std::string_view subscriber, const envelope_base& event) {
        (void)subscriber, (void)event;
    }

    /// That handler call ended (always paired with `on_delivery_begin` on the same thread).
    virtual void on_delivery_end(std::string_view subscriber, const envelope_base& event, delivery_outcome outcome) {
        (void)subscriber, (void)event, (void)outcome;
    }

    /// A delivery to `subscriber` ended without a handler call, for `reason`.
    virtual void on_drop(std::string_view subscriber, const envelope_base& event, drop_reason reason) {
        (void)subscriber, (void)event, (void)reason;
    }

    /// A failed delivery will be tried again after `delay` (at-least-once topics).
    virtual void on_retry(std::string_view subscriber, const envelope_base& event, std::chrono::nanoseconds delay) {
        (void)subscriber, (void)event, (void)delay;
    }

    /// A delivery to `subscriber` ended as a dead letter, for `reason`.
    virtual void on_dead_letter(std::string_view subscriber, const envelope_base& event, dead_letter_reason reason) {
        (void)subscriber, (void)event, (void)reason;
    }
};

} // namespace herald
