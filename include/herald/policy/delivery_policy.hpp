// The concepts every delivery policy satisfies, and the guarantees a policy can name.
#pragma once

#include <herald/detail/chrono.hpp>

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <type_traits>

namespace herald {

/// What a delivery policy promises about how often a subscriber sees one event.
enum class delivery_guarantee {
    at_most_once,  ///< delivered once or not at all; failures are reported, never retried
    at_least_once, ///< redelivered after a failure until it succeeds or is dead-lettered
};

/// The members a retrying (at-least-once) policy provides; see `herald::at_least_once`.
template <class P>
concept retrying_policy = requires(std::uint32_t retry, std::uint64_t random, const std::exception_ptr& error) {
    requires P::guarantee == delivery_guarantee::at_least_once;
    { P::attempts } -> std::convertible_to<std::uint32_t>;
    { P::backoff(retry, random) }
    noexcept->std::same_as<std::chrono::nanoseconds>;
    { P::should_retry(error) }
    noexcept->std::convertible_to<bool>;
};

/// The members a priority policy provides; see `herald::priority`.
template <class P>
concept prioritising_policy = requires {
    { P::levels } -> std::convertible_to<std::size_t>;
    { P::aging_ns } -> std::convertible_to<std::int64_t>;
    { P::ttl_ns } -> std::convertible_to<std::int64_t>;
    { P::expired_to_dead_letters } -> std::convertible_to<bool>;
};

/// A delivery policy: an empty tag type chosen as a topic's template argument. It names
/// its guarantee as `static constexpr herald::delivery_guarantee guarantee`; an
/// at-least-once policy also satisfies `retrying_policy` (attempt limit, backoff,
/// `should_retry`). Derive from `herald::at_least_once<...>` to write your own.
template <class P>
concept delivery_policy = std::is_empty_v<P> && std::is_trivially_default_constructible_v<P> && requires {
    { P::guarantee } -> std::convertible_to<delivery_guarantee>;
} &&(P::guarantee != delivery_guarantee::at_least_once || retrying_policy<P>);

} // namespace herald
