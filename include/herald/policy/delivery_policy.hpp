// The concept every delivery policy satisfies, and the guarantees a policy can name.
#pragma once

#include <concepts>
#include <type_traits>

namespace herald {

/// What a delivery policy promises about how often a subscriber sees one event.
enum class delivery_guarantee {
    at_most_once,  ///< delivered once or not at all; failures are reported, never retried
    at_least_once, ///< redelivered after a failure until it succeeds or is dead-lettered
};

/// A delivery policy: an empty tag type chosen as a topic's template argument. It names
/// its guarantee as `static constexpr herald::delivery_guarantee guarantee`.
template <class P>
concept delivery_policy = std::is_empty_v<P> && std::is_trivially_default_constructible_v<P> && requires {
    { P::guarantee } -> std::convertible_to<delivery_guarantee>;
};

} // namespace herald
