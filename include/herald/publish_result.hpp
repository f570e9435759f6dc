// The result of a publish: accepted or rejected, and what happened to inline handlers.
#pragma once

#include <herald/envelope.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace herald {

/// Whether the bus took an event.
enum class publish_status : std::uint8_t {
    accepted, ///< assigned an id and handed to every matching subscriber
    stopped,  ///< rejected: the bus is shutting down or shut down; nobody saw the event
};

/// The readable name of a status ("accepted", "stopped").
[[nodiscard]] constexpr std::string_view to_string(publish_status status) noexcept {
    switch (status) {
    case publish_status::accepted:
        return "accepted";
    case publish_status::stopped:
        return "stopped";
    }
    return "unknown";
}

/// Per-publish settings; every field has a default, so pass only what you need:
/// `bus.publish<alerts>(a, {.priority = 2})`.
struct publish_options {
    /// The chain's id (CloudEvents extension `correlationid`, the W3C trace-id). Nil: a
    /// publish inside a handler inherits the handled event's `trace_id()` (and its
    /// `sampled` flag); anywhere else the event starts a chain.
    event_id correlation{};
    /// The span id of the event (or outside operation) that caused this one. 0: a publish
    /// inside a handler gets the handled event's `span_id()`; elsewhere none.
    std::uint64_t causation = 0;
    /// The W3C `sampled` trace flag, used when `correlation` is given or nothing is
    /// inherited (see `trace_context` to continue a trace that arrived from outside).
    bool sampled = true;
    /// Keep this id instead of assigning a fresh one (nil: assign). For re-publishing an
    /// event that already has an id, so idempotent consumers recognise it.
    event_id id{};
    /// Priority level on a `herald::priority<Levels>` topic: 0 (lowest, the default) to
    /// `Levels - 1`. Anything else, or a non-zero level on another topic, makes `publish`
    /// throw `herald::usage_error`.
    std::uint8_t priority = 0;
};

/// What `publish` did. Cheap to return; nothing is thrown on the publish path. Converts
/// to `true` when the event was accepted.
///
/// Not `[[nodiscard]]`: a producer publishes a fact and moves on, and most never look
/// at the result. Nothing it reports is lost when it is ignored: a publish refused by a
/// stopped bus is counted in `bus_stats::rejected`, and a delivery that failed is
/// counted in `bus_stats::failed` and reported to the error handler.
struct publish_result {
    publish_status status = publish_status::stopped;
    event_id id{};                     ///< the event's id (nil when rejected)
    std::uint64_t sequence = 0;        ///< the event's sequence on its topic (0 when rejected)
    std::uint32_t queued = 0;          ///< async subscribers it was queued for
    std::uint32_t handled_inline = 0;  ///< inline handlers that ran and returned normally
    std::uint32_t failed_inline = 0;   ///< inline handlers that failed (reported, counted)
    std::uint32_t retrying_inline = 0; ///< of those, how many will be retried (at-least-once topics)
    /// Async subscribers the event could not be queued for because making their copy
    /// threw (a throwing copy constructor, `std::bad_alloc`): each is reported to the
    /// error handler and counted as a failed delivery of that subscriber.
    std::uint32_t failed_to_queue = 0;
    /// Async subscribers whose full mailbox refused the event (`overflow::reject`, or
    /// `overflow::block` that timed out or could not wait); they never see it.
    std::uint32_t refused = 0;
    /// Async subscribers whose full mailbox dropped the event (`overflow::drop_newest`)
    /// or made it a dead letter (`overflow::dead_letter`).
    std::uint32_t overflowed = 0;
    /// The names of the subscribers that refused it (filled only when some did).
    std::vector<std::string> refused_by{};

    /// True when the bus accepted the event.
    [[nodiscard]] constexpr bool accepted() const noexcept { return status == publish_status::accepted; }
    /// True when the bus accepted the event.
    constexpr explicit operator bool() const noexcept { return accepted(); }
};

} // namespace herald
