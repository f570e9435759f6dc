// The priority policy: levels served highest first, with optional aging and expiry.
#pragma once

#include <herald/policy/at_least_once.hpp>
#include <herald/policy/backoff.hpp>
#include <herald/policy/delivery_policy.hpp>
#include <herald/policy/fire_and_forget.hpp>

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace herald {

/// Priority option: an event below the top level that has waited longer than `Bound` is
/// served before every higher level (oldest first among such events), so low levels
/// cannot starve: under a steady overload of higher levels a low event waits about
/// `Bound` plus one handler call.
template <delay Bound>
struct aging {
    static_assert(Bound.nanoseconds > 0, "herald::aging<Bound>: Bound must be positive");
    static constexpr delay bound = Bound;
};

/// What happens to an event whose time-to-live ran out while it waited.
enum class on_expiry : std::uint8_t {
    drop,        ///< dropped and counted (`subscription_stats::expired`, `bus_stats::expired`)
    dead_letter, ///< sent to the dead-letter topic with reason `expired`
};

/// Priority option: an event still waiting `TTL` after it was published is not delivered
/// to that subscriber; `Then` says whether it is dropped (counted) or dead-lettered.
template <delay TTL, on_expiry Then = on_expiry::drop>
struct expire_after {
    static_assert(TTL.nanoseconds > 0, "herald::expire_after<TTL>: TTL must be positive");
    static constexpr delay ttl = TTL;
    static constexpr on_expiry then = Then;
};

namespace detail {
template <class T>
inline constexpr bool is_aging = false;
template <delay B>
inline constexpr bool is_aging<aging<B>> = true;
template <class T>
inline constexpr bool is_expiry = false;
template <delay D, on_expiry E>
inline constexpr bool is_expiry<expire_after<D, E>> = true;
template <class T>
concept has_levels = requires {
    T::levels;
};

/// The inner delivery policy among a priority's options (fire-and-forget if none).
template <class... Options>
struct inner_policy {
    using type = fire_and_forget;
};
template <class First, class... Rest>
struct inner_policy<First, Rest...> {
    using type = std::conditional_t<!is_aging<First> && !is_expiry<First>, First, typename inner_policy<Rest...>::type>;
};

template <class Option>
constexpr std::int64_t aging_of() {
    if constexpr (is_aging<Option>) {
        return Option::bound.nanoseconds;
    } else {
        return 0;
    }
}

template <class Option>
constexpr std::int64_t ttl_of() {
    if constexpr (is_expiry<Option>) {
        return Option::ttl.nanoseconds;
    } else {
        return 0;
    }
}

template <class Option>
constexpr bool option_dead_letters() {
    if constexpr (is_expiry<Option>) {
        return Option::then == on_expiry::dead_letter;
    } else {
        return false;
    }
}
} // namespace detail

/// `Levels` priority levels, 0 (lowest, the default) to `Levels - 1` (highest); publish
/// with `{.priority = n}`. A subscriber's worker always takes its highest waiting level
/// first, FIFO within one level for one publisher. Options, in any order:
/// `herald::aging<Bound>`, `herald::expire_after<TTL, Then>`, and at most one inner
/// delivery policy (`herald::fire_and_forget`, the default, or an `at_least_once`), so
/// priority composes with retries:
///
///     struct alerts : herald::topic<alert, herald::priority<3, herald::expire_after<herald::delay::s(5)>>> {};
///
/// Priority orders the events of one subscriber; it does not reorder work between
/// subscribers sharing a pool (give urgent subscribers their own pool). Priority
/// subscribers are serial (`ordering::concurrent` is refused with `usage_error`).
template <std::size_t Levels, class... Options>
struct priority : detail::inner_policy<Options...>::type {
    static_assert(Levels >= 2 && Levels <= 64, "herald::priority<Levels>: Levels must be between 2 and 64");
    static_assert(((detail::is_aging<Options> ? 1 : 0) + ... + 0) <= 1,
                  "herald::priority: give herald::aging at most once");
    static_assert(((detail::is_expiry<Options> ? 1 : 0) + ... + 0) <= 1,
                  "herald::priority: give herald::expire_after at most once");
    static_assert(((!detail::is_aging<Options> && !detail::is_expiry<Options> ? 1 : 0) + ... + 0) <= 1,
                  "herald::priority: give at most one inner delivery policy");
    static_assert((... && (detail::is_aging<Options> || detail::is_expiry<Options> || delivery_policy<Options>)),
                  "herald::priority: each option must be herald::aging<...>, herald::expire_after<...> or a "
                  "delivery policy");
    static_assert((... && !detail::has_levels<Options>), "herald::priority: priority policies do not nest");

    using inner_type = typename detail::inner_policy<Options...>::type;
    /// Number of levels.
    static constexpr std::size_t levels = Levels;
    /// Aging bound in nanoseconds (0: no aging).
    static constexpr std::int64_t aging_ns = (std::int64_t{0} + ... + detail::aging_of<Options>());
    /// Time-to-live in nanoseconds (0: events never expire).
    static constexpr std::int64_t ttl_ns = (std::int64_t{0} + ... + detail::ttl_of<Options>());
    /// Whether expired events are dead-lettered (otherwise dropped and counted).
    static constexpr bool expired_to_dead_letters = (false || ... || detail::option_dead_letters<Options>());
};

} // namespace herald
