#include "support/events.hpp"

#include <doctest/doctest.h>

#include <herald/bus.hpp>

#include <atomic>
#include <semaphore>
#include <thread>

TEST_CASE("drain waits for every event published before it") {
    herald::bus bus{{.workers = 2}};
    std::atomic<int> calls{0};
    auto a = bus.subscribe<test::orders>([&](const test::order_placed&) {
        std::this_thread::yield();
        ++calls;
    });
    auto b = bus.subscribe<test::ticks>([&](const test::tick&) { ++calls; });
    for (int i = 0; i < 500; ++i) {
        bus.publish<test::orders>({"a", 1});
        bus.publish<test::ticks>({0, i});
    }
    bus.drain();
    CHECK(calls == 1000);
}

TEST_CASE("drain or shutdown from inside a handler is refused, not a deadlock") {
    herald::bus bus{{.workers = 1}};
    std::atomic<int> refused{0};
    auto sub = bus.subscribe<test::orders>([&](const test::order_placed&) {
        try {
            bus.drain();
        } catch (const herald::usage_error&) {
            ++refused;
        }
        try {
            (void)bus.shutdown();
        } catch (const herald::usage_error&) {
            ++refused;
        }
    });
    bus.publish<test::orders>({"a", 1});
    bus.drain();
    CHECK(refused == 2);
}

TEST_CASE("shutdown(drain) delivers everything accepted, then rejects publishes") {
    herald::bus bus{{.workers = 1}};
    std::atomic<int> calls{0};
    auto sub = bus.subscribe<test::orders>([&](const test::order_placed&) { ++calls; });
    for (int i = 0; i < 100; ++i) {
        bus.publish<test::orders>({"a", 1});
    }
    CHECK(bus.shutdown(herald::drain) == 0);
    CHECK(calls == 100);
    CHECK(bus.is_stopped());
    const auto late = bus.publish<test::orders>({"late", 1});
    CHECK_FALSE(late.accepted());
    CHECK(late.status == herald::publish_status::stopped);
    CHECK(herald::to_string(late.status) == "stopped");
    CHECK(late.id.is_nil());
    CHECK(bus.stats().rejected == 1);
    CHECK(bus.shutdown() == 0); // idempotent
    CHECK_FALSE(sub.is_connected());
    auto after = bus.subscribe<test::orders>([](const test::order_placed&) {});
    CHECK_FALSE(after.is_connected());
}

TEST_CASE("shutdown(discard) drops what is queued and says how many") {
    herald::bus bus{{.workers = 1}};
    std::counting_semaphore<2> entered{0};
    std::counting_semaphore<2> release{0};
    std::atomic<int> a_calls{0};
    std::atomic<int> b_calls{0};
    auto blocking = [&](std::atomic<int>& calls) {
        return [&](const test::order_placed&) {
            if (++calls == 1) {
                entered.release();
                release.acquire();
            }
        };
    };
    auto a = bus.subscribe<test::orders>(blocking(a_calls));
    auto b = bus.subscribe<test::orders>(blocking(b_calls), {.pool = bus.make_pool(1)});
    for (int i = 0; i < 10; ++i) {
        bus.publish<test::orders>({"a", 1});
    }
    entered.acquire(); // both subscribers are inside event 1; 18 deliveries wait
    entered.acquire();
    std::thread unblock([&] {
        // Let the two running calls finish once shutdown has started discarding.
        while (!bus.is_stopped()) {
            std::this_thread::yield();
        }
        release.release(2);
    });
    const std::size_t dropped = bus.shutdown(herald::discard);
    unblock.join();
    CHECK(a_calls == 1);
    CHECK(b_calls == 1);
    CHECK(dropped == 18);
    CHECK(bus.stats().dropped == 18);
    CHECK(bus.stats().delivered == 2);
}

TEST_CASE("the destructor drains") {
    std::atomic<int> calls{0};
    {
        herald::bus bus{{.workers = 1}};
        auto sub = bus.subscribe<test::orders>([&](const test::order_placed&) {
            std::this_thread::yield();
            ++calls;
        });
        for (int i = 0; i < 200; ++i) {
            bus.publish<test::orders>({"a", 1});
        }
        sub.release();
    }
    CHECK(calls == 200);
}
