// Event and topic types shared by herald's own tests.
#pragma once

#include <herald/herald.hpp>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

namespace test {

struct order_placed {
    std::string item;
    double total = 0;
};

struct orders : herald::topic<order_placed> {};
struct refunds : herald::topic<order_placed> {
    static constexpr std::string_view name = "shop.refunds";
};

struct tick {
    int publisher = 0;
    int value = 0;
};
struct ticks : herald::topic<tick> {};

/// Counts copies and moves, to prove how handlers receive events.
struct counted {
    static inline std::atomic<int> copies{0};
    static inline std::atomic<int> moves{0};
    int value = 0;
    counted() = default;
    explicit counted(int v) : value(v) {}
    counted(const counted& o) : value(o.value) { ++copies; }
    counted(counted&& o) noexcept : value(o.value) { ++moves; }
    counted& operator=(const counted& o) {
        value = o.value;
        ++copies;
        return *this;
    }
    counted& operator=(counted&& o) noexcept {
        value = o.value;
        ++moves;
        return *this;
    }
    ~counted() = default;
    static void reset() {
        copies = 0;
        moves = 0;
    }
};
struct counted_topic : herald::topic<counted> {};

/// Polls `done` until it holds or `limit` passes; for tests that use real threads.
template <class Pred>
bool eventually(Pred done, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done()) {
        if (std::chrono::steady_clock::now() > deadline) {
            return false;
        }
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    return true;
}

/// True in sanitizer builds, which run an order of magnitude slower.
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
inline constexpr bool sanitized = true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
inline constexpr bool sanitized = true;
#else
inline constexpr bool sanitized = false;
#endif
#else
inline constexpr bool sanitized = false;
#endif

/// A stress test's load: `full` normally, `reduced` under a sanitizer.
constexpr int scaled(int full, int reduced) { return sanitized ? reduced : full; }

} // namespace test
