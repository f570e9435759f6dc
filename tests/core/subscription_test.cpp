#include "support/blocking.hpp"
#include "support/events.hpp"

#include <doctest/doctest.h>

#include <herald/subscription.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <semaphore>
#include <thread>

using namespace std::chrono_literals;

TEST_CASE("destroying the subscription ends delivery") {
    herald::bus bus{{.workers = 1}};
    std::atomic<int> calls{0};
    {
        auto sub = bus.subscribe<test::orders>([&](const test::order_placed&) { ++calls; });
        CHECK(sub.is_connected());
        bus.publish<test::orders>({"a", 1});
        bus.drain();
    }
    bus.publish<test::orders>({"b", 1});
    bus.drain();
    CHECK(calls == 1);
}

TEST_CASE("unsubscribe is idempotent and a moved-from subscription is empty") {
    herald::bus bus{{.workers = 1}};
    std::atomic<int> calls{0};
    auto sub = bus.subscribe<test::orders>([&](const test::order_placed&) { ++calls; }, {.name = "counter"});
    CHECK(sub.name() == "counter");
    herald::subscription moved = std::move(sub);
    CHECK_FALSE(sub.is_connected()); // NOLINT(bugprone-use-after-move): checking the moved-from state
    CHECK(moved.is_connected());
    moved.unsubscribe();
    moved.unsubscribe();
    CHECK_FALSE(moved.is_connected());
    bus.publish<test::orders>({"a", 1});
    bus.drain();
    CHECK(calls == 0);
}

TEST_CASE("default subscription names number the subscribers of a topic") {
    herald::bus bus{{.workers = 1}};
    auto a = bus.subscribe<test::refunds>([](const test::order_placed&) {});
    auto b = bus.subscribe<test::refunds>([](const test::order_placed&) {});
    CHECK(a.name() == "shop.refunds#1");
    CHECK(b.name() == "shop.refunds#2");
}

TEST_CASE("after unsubscribe returns, the handler is not running and never runs again") {
    herald::bus bus{{.workers = 2}};
    test::blocking_call call;
    auto sub = bus.subscribe<test::orders>(call.handler<test::order_placed>());
    bus.publish<test::orders>({"a", 1});
    bus.publish<test::orders>({"b", 1}); // queued behind the running call
    test::check_unsubscribe_waits(sub, call);
    bus.drain();
    CHECK(call.calls == 1); // the queued event was discarded, not delivered
    CHECK(bus.stats().discarded == 1);
}

TEST_CASE("unsubscribe from inside the handler does not deadlock") {
    herald::bus bus{{.workers = 1}};
    SUBCASE("async") {
        std::atomic<int> calls{0};
        herald::subscription sub;
        sub = bus.subscribe<test::orders>([&](const test::order_placed&) {
            ++calls;
            sub.unsubscribe();
        });
        for (int i = 0; i < 5; ++i) {
            bus.publish<test::orders>({"a", 1});
        }
        bus.drain();
        CHECK(calls == 1);
    }
    SUBCASE("inline") {
        int calls = 0;
        herald::subscription sub;
        sub = bus.subscribe<test::orders>(
            [&](const test::order_placed&) {
                ++calls;
                sub.unsubscribe();
            },
            {.mode = herald::inline_delivery});
        bus.publish<test::orders>({"a", 1});
        bus.publish<test::orders>({"b", 1});
        CHECK(calls == 1);
    }
}

TEST_CASE("a subscription may outlive its bus, and a bus its subscriptions") {
    std::atomic<int> calls{0};
    herald::subscription survivor;
    {
        herald::bus bus{{.workers = 1}};
        survivor = bus.subscribe<test::orders>([&](const test::order_placed&) { ++calls; });
        {
            auto short_lived = bus.subscribe<test::orders>([&](const test::order_placed&) { ++calls; });
        }
        bus.publish<test::orders>({"a", 1});
    } // the destructor drains
    CHECK(calls == 1);
    CHECK_FALSE(survivor.is_connected());
    survivor.unsubscribe(); // harmless after the bus is gone
}

TEST_CASE("release keeps the subscription until the bus shuts down") {
    std::atomic<int> calls{0};
    herald::bus bus{{.workers = 1}};
    {
        auto sub = bus.subscribe<test::orders>([&](const test::order_placed&) { ++calls; }, {.name = "kept"});
        CHECK(sub.release() == "kept");
    }
    bus.publish<test::orders>({"a", 1});
    bus.drain();
    CHECK(calls == 1);
}

TEST_CASE("a subscription's stats count what its handler did") {
    herald::bus bus{{.workers = 1, .on_error = [](const herald::delivery_error&) {}}};
    auto sub = bus.subscribe<test::orders>([](const test::order_placed& o) {
        if (o.total < 0) {
            throw std::runtime_error("negative");
        }
    });
    bus.publish<test::orders>({"a", 1});
    bus.publish<test::orders>({"b", -1});
    bus.drain();
    CHECK(sub.stats().delivered == 1);
    CHECK(sub.stats().failed == 1);
}
