// herald::testing itself: manual stepping, synchronous mode, virtual time, recorders,
// expectation messages, fault plans, isolation.
#include "support/events.hpp"

#include <doctest/doctest.h>

#include <herald/testing.hpp>

#include <chrono>
#include <ostream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

using namespace std::chrono_literals;
using herald::testing::fault_plan;

namespace {
struct reading {
    int sensor = 0;
    double value = 0;
    friend bool operator==(const reading&, const reading&) = default;
    friend std::ostream& operator<<(std::ostream& out, const reading& r) {
        return out << "reading{sensor " << r.sensor << ", " << r.value << "}";
    }
};
struct readings : herald::topic<reading> {
    static constexpr std::string_view name = "readings";
};
struct silent : herald::topic<reading> {
    static constexpr std::string_view name = "silent";
};

struct opaque {
    int x = 0;
};
struct opaque_topic : herald::topic<opaque> {};

struct retried
    : herald::topic<reading,
                    herald::at_least_once<herald::max_attempts<4>,
                                          herald::exponential_backoff<herald::delay::ms(10), herald::delay::s(1)>>> {};
} // namespace

TEST_CASE("nothing runs until the test steps the manual executor, one subscriber turn at a time") {
    herald::testing::harness h;
    std::vector<std::string> log;
    auto a = h.bus().subscribe<readings>([&](const reading& r) { log.push_back("a" + std::to_string(r.sensor)); });
    auto b = h.bus().subscribe<readings>([&](const reading& r) { log.push_back("b" + std::to_string(r.sensor)); });
    h.bus().publish<readings>({1, 0});
    h.bus().publish<readings>({2, 0});
    CHECK(log.empty());
    CHECK(h.pending() == 2); // one turn per subscriber, each covering both events
    CHECK(h.run_one());
    CHECK(log == std::vector<std::string>{"a1", "a2"});
    CHECK(h.run_one());
    CHECK(log == std::vector<std::string>{"a1", "a2", "b1", "b2"});
    CHECK_FALSE(h.run_one());
}

TEST_CASE("drain() and make_pool() stay under the test's control") {
    herald::testing::harness h;
    int handled = 0;
    auto pool = h.bus().make_pool(4); // would be 4 threads on a real bus
    auto sub = h.bus().subscribe<readings>([&](const reading&) { ++handled; }, {.pool = pool});
    h.bus().publish<readings>({1, 0});
    CHECK(handled == 0);
    h.bus().drain(); // runs the manual executor on this thread instead of waiting forever
    CHECK(handled == 1);
}

TEST_CASE("synchronous mode handles async subscribers inside publish") {
    herald::testing::harness h{{.mode = herald::testing::execution::synchronous}};
    int handled = 0;
    auto sub = h.bus().subscribe<readings>([&](const reading&) { ++handled; });
    const auto r = h.bus().publish<readings>({1, 0});
    CHECK(r.queued == 1);
    CHECK(handled == 1);
}

TEST_CASE("virtual time: a four-attempt exponential backoff plays out in microseconds") {
    herald::testing::harness h;
    std::vector<std::uint32_t> attempts;
    auto sub = h.bus().subscribe<retried>([&](const herald::envelope<reading>& e) {
        attempts.push_back(e.attempt());
        throw std::runtime_error("sensor offline");
    });
    h.bus().publish<retried>({1, 0});
    const auto wall = std::chrono::steady_clock::now();
    CHECK(h.settle() == 70ms); // 10 + 20 + 40 ms of virtual time
    CHECK(std::chrono::steady_clock::now() - wall < 1s);
    CHECK(attempts == std::vector<std::uint32_t>{1, 2, 3, 4});
    CHECK(h.errors().size() == 4);
    CHECK(h.errors().back().message == "sensor offline");
    CHECK(h.bus().dead_letters<retried>().size() == 1);
}

