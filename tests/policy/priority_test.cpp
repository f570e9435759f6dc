// priority: highest level first, FIFO within a level, aging bounds waits, expiry drops or dead-letters.
#include "support/events.hpp"

#include <doctest/doctest.h>

#include <herald/herald.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using herald::delay;

namespace {

struct job {
    int level = 0;
    int index = 0;
    herald::clock_source::time_point published{};
};

struct jobs : herald::topic<job, herald::priority<2>> {};
struct aged_jobs : herald::topic<job, herald::priority<2, herald::aging<delay::us(500)>>> {};
struct expiring_jobs : herald::topic<job, herald::priority<3, herald::expire_after<delay::ms(1)>>> {};
struct expiring_letters
    : herald::topic<job, herald::priority<3, herald::expire_after<delay::ms(1), herald::on_expiry::dead_letter>>> {};
struct retried_jobs
    : herald::topic<job, herald::priority<
                             3, herald::at_least_once<herald::max_attempts<2>, herald::fixed_backoff<delay::ms(1)>>>> {
};

/// Holds the single worker inside the first handler call until released, so that events
/// pile up and the priority order decides what runs next.
struct gate {
    std::atomic<bool> entered{false};
    std::atomic<bool> open{false};
    void hold() {
        entered = true;
        while (!open) {
            std::this_thread::yield();
        }
    }
};

} // namespace

TEST_CASE("one worker takes every waiting high-priority event first, FIFO within each level") {
    auto clock = std::make_shared<herald::manual_clock>();
    herald::bus bus{{.workers = 1, .clock = clock}};
    gate g;
    std::vector<job> seen;
    seen.reserve(110000);
    auto sub = bus.subscribe<jobs>([&](const job& j) {
        if (!g.entered) {
            g.hold();
        }
        seen.push_back(j);
    });
    (void)bus.publish<jobs>({0, -1});
    REQUIRE(test::eventually([&] { return g.entered.load(); }));
    constexpr int highs = 100000;
    constexpr int lows = 1000;
    for (int i = 0, h = 0, l = 0; h < highs || l < lows; ++i) {
        if (i % 100 == 0 && l < lows) {
            (void)bus.publish<jobs>({0, l++}, {.priority = 0});
        } else if (h < highs) {
            (void)bus.publish<jobs>({1, h++}, {.priority = 1});
        }
    }
    g.open = true;
    bus.drain();
    REQUIRE(seen.size() == 1 + highs + lows);
    for (int i = 0; i < highs; ++i) {
        REQUIRE(seen[1 + i].level == 1);
        REQUIRE(seen[1 + i].index == i);
    }
    for (int i = 0; i < lows; ++i) {
        REQUIRE(seen[1 + highs + i].level == 0);
        REQUIRE(seen[1 + highs + i].index == i);
    }
}

TEST_CASE("a priority outside the topic's levels, or on a topic without levels, is refused") {
    herald::bus bus{{.workers = 1}};
    CHECK_THROWS_AS((void)bus.publish<jobs>({}, {.priority = 2}), herald::usage_error);
    CHECK_THROWS_AS((void)bus.publish<test::orders>({}, {.priority = 1}), herald::usage_error);
    CHECK_THROWS_AS((void)bus.subscribe<jobs>([](const job&) {}, {.order = herald::ordering::concurrent}),
                    herald::usage_error);
    CHECK(bus.stats().published == 0);
}

namespace {
/// A workload where high-priority work always outpaces the single worker: every handled
/// event (1 µs of virtual work) publishes two high ones, and every tenth a low one.
/// Returns the longest wait of a low-priority event, in virtual time.
template <class Topic>
std::chrono::nanoseconds longest_low_wait() {
    auto clock = std::make_shared<herald::manual_clock>();
    herald::bus bus{{.workers = 1, .clock = clock}};
    std::atomic<int> handled{0};
    std::chrono::nanoseconds longest{0};
    int lows_seen = 0;
    auto sub = bus.subscribe<Topic>([&](const job& j) {
        if (j.level == 0) {
            longest = std::max(longest, clock->now() - j.published);
            ++lows_seen;
        }
        clock->advance(1us);
        const int n = ++handled;
        if (n >= 20000) {
            return; // stop feeding; the backlog drains
        }
        (void)bus.publish<Topic>({1, n, clock->now()}, {.priority = 1});
        (void)bus.publish<Topic>({1, n, clock->now()}, {.priority = 1});
        if (n % 10 == 0) {
            (void)bus.publish<Topic>({0, n, clock->now()}, {.priority = 0});
        }
    });
    (void)bus.publish<Topic>({1, 0, clock->now()}, {.priority = 1});
    REQUIRE(test::eventually([&] { return handled >= 20000; }, 60s));
    bus.drain();
    CHECK(lows_seen == 1999);
    return longest;
}
} // namespace

