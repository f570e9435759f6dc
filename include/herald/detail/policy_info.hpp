// A topic's delivery policy as run-time values, so that the code it steers is compiled
// once and not once per topic.
#pragma once

#include <herald/detail/chrono.hpp>
#include <herald/detail/erased.hpp>
#include <herald/envelope.hpp>
#include <herald/policy/delivery_policy.hpp>

#include <cstddef>
#include <cstdint>
#include <exception>

namespace herald::detail {

/// What the delivery code needs to know of a topic's policy, as run-time values (one
/// constant per policy type, see `policy_info_of`).
struct policy_info {
    /// Failed deliveries are retried (`attempts` in all), then dead-lettered.
    bool retrying = false;
    std::uint32_t attempts = 0;
    std::chrono::nanoseconds (*backoff)(std::uint32_t retry, std::uint64_t random) noexcept = nullptr;
    bool (*should_retry)(const std::exception_ptr& error) noexcept = nullptr;
    /// Events wait in one lane per priority level (`lanes.levels`).
    bool prioritised = false;
    lane_rules lanes{};
    bool expired_to_dead_letters = false;
    /// Failed or expired deliveries end up on the dead-letter topic.
    bool has_dead_letters = false;
};

template <class Policy>
struct policy_table {
    static constexpr policy_info make() noexcept {
        policy_info info;
        if constexpr (retrying_policy<Policy>) {
            static_assert(static_cast<std::uint64_t>(Policy::attempts) <= max_attempts_limit,
                          "herald: a retrying policy allows at most 65535 attempts (P::attempts)");
            info.retrying = true;
            info.attempts = static_cast<std::uint32_t>(Policy::attempts);
            info.backoff = [](std::uint32_t retry, std::uint64_t random) noexcept {
                return Policy::backoff(retry, random);
            };
            info.should_retry = [](const std::exception_ptr& error) noexcept {
                return static_cast<bool>(Policy::should_retry(error));
            };
            info.has_dead_letters = true;
        }
        if constexpr (prioritising_policy<Policy>) {
            info.prioritised = true;
            info.lanes.levels = static_cast<std::size_t>(Policy::levels);
            info.lanes.aging_ns = Policy::aging_ns;
            info.lanes.ttl_ns = Policy::ttl_ns;
            info.expired_to_dead_letters = Policy::expired_to_dead_letters;
            info.has_dead_letters = info.has_dead_letters || Policy::expired_to_dead_letters;
        }
        if constexpr (requires { Policy::keeps_dead_letters; }) {
            info.has_dead_letters = info.has_dead_letters || Policy::keeps_dead_letters;
        }
        return info;
    }
    static constexpr policy_info value = make();
};

/// The run-time description of `Policy`.
template <class Policy>
const policy_info& policy_info_of() noexcept {
    return policy_table<Policy>::value;
}

} // namespace herald::detail
