// priority: highest level first, FIFO within a level, aging bounds waits, expiry drops or dead-letters.
#include "support/events.hpp"

#include <doctest/doctest.h>

#include <herald/herald.hpp>
#include <herald/testing.hpp>

#include <algorithm>
#include <chrono>
#include <memory>
#include <stdexcept>
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

} // namespace

// These tests run on herald::testing's manual executor: events pile up until the test
// runs the subscriber, so the order is decided by the policy alone, without a blocked
// worker thread, polling or sleeps.

TEST_CASE("the worker takes every waiting high-priority event first, FIFO within each level") {
    herald::testing::harness h;
    std::vector<job> seen;
    seen.reserve(110000);
    auto sub = h.bus().subscribe<jobs>([&](const job& j) { seen.push_back(j); });
    constexpr int highs = 100000;
    constexpr int lows = 1000;
    for (int i = 0, hi = 0, lo = 0; hi < highs || lo < lows; ++i) {
        if (i % 100 == 0 && lo < lows) {
            h.bus().publish<jobs>({0, lo++}, {.priority = 0});
        } else if (hi < highs) {
            h.bus().publish<jobs>({1, hi++}, {.priority = 1});
        }
    }
    h.run_until_idle();
    REQUIRE(seen.size() == highs + lows);
    for (int i = 0; i < highs; ++i) {
        REQUIRE(seen[i].level == 1);
        REQUIRE(seen[i].index == i);
    }
    for (int i = 0; i < lows; ++i) {
        REQUIRE(seen[highs + i].level == 0);
        REQUIRE(seen[highs + i].index == i);
    }
}

TEST_CASE("a priority outside the topic's levels, or on a topic without levels, is refused") {
    herald::bus bus{{.workers = 1}};
    CHECK_THROWS_AS(bus.publish<jobs>({}, {.priority = 2}), herald::usage_error);
    CHECK_THROWS_AS(bus.publish<test::orders>({}, {.priority = 1}), herald::usage_error);
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
    herald::testing::harness h;
    auto& clock = h.clock();
    int handled = 0;
    std::chrono::nanoseconds longest{0};
    int lows_seen = 0;
    auto sub = h.bus().subscribe<Topic>([&](const job& j) {
        if (j.level == 0) {
            longest = std::max(longest, clock.now() - j.published);
            ++lows_seen;
        }
        clock.advance(1us);
        const int n = ++handled;
        if (n >= 20000) {
            return; // stop feeding; the backlog drains
        }
        (void)h.bus().template publish<Topic>({1, n, clock.now()}, {.priority = 1});
        (void)h.bus().template publish<Topic>({1, n, clock.now()}, {.priority = 1});
        if (n % 10 == 0) {
            (void)h.bus().template publish<Topic>({0, n, clock.now()}, {.priority = 0});
        }
    });
    (void)h.bus().template publish<Topic>({1, 0, clock.now()}, {.priority = 1});
    h.run_until_idle();
    CHECK(handled == 1 + 2 * 19999 + 1999); // every event published was handled
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
    herald::testing::harness h;
    std::vector<int> handled;
    auto sub = h.bus().subscribe<expiring_jobs>([&](const job& j) { handled.push_back(j.index); });
    for (int i = 1; i <= 9; ++i) {
        h.bus().publish<expiring_jobs>({0, i}, {.priority = static_cast<std::uint8_t>(i % 3)});
    }
    h.clock().advance(1ms);
    for (int i = 10; i <= 14; ++i) {
        h.bus().publish<expiring_jobs>({0, i});
    }
    h.run_until_idle();
    CHECK(handled == std::vector<int>{10, 11, 12, 13, 14});
    CHECK(sub.stats().expired == 9);
    CHECK(h.bus().stats().expired == 9);
}

TEST_CASE("expiry can send expired events to the dead letters instead") {
    herald::testing::harness h;
    auto sub = h.bus().subscribe<expiring_letters>([&](const job&) {});
    h.bus().publish<expiring_letters>({0, 1}, {.priority = 2});
    h.clock().advance(2ms);
    h.run_until_idle();
    const auto letters = h.bus().dead_letters<expiring_letters>();
    REQUIRE(letters.size() == 1);
    CHECK(letters[0].event().index == 1);
    CHECK(letters[0].reason == herald::dead_letter_reason::expired);
    CHECK(letters[0].attempts == 0);
    CHECK(letters[0].original.priority() == 2);
}

TEST_CASE("priority composes with at-least-once: a retry keeps its level") {
    herald::testing::harness h;
    std::vector<std::pair<int, std::uint32_t>> seen; // (priority, attempt)
    auto sub = h.bus().subscribe<retried_jobs>([&](const herald::envelope<job>& e) {
        seen.emplace_back(e.priority(), e.attempt());
        if (e.attempt() == 1) {
            throw std::runtime_error("first attempt fails");
        }
    });
    h.bus().publish<retried_jobs>({2, 0}, {.priority = 2});
    h.run_until_idle();
    h.advance(1ms);
    CHECK(seen == std::vector<std::pair<int, std::uint32_t>>{{2, 1}, {2, 2}});
    CHECK(sub.stats().delivered == 1);
}
