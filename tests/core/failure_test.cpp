#include "support/events.hpp"

#include <doctest/doctest.h>

#include <herald/errors.hpp>

#include <atomic>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace {
struct recorded_error {
    std::string topic;
    std::string subscriber;
    herald::event_id id;
    std::uint32_t attempt = 0;
    std::string message;
};

struct error_log {
    std::mutex mutex;
    std::vector<recorded_error> errors;
    herald::error_handler handler() {
        return [this](const herald::delivery_error& e) {
            std::lock_guard lock(mutex);
            errors.push_back({std::string(e.topic), std::string(e.subscriber), e.id, e.attempt, e.message()});
        };
    }
};
} // namespace

TEST_CASE("a throwing handler never kills a worker, skips a subscriber or drops a batch") {
    error_log log;
    herald::bus bus{{.workers = 1, .on_error = log.handler()}};
    std::atomic<int> good{0};
    std::atomic<int> flaky_ok{0};
    auto flaky = bus.subscribe<test::ticks>(
        [&](const test::tick& t) {
            if (t.value % 2 == 0) {
                throw std::runtime_error("even value " + std::to_string(t.value));
            }
            ++flaky_ok;
        },
        {.name = "flaky"});
    auto other = bus.subscribe<test::ticks>([&](const test::tick&) { ++good; }, {.name = "steady"});
    constexpr int count = 1000; // far more than one batch
    std::vector<herald::event_id> ids;
    for (int i = 0; i < count; ++i) {
        ids.push_back(bus.publish<test::ticks>({0, i}).id);
    }
    bus.drain();
    CHECK(good == count);
    CHECK(flaky_ok == count / 2);
    REQUIRE(log.errors.size() == count / 2);
    CHECK(log.errors[0].topic == "test::ticks");
    CHECK(log.errors[0].subscriber == "flaky");
    CHECK(log.errors[0].id == ids[0]);
    CHECK(log.errors[0].attempt == 1);
    CHECK(log.errors[0].message == "even value 0");
    const auto stats = bus.stats();
    CHECK(stats.failed == count / 2);
    CHECK(stats.delivered == count + count / 2);
}

TEST_CASE("inline failures are reported, counted and returned by publish") {
    error_log log;
    herald::bus bus{{.workers = 1, .on_error = log.handler()}};
    int after = 0;
    auto bad = bus.subscribe<test::orders>([](const test::order_placed&) { throw std::logic_error("nope"); },
                                           {.name = "bad", .mode = herald::inline_delivery});
    auto good =
        bus.subscribe<test::orders>([&](const test::order_placed&) { ++after; }, {.mode = herald::inline_delivery});
    const auto result = bus.publish<test::orders>({"a", 1});
    CHECK(result.accepted());
    CHECK(result.failed_inline == 1);
    CHECK(result.handled_inline == 1);
    CHECK(after == 1);
    REQUIRE(log.errors.size() == 1);
    CHECK(log.errors[0].message == "nope");
}

TEST_CASE("non-standard exceptions and throwing filters are reported too") {
    error_log log;
    herald::bus bus{{.workers = 1, .on_error = log.handler()}};
    auto odd =
        bus.subscribe<test::orders>([](const test::order_placed&) { throw 42; }, {.mode = herald::inline_delivery});
    auto picky = bus.subscribe<test::orders>(
        [](const test::order_placed&) {},
        {.name = "picky", .mode = herald::inline_delivery, .filter = [](const test::order_placed&) -> bool {
             throw std::runtime_error("filter broke");
         }});
    const auto result = bus.publish<test::orders>({"a", 1});
    CHECK(result.failed_inline == 1);
    REQUIRE(log.errors.size() == 2);
    CHECK(log.errors[0].message.find("unknown exception") != std::string::npos);
    CHECK(log.errors[1].subscriber == "picky");
    CHECK(log.errors[1].message == "filter broke");
}

TEST_CASE("the error handler can be replaced, and its own failures are counted") {
    herald::bus bus{{.workers = 1}};
    auto sub = bus.subscribe<test::orders>([](const test::order_placed&) { throw std::runtime_error("x"); },
                                           {.mode = herald::inline_delivery});
    std::atomic<int> reported{0};
    bus.set_error_handler([&](const herald::delivery_error&) { ++reported; });
    bus.publish<test::orders>({"a", 1});
    CHECK(reported == 1);
    bus.set_error_handler([](const herald::delivery_error&) { throw std::runtime_error("handler broke"); });
    bus.publish<test::orders>({"a", 1});
    CHECK(bus.stats().error_handler_failures == 1);
    CHECK(bus.stats().failed == 2);
}

TEST_CASE("the default error handler prints one line and the bus carries on") {
    herald::bus bus{{.workers = 1}};
    std::atomic<int> calls{0};
    auto sub = bus.subscribe<test::orders>([&](const test::order_placed&) {
        if (++calls == 1) {
            throw std::runtime_error("expected failure printed by the default error handler");
        }
    });
    bus.publish<test::orders>({"a", 1});
    bus.publish<test::orders>({"b", 1});
    bus.drain();
    CHECK(calls == 2);
}