TEST_CASE("a recorder keeps what was published, with helpers to query it") {
    herald::testing::harness h;
    herald::testing::recorder<readings> rec{h.bus()};
    CHECK(rec.empty());
    CHECK_THROWS_AS((void)rec.last(), std::logic_error);
    h.bus().publish<readings>({1, 0.5});
    h.bus().publish<readings>({2, 1.5});
    h.bus().publish<readings>({1, 2.5});
    CHECK(rec.count() == 3);
    CHECK(rec.last().event() == reading{1, 2.5});
    CHECK(rec.last().sequence() == 3);
    CHECK(rec.count_if([](const reading& r) { return r.sensor == 1; }) == 2);
    CHECK(rec.matching([](const herald::envelope<reading>& e) { return e.sequence() == 2; }).size() == 1);
    CHECK(rec.events() == std::vector<reading>{{1, 0.5}, {2, 1.5}, {1, 2.5}});
    CHECK(rec.published_in_order({{1, 0.5}, {2, 1.5}, {1, 2.5}}));
    CHECK(rec.published_matching_in_order([](const reading& r) { return r.sensor == 1; },
                                          [](const reading& r) { return r.sensor == 2; },
                                          [](const reading& r) { return r.value > 2; }));
    CHECK(rec.wait_for(3, 0ms));
    CHECK_FALSE(rec.wait_for(4, 1ms));
    rec.clear();
    CHECK(rec.published_nothing());
}

TEST_CASE("a failed expectation says what was expected and shows what was published") {
    herald::testing::harness h;
    herald::testing::recorder<readings> rec{h.bus()};
    herald::testing::recorder<silent> quiet{h.bus()};
    herald::testing::recorder<opaque_topic> hidden{h.bus()};
    h.bus().publish<readings>({7, 1.5});
    h.bus().publish<readings>({8, 2.5});
    h.bus().publish<opaque_topic>({1});

    const auto one = rec.published_exactly(
        1, [](const reading& r) { return r.value == 9.5; }, "with value 9.5");
    CHECK_FALSE(one);
    CHECK(one.message() == "expected 1 event(s) with value 9.5 on topic 'readings', but 0 of the 2 published matched:\n"
                           "  #1: reading{sensor 7, 1.5}\n"
                           "  #2: reading{sensor 8, 2.5}\n");
    const auto none = rec.published_nothing();
    CHECK(none.message().starts_with("expected 0 event(s) on topic 'readings', but 2 were published:"));
    CHECK(quiet.published_nothing());
    CHECK(quiet.published_exactly(1).message() == "expected 1 event(s) on topic 'silent', but 0 were published.");
    const auto order = rec.published_in_order({{8, 2.5}, {7, 1.5}});
    CHECK(order.message().find("expected these 2 event(s) in order") != std::string::npos);
    const auto preds = rec.published_matching_in_order([](const reading& r) { return r.sensor == 7; },
                                                       [](const reading& r) { return r.sensor == 7; });
    CHECK(preds.message().find("position 2 did not match") != std::string::npos);
    CHECK(hidden.published_exactly(2).message().find("give the event an operator<<") != std::string::npos);
}

TEST_CASE("fault plans decide by attempt, call count, id or seeded probability, reproducibly") {
    const herald::event_id id{1, 2};
    CHECK(fault_plan::on_attempts({1, 3}).fails(id, 1, 0));
    CHECK_FALSE(fault_plan::on_attempts({1, 3}).fails(id, 2, 0));
    CHECK(fault_plan::first_calls(2).fails(id, 1, 1));
    CHECK_FALSE(fault_plan::first_calls(2).fails(id, 1, 2));
    CHECK(fault_plan::for_ids({id}).fails(id, 9, 99));
    CHECK_FALSE(fault_plan::for_ids({id}).fails({1, 3}, 1, 0));
    CHECK(fault_plan::always().fails(id, 1, 0));
    CHECK_THROWS_AS((void)fault_plan::with_probability(1.5, 1), std::invalid_argument);

    const auto plan = fault_plan::with_probability(0.3, 42);
    int failures = 0;
    for (std::uint64_t i = 0; i < 10000; ++i) {
        const bool first = plan.fails({7, i}, 1, i);
        CHECK(first == plan.fails({7, i}, 1, 0)); // does not depend on the call count
        failures += first ? 1 : 0;
    }
    CHECK(failures > 2700);
    CHECK(failures < 3300);
    CHECK(fault_plan::with_probability(0.3, 43).fails({7, 5}, 1, 0) ==
          fault_plan::with_probability(0.3, 43).fails({7, 5}, 1, 0));
}