TEST_CASE("aging: a low-priority event waits at most the aging bound plus one event's work") {
    const auto with_aging = longest_low_wait<aged_jobs>();
    CHECK(with_aging <= 500us + 1us);
    // The same load without aging starves the low level until the high backlog is gone,
    // which shows the bound comes from aging and not from a light load.
    const auto without = longest_low_wait<jobs>();
    CHECK(without > 10 * with_aging);
}

TEST_CASE("expiry drops events that waited past their time-to-live, and counts them") {
    auto clock = std::make_shared<herald::manual_clock>();
    herald::bus bus{{.workers = 1, .clock = clock}};
    gate g;
    std::vector<int> handled;
    auto sub = bus.subscribe<expiring_jobs>([&](const job& j) {
        if (!g.entered) {
            g.hold();
        }
        handled.push_back(j.index);
    });
    (void)bus.publish<expiring_jobs>({0, 0});
    REQUIRE(test::eventually([&] { return g.entered.load(); }));
    for (int i = 1; i <= 9; ++i) {
        (void)bus.publish<expiring_jobs>({0, i}, {.priority = static_cast<std::uint8_t>(i % 3)});
    }
    clock->advance(1ms);
    for (int i = 10; i <= 14; ++i) {
        (void)bus.publish<expiring_jobs>({0, i});
    }
    g.open = true;
    bus.drain();
    CHECK(handled == std::vector<int>{0, 10, 11, 12, 13, 14});
    CHECK(sub.stats().expired == 9);
    CHECK(bus.stats().expired == 9);
}

TEST_CASE("expiry can send expired events to the dead letters instead") {
    auto clock = std::make_shared<herald::manual_clock>();
    herald::bus bus{{.workers = 1, .clock = clock}};
    gate g;
    auto sub = bus.subscribe<expiring_letters>([&](const job&) {
        if (!g.entered) {
            g.hold();
        }
    });
    (void)bus.publish<expiring_letters>({0, 0});
    REQUIRE(test::eventually([&] { return g.entered.load(); }));
    (void)bus.publish<expiring_letters>({0, 1}, {.priority = 2});
    clock->advance(2ms);
    g.open = true;
    bus.drain();
    const auto letters = bus.dead_letters<expiring_letters>();
    REQUIRE(letters.size() == 1);
    CHECK(letters[0].event().index == 1);
    CHECK(letters[0].reason == herald::dead_letter_reason::expired);
    CHECK(letters[0].attempts == 0);
    CHECK(letters[0].original.priority() == 2);
}

TEST_CASE("priority composes with at-least-once: a retry keeps its level") {
    auto clock = std::make_shared<herald::manual_clock>();
    herald::bus bus{{.workers = 1, .on_error = [](const herald::delivery_error&) {}, .clock = clock}};
    std::mutex mutex;
    std::vector<std::pair<int, std::uint32_t>> seen; // (priority, attempt)
    auto sub = bus.subscribe<retried_jobs>([&](const herald::envelope<job>& e) {
        {
            std::lock_guard lock(mutex);
            seen.emplace_back(e.priority(), e.attempt());
        }
        if (e.attempt() == 1) {
            throw std::runtime_error("first attempt fails");
        }
    });
    (void)bus.publish<retried_jobs>({2, 0}, {.priority = 2});
    bus.drain();
    clock->advance(1ms);
    bus.drain();
    std::lock_guard lock(mutex);
    CHECK(seen == std::vector<std::pair<int, std::uint32_t>>{{2, 1}, {2, 2}});
    CHECK(sub.stats().delivered == 1);
}
