// The capacity of one subscriber's mailbox: publishers take a place before they put,
// the strand gives places back as it takes events, and a full mailbox applies the
// subscriber's overflow rule.
#pragma once

#include <herald/detail/chrono.hpp>
#include <herald/flow_control.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>

namespace herald::detail {

/// Counts the events waiting for one subscriber against its capacity. `reserve` (any
/// publisher) takes a place with one atomic addition and gives it back at once when the
/// mailbox was full; `release` (whoever takes events out) gives places back and wakes
/// publishers blocked in `overflow::block`. The count is exact: at no time do more than
/// `capacity` events wait.
///
/// Blocked publishers sleep on a condition variable. A publisher announces itself in
/// `blocked_` (an atomic addition) before it looks for room under the mutex; `release`
/// frees room (an atomic subtraction) before it reads `blocked_`: either the publisher
/// sees the room, or `release` sees the publisher and notifies it under the mutex.
class flow_gate {
public:
    flow_gate(std::size_t capacity, overflow rule, std::chrono::nanoseconds block_timeout) noexcept
        : capacity_(static_cast<std::int64_t>(std::min<std::size_t>(capacity, max_capacity))),
          rule_(rule),
          timeout_(std::max(block_timeout, std::chrono::nanoseconds::zero())) {}

    flow_gate(const flow_gate&) = delete;
    flow_gate& operator=(const flow_gate&) = delete;

    /// Takes a place for one event; false when the mailbox is full.
    [[nodiscard]] bool try_reserve() noexcept {
        const std::int64_t now = waiting_.fetch_add(1, std::memory_order_acq_rel) + 1;
        if (now <= capacity_) [[likely]] {
            note_high_water(now);
            return true;
        }
        waiting_.fetch_sub(1, std::memory_order_acq_rel);
        return false;
    }

    /// Takes a place for a retry of an event this mailbox accepted before (its place was
    /// given back when it was taken out for its failed attempt). Never refused: while
    /// retries wait in the mailbox, the count may pass the capacity by their number, and
    /// new events find it full until they leave.
    void readmit() noexcept { waiting_.fetch_add(1, std::memory_order_acq_rel); }

    /// `overflow::block` after `try_reserve` failed: waits until a place frees up (and
    /// takes it) or the timeout passes (false). Counts the time spent.
    [[gnu::cold, gnu::noinline]] bool wait_for_room() noexcept {
        const auto start = std::chrono::steady_clock::now();
        const auto deadline = timeout_ >= std::chrono::steady_clock::time_point::max() - start
                                  ? std::chrono::steady_clock::time_point::max()
                                  : start + timeout_;
        blocked_.fetch_add(1, std::memory_order_seq_cst);
        bool placed = false;
        try {
            std::unique_lock lock(mutex_);
            while (!(placed = try_reserve()) && std::chrono::steady_clock::now() < deadline) {
                room_.wait_until(lock, deadline);
            }
        } catch (...) {
            // The mutex could not be locked (std::system_error): no wait, no place.
        }
        blocked_.fetch_sub(1, std::memory_order_seq_cst);
        const auto spent = std::chrono::steady_clock::now() - start;
        blocked_ns_.fetch_add(static_cast<std::uint64_t>(std::chrono::nanoseconds(spent).count()),
                              std::memory_order_relaxed);
        return placed;
    }

    /// Gives back `count` places (events taken out of the mailbox, or a put that failed).
    void release(std::size_t count) noexcept {
        if (count == 0) {
            return;
        }
        waiting_.fetch_sub(static_cast<std::int64_t>(count), std::memory_order_acq_rel);
        if (blocked_.load(std::memory_order_seq_cst) != 0) [[unlikely]] {
            wake();
        }
    }

    [[nodiscard]] std::size_t capacity() const noexcept { return static_cast<std::size_t>(capacity_); }
    [[nodiscard]] overflow rule() const noexcept { return rule_; }
    /// Events waiting now (places taken). The count briefly includes a publisher's attempt
    /// on a full mailbox (taken, then given back at once), so it is clamped to the capacity.
    [[nodiscard]] std::size_t waiting() const noexcept {
        return static_cast<std::size_t>(
            std::clamp<std::int64_t>(waiting_.load(std::memory_order_acquire), 0, capacity_));
    }
    /// The most events that ever waited at once.
    [[nodiscard]] std::size_t high_water() const noexcept {
        return static_cast<std::size_t>(high_water_.load(std::memory_order_relaxed));
    }
    /// Nanoseconds publishers spent blocked, all together.
    [[nodiscard]] std::uint64_t blocked_ns() const noexcept { return blocked_ns_.load(std::memory_order_relaxed); }

    /// The largest capacity a gate counts (larger ones are clamped to it).
    static constexpr std::size_t max_capacity = std::size_t{1} << 62U;

private:
    void note_high_water(std::int64_t now) noexcept {
        std::int64_t seen = high_water_.load(std::memory_order_relaxed);
        while (now > seen && !high_water_.compare_exchange_weak(seen, now, std::memory_order_relaxed)) {
        }
    }

    [[gnu::cold, gnu::noinline]] void wake() noexcept {
        try {
            const std::lock_guard lock(mutex_);
        } catch (...) {
            // Not locked: the notification below may race with a waiter that has not
            // started waiting yet; its timed wait still ends at its deadline.
        }
        room_.notify_all();
    }

    const std::int64_t capacity_;
    const overflow rule_;
    const std::chrono::nanoseconds timeout_;
    alignas(64) std::atomic<std::int64_t> waiting_{0};
    std::atomic<std::int64_t> high_water_{0};
    alignas(64) std::atomic<std::uint32_t> blocked_{0};
    std::atomic<std::uint64_t> blocked_ns_{0};
    std::mutex mutex_;
    std::condition_variable room_;
};

} // namespace herald::detail