TEST_CASE("after_handler() fails after the side effect: a lost acknowledgement") {
    herald::testing::harness h;
    int effects = 0;
    auto lossy = herald::testing::inject_faults([&](const reading&) { ++effects; },
                                                fault_plan::on_attempts({1}).after_handler());
    auto sub = h.bus().subscribe<retried>(lossy);
    h.bus().publish<retried>({1, 0});
    h.settle();
    CHECK(effects == 2); // ran, "failed", ran again: why consumers should be idempotent
    CHECK(lossy.injected() == 1);
}

TEST_CASE("harnesses are isolated and a scenario gives the same result every time") {
    auto scenario = [] {
        herald::testing::harness h;
        herald::testing::recorder<readings> rec{h.bus()};
        std::vector<std::uint32_t> attempts;
        auto flaky =
            herald::testing::inject_faults([&](const herald::envelope<reading>& e) { attempts.push_back(e.attempt()); },
                                           fault_plan::with_probability(0.5, 7));
        auto sub = h.bus().subscribe<retried>(flaky);
        for (int i = 0; i < 50; ++i) {
            h.bus().publish<retried>({i, 0});
        }
        h.settle();
        return std::tuple{flaky.injected(), h.bus().stats().dead_lettered, attempts};
    };
    const auto first = scenario();
    CHECK(std::get<0>(first) > 0);
    for (int run = 0; run < 3; ++run) {
        CHECK(scenario() == first); // fixed id seed: the same events fail every time
    }
}

TEST_CASE("virtual time saturates: advance(nanoseconds::max()) stops at the clock's end and fires what is due") {
    using time_point = herald::clock_source::time_point;
    struct twice
        : herald::topic<reading,
                        herald::at_least_once<herald::max_attempts<2>, herald::fixed_backoff<herald::delay::ms(10)>>> {
    };
    herald::testing::harness h;
    std::vector<std::uint32_t> attempts;
    auto sub = h.bus().subscribe<twice>([&](const herald::envelope<reading>& e) {
        attempts.push_back(e.attempt());
        throw std::runtime_error("sensor offline");
    });
    h.bus().publish<twice>({1, 0});
    h.run_until_idle();
    CHECK(attempts == std::vector<std::uint32_t>{1});

    h.advance(std::chrono::nanoseconds::max()); // from one hour: past the end, so it saturates
    CHECK(h.clock().now() == time_point::max());
    CHECK(attempts == std::vector<std::uint32_t>{1, 2}); // the retry due 10 ms later fired on the way
    CHECK(h.bus().dead_letters<twice>().size() == 1);

    h.advance(1h); // already at the end: it stays there
    CHECK(h.clock().now() == time_point::max());
    h.clock().advance(std::chrono::nanoseconds::max());
    CHECK(h.clock().now() == time_point::max());
    h.clock().advance_to(time_point{}); // earlier: nothing happens
    h.clock().advance_to(time_point::max());
    CHECK(h.clock().now() == time_point::max());
    CHECK_THROWS_AS(h.clock().advance(-1ns), std::invalid_argument);
    CHECK(attempts.size() == 2);

    herald::manual_clock near_end{time_point::max() - 1h};
    near_end.advance(59min);
    CHECK(near_end.now() == time_point::max() - 1min);
    near_end.advance(2min);
    CHECK(near_end.now() == time_point::max());
    herald::manual_clock early{time_point{}};
    early.advance_to(time_point::max()); // the whole range in one move
    CHECK(early.now() == time_point::max());
}

TEST_CASE("detail::saturating_add clamps at both ends of the clock instead of overflowing") {
    using time_point = herald::clock_source::time_point;
    using herald::detail::saturating_add;
    constexpr time_point start{1h};
    static_assert(saturating_add(start, 5ns) == start + 5ns);
    static_assert(saturating_add(start, -5ns) == start - 5ns);
    static_assert(saturating_add(start, std::chrono::nanoseconds::max()) == time_point::max());
    static_assert(saturating_add(time_point::max() - 1ns, 1ns) == time_point::max());
    static_assert(saturating_add(time_point::max() - 1ns, 2ns) == time_point::max());
    static_assert(saturating_add(time_point::max(), std::chrono::nanoseconds::min()) == time_point{-1ns});
    static_assert(saturating_add(time_point::min() + 1ns, -2ns) == time_point::min());
    static_assert(saturating_add(time_point{-1h}, std::chrono::nanoseconds::min()) == time_point::min());
    CHECK(saturating_add(start, std::chrono::nanoseconds::max()) == time_point::max());
    CHECK(saturating_add(time_point::min(), -1ns) == time_point::min());
}
