// The default delivery policy: at most once per subscriber, never retried.
#pragma once

#include <herald/policy/delivery_policy.hpp>

namespace herald {

/// Fire-and-forget (at most once). Each subscriber whose filter accepts an event handles
/// it at most once. A handler failure (an exception) is reported to the bus's error
/// handler and counted, never retried. Events still queued when a subscriber
/// unsubscribes, or when the bus shuts down with `herald::discard`, are dropped and
/// counted.
struct fire_and_forget {
    static constexpr delivery_guarantee guarantee = delivery_guarantee::at_most_once;
};

} // namespace herald
