// Backoff schedules for retrying policies: fixed, exponential, jittered, or a list.
#pragma once

#include <herald/detail/chrono.hpp>

#include <algorithm>
#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>

namespace herald {

namespace detail {
/// `count * unit` (unit > 0), clamped to the range of std::int64_t instead of
/// overflowing, so that a delay too large for 64-bit nanoseconds (about 292 years)
/// becomes the largest one rather than undefined behaviour or a puzzling compile error.
[[nodiscard]] constexpr std::int64_t saturating_scale(std::int64_t count, std::int64_t unit) noexcept {
    constexpr std::int64_t most = std::numeric_limits<std::int64_t>::max();
    constexpr std::int64_t least = std::numeric_limits<std::int64_t>::min();
    if (count > most / unit) {
        return most;
    }
    if (count < least / unit) {
        return least;
    }
    return count * unit;
}
} // namespace detail

/// A delay that can be a template argument (std::chrono durations cannot):
/// `herald::delay::ms(250)`, `herald::delay::us(50)`, `herald::delay::s(2)`.
/// Delays saturate: one longer than `std::chrono::nanoseconds::max()` (about 292 years)
/// is that maximum. As a retry delay it lasts until the clock's end, i.e. until shutdown.
struct delay {
    std::int64_t nanoseconds = 0;

    [[nodiscard]] static constexpr delay ns(std::int64_t n) noexcept { return delay{n}; }
    [[nodiscard]] static constexpr delay us(std::int64_t n) noexcept {
        return delay{detail::saturating_scale(n, 1000)};
    }
    [[nodiscard]] static constexpr delay ms(std::int64_t n) noexcept {
        return delay{detail::saturating_scale(n, 1000 * 1000)};
    }
    [[nodiscard]] static constexpr delay s(std::int64_t n) noexcept {
        return delay{detail::saturating_scale(n, 1000 * 1000 * 1000)};
    }

    /// As a std::chrono duration.
    [[nodiscard]] constexpr std::chrono::nanoseconds duration() const noexcept {
        return std::chrono::nanoseconds(nanoseconds);
    }
};

/// A backoff schedule: `delay_before(retry, random)` is the wait before retry number
/// `retry` (1 = the second attempt), given 64 random bits (used only by jittered
/// schedules). `length` is the number of distinct delays a list defines (0: unbounded),
/// checked against the attempt limit at compile time.
template <class B>
concept backoff_schedule = requires(std::uint32_t retry, std::uint64_t random) {
    { B::delay_before(retry, random) }
    noexcept->std::same_as<std::chrono::nanoseconds>;
    { B::length } -> std::convertible_to<std::size_t>;
};

/// The same wait before every retry.
template <delay Wait>
struct fixed_backoff {
    static_assert(Wait.nanoseconds >= 0, "herald::fixed_backoff: the delay must not be negative");
    static constexpr std::size_t length = 0;
    [[nodiscard]] static constexpr std::chrono::nanoseconds delay_before(std::uint32_t /*retry*/,
                                                                         std::uint64_t /*random*/) noexcept {
        return Wait.duration();
    }
};

namespace detail {
/// `initial * factor^(retry-1)`, saturating at `cap`.
constexpr std::int64_t grown_delay(std::int64_t initial, std::int64_t cap, std::uint32_t factor,
                                   std::uint32_t retry) noexcept {
    std::int64_t wait = initial;
    for (std::uint32_t i = 1; i < retry && wait < cap; ++i) {
        wait = wait > cap / static_cast<std::int64_t>(factor) ? cap : wait * static_cast<std::int64_t>(factor);
    }
    return std::min(wait, cap);
}
} // namespace detail

/// `Initial`, then multiplied by `Factor` before each further retry, never above `Cap`.
template <delay Initial, delay Cap, std::uint32_t Factor = 2>
struct exponential_backoff {
    static_assert(Initial.nanoseconds >= 0 && Initial.nanoseconds <= Cap.nanoseconds,
                  "herald::exponential_backoff: need 0 <= Initial <= Cap");
    static_assert(Factor >= 1, "herald::exponential_backoff: Factor must be at least 1");
    static constexpr std::size_t length = 0;
    [[nodiscard]] static constexpr std::chrono::nanoseconds delay_before(std::uint32_t retry,
                                                                         std::uint64_t /*random*/) noexcept {
        return std::chrono::nanoseconds(detail::grown_delay(Initial.nanoseconds, Cap.nanoseconds, Factor, retry));
    }
};

/// "Full jitter": a uniformly random wait in [0, min(Cap, Initial * 2^(retry-1))], which
/// spreads out the retries of many failing events (AWS's recommendation).
template <delay Initial, delay Cap>
struct jittered_backoff {
    static_assert(Initial.nanoseconds >= 0 && Initial.nanoseconds <= Cap.nanoseconds,
                  "herald::jittered_backoff: need 0 <= Initial <= Cap");
    static constexpr std::size_t length = 0;
    [[nodiscard]] static constexpr std::chrono::nanoseconds delay_before(std::uint32_t retry,
                                                                         std::uint64_t random) noexcept {
        const auto ceiling =
            static_cast<std::uint64_t>(detail::grown_delay(Initial.nanoseconds, Cap.nanoseconds, 2, retry));
        return std::chrono::nanoseconds(static_cast<std::int64_t>(random % (ceiling + 1)));
    }
};

/// An explicit list: the first delay before the first retry, and so on; the last delay
/// repeats. A list longer than the policy's number of retries is a compile error
/// (as NATS JetStream rejects a BackOff longer than MaxDeliver).
template <delay... Waits>
struct backoff_list {
    static_assert(sizeof...(Waits) > 0, "herald::backoff_list: give at least one delay");
    static_assert(((Waits.nanoseconds >= 0) && ...), "herald::backoff_list: delays must not be negative");
    static constexpr std::size_t length = sizeof...(Waits);
    [[nodiscard]] static constexpr std::chrono::nanoseconds delay_before(std::uint32_t retry,
                                                                         std::uint64_t /*random*/) noexcept {
        constexpr std::array<std::int64_t, sizeof...(Waits)> waits{Waits.nanoseconds...};
        const std::size_t index = std::min<std::size_t>(retry == 0 ? 0 : retry - 1, waits.size() - 1);
        return std::chrono::nanoseconds(waits[index]);
    }
};

} // namespace herald
