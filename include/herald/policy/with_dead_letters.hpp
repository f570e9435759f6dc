// Dead letters for a policy that has none of its own.
#pragma once

#include <herald/policy/delivery_policy.hpp>
#include <herald/policy/fire_and_forget.hpp>

namespace herald {

/// `Policy`, plus a dead-letter topic: events that a subscriber's full mailbox turns
/// away with `herald::overflow::dead_letter` are published on `dead_letter_topic<T>`
/// (or kept in the bus's bounded store when nobody subscribes to it), like the dead
/// letters of `at_least_once`. Everything else is `Policy`'s.
///
///     struct quotes : herald::topic<quote, herald::with_dead_letters<>> {};
template <delivery_policy Policy = fire_and_forget>
struct with_dead_letters : Policy {
    /// Read by the bus: this topic has a dead-letter topic.
    static constexpr bool keeps_dead_letters = true;
};

} // namespace herald
