// Typed topics: a topic is a type bound to one event type and one delivery policy.
#pragma once

#include <herald/detail/type_name.hpp>
#include <herald/policy/delivery_policy.hpp>
#include <herald/policy/fire_and_forget.hpp>

#include <concepts>
#include <cstdint>
#include <string_view>
#include <type_traits>

namespace herald {

/// Base of every topic. Declare a topic by deriving a struct from it:
///
///     struct orders : herald::topic<order_placed> {};                 // named "orders"
///     struct refunds : herald::topic<order_placed> {                  // same event type,
///         static constexpr std::string_view name = "shop.refunds";   // another topic
///     };
///
/// The derived type is the topic's identity; two topics may carry the same event type.
/// Events must be copy-constructible (every subscriber gets its own copy); wrap a
/// move-only payload in `std::shared_ptr`.
template <class Event, delivery_policy Policy = fire_and_forget>
struct topic {
    static_assert(std::is_object_v<Event> && !std::is_const_v<Event> && !std::is_volatile_v<Event>,
                  "herald::topic<Event>: Event must be a non-const object type (not a reference)");
    static_assert(std::is_copy_constructible_v<Event> && std::is_nothrow_destructible_v<Event>,
                  "herald::topic<Event>: Event must be copy-constructible and nothrow-destructible; "
                  "wrap a move-only payload in std::shared_ptr");

    /// The type every event on this topic has.
    using event_type = Event;
    /// How events on this topic are delivered.
    using policy_type = Policy;
};

/// A type usable as a topic: it names `event_type` and a `policy_type` that satisfies
/// `delivery_policy` (deriving from `herald::topic<Event, Policy>` provides both).
template <class T>
concept topic_type = std::is_class_v<T> && requires {
    typename T::event_type;
    typename T::policy_type;
} && delivery_policy<typename T::policy_type>;

namespace detail {
template <class T>
concept has_topic_name = requires {
    { T::name } -> std::convertible_to<std::string_view>;
};

template <class T>
constexpr std::string_view topic_name_of() noexcept {
    if constexpr (has_topic_name<T>) {
        return std::string_view{T::name};
    } else {
        return type_name<T>();
    }
}
} // namespace detail

/// A topic's name: its static `name` member if it declares one, otherwise the spelling
/// of its type. The string has static storage duration.
template <topic_type T>
inline constexpr std::string_view topic_name_v = detail::topic_name_of<T>();

/// A 64-bit id derived only from the topic's type spelling and name, so it is the same in
/// every translation unit and shared library of a program.
template <topic_type T>
inline constexpr std::uint64_t topic_id_v = detail::fnv1a(topic_name_v<T>, detail::fnv1a(detail::type_name<T>()));

} // namespace herald
