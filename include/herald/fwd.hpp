// Forward declarations of herald's public types, for headers that only name them.
#pragma once

#include <cstddef>
#include <cstdint>

namespace herald {

struct default_bus_traits;
template <class Traits>
class basic_bus;
/// The bus with default settings.
using bus = basic_bus<default_bus_traits>;

struct event_id;
template <class Event>
class envelope;
class subscription;
struct subscription_stats;
template <class Event>
struct subscribe_options;
template <class Event>
class filter;
class tracked_objects;
struct publish_result;
enum class publish_status : std::uint8_t;
enum class delivery : std::uint8_t;
enum class ordering : std::uint8_t;
enum class shutdown_mode : std::uint8_t;
struct bus_options;
struct bus_stats;
struct delivery_error;
class usage_error;
class executor;
class thread_pool;
struct fire_and_forget;
template <class Attempts, class Backoff>
struct at_least_once;
template <std::size_t Levels, class... Options>
struct priority;
template <class Event>
struct dead_letter;
class outcome;
class clock_source;
class manual_clock;
struct publish_options;
struct republish_options;

} // namespace herald
