// The at-least-once policy: failed deliveries are retried after a backoff, then dead-lettered.
#pragma once

#include <herald/policy/backoff.hpp>
#include <herald/policy/delivery_policy.hpp>

#include <cstdint>
#include <exception>

namespace herald {

/// How many times one subscriber may be given one event, counting the first delivery.
template <std::uint32_t Attempts>
struct max_attempts {
    static_assert(Attempts >= 1, "herald::max_attempts: at least one attempt");
    static_assert(Attempts <= 65535, "herald::max_attempts: at most 65535 attempts");
    static constexpr std::uint32_t value = Attempts;
};

namespace detail {
template <class T>
inline constexpr bool is_max_attempts = false;
template <std::uint32_t N>
inline constexpr bool is_max_attempts<max_attempts<N>> = true;
} // namespace detail

/// At least once, per subscriber. A handler fails by throwing or by returning
/// `herald::nack(...)`, `herald::retry_after(d)` or `herald::reject(...)`. A failed event
/// is given again to that subscriber only (other subscribers are not affected), with
/// `envelope::attempt()` one higher, after the `Backoff` delay (or the delay
/// `retry_after` asked for). The wait is a timer: no worker thread is blocked and other
/// events keep flowing. After `Attempts` failures, or at once on `reject`, the event goes
/// to the topic's dead-letter topic (`herald::dead_letter_topic<Topic>`).
///
/// A retried event is redelivered after events published later: retries do not keep the
/// publish order. Every accepted event ends, for every subscriber that accepted it, in
/// exactly one outcome: handled, dead-lettered, or discarded because the subscriber left.
///
/// Customise by deriving and hiding `should_retry` (see `examples/custom_policy.cpp`).
template <class Attempts = max_attempts<5>, class Backoff = exponential_backoff<delay::ms(100), delay::s(10)>>
struct at_least_once {
    static_assert(detail::is_max_attempts<Attempts>,
                  "herald::at_least_once<Attempts, Backoff>: Attempts must be herald::max_attempts<N>");
    static_assert(backoff_schedule<Backoff>,
                  "herald::at_least_once<Attempts, Backoff>: Backoff must be a backoff schedule "
                  "(herald::fixed_backoff, exponential_backoff, jittered_backoff or backoff_list)");
    static_assert(Backoff::length + 1 <= Attempts::value,
                  "herald::at_least_once<Attempts, Backoff>: the backoff list has more delays than there are "
                  "retries (max_attempts - 1)");

    static constexpr delivery_guarantee guarantee = delivery_guarantee::at_least_once;
    /// Deliveries of one event to one subscriber, the first included.
    static constexpr std::uint32_t attempts = Attempts::value;
    using backoff_type = Backoff;

    /// The wait before attempt `retry + 1`.
    [[nodiscard]] static constexpr std::chrono::nanoseconds backoff(std::uint32_t retry,
                                                                    std::uint64_t random) noexcept {
        return Backoff::delay_before(retry, random);
    }

    /// Whether a thrown exception deserves another attempt; false sends the event straight
    /// to the dead letters. Every exception is retried by default.
    [[nodiscard]] static bool should_retry(const std::exception_ptr& /*error*/) noexcept { return true; }
};

} // namespace herald
