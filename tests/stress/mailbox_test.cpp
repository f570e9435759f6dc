// A serial subscriber's mailbox under many publishing threads: each thread's events in
// its order, none lost, including threads past those that get a queue of their own.
#include "support/events.hpp"

#include <herald/herald.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <cstddef>
#include <thread>
#include <vector>

TEST_CASE("more publishing threads than the mailbox has own queues for each keep their order") {
    // Every thread stays alive until all have published, so each holds a distinct slot
    // index and the last ones share the mailbox's overflow queue.
    const std::size_t threads = herald::detail::stream_mailbox::own_queues + 40;
    constexpr int per_thread = 3;
    herald::bus bus{{.workers = 1}};
    std::vector<int> next(threads, 0);
    std::atomic<int> out_of_order{0};
    std::atomic<int> handled{0};
    auto sub = bus.subscribe<test::ticks>([&](const test::tick& t) {
        // Serial: one call at a time, so `next` needs no lock.
        auto& expected = next[static_cast<std::size_t>(t.publisher)];
        if (t.value != expected) {
            out_of_order.fetch_add(1);
        }
        expected = t.value + 1;
        handled.fetch_add(1);
    });
    std::atomic<std::size_t> published{0};
    std::vector<std::thread> pool;
    pool.reserve(threads);
    for (std::size_t p = 0; p < threads; ++p) {
        pool.emplace_back([&, p] {
            for (int i = 0; i < per_thread; ++i) {
                CHECK(bus.publish<test::ticks>({static_cast<int>(p), i}).accepted());
            }
            published.fetch_add(1);
            while (published.load() < threads) {
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
            }
        });
    }
    for (auto& t : pool) {
        t.join();
    }
    bus.drain();
    CHECK(handled.load() == static_cast<int>(threads) * per_thread);
    CHECK(out_of_order.load() == 0);
    CHECK(sub.stats().delivered == threads * per_thread);
}

TEST_CASE("a burst that outgrows the first blocks comes out whole and in order, twice") {
    herald::bus bus{{.workers = 1}};
    std::atomic<bool> release{false};
    std::atomic<int> handled{0};
    int expected = 0;
    int out_of_order = 0;
    auto sub = bus.subscribe<test::ticks>([&](const test::tick& t) {
        while (!release.load()) {
            std::this_thread::yield();
        }
        out_of_order += t.value == expected ? 0 : 1;
        expected = t.value + 1;
        handled.fetch_add(1);
    });
    constexpr int burst = test::scaled(100000, 20000);
    for (int round = 0; round < 2; ++round) {
        // The strand is stuck in its first call while the rest piles up: the queue grows
        // block by block; the second round refills the blocks the first one left.
        for (int i = 0; i < burst; ++i) {
            bus.publish<test::ticks>({0, round * burst + i});
        }
        release.store(true);
        bus.drain();
        release.store(false);
    }
    CHECK(handled.load() == 2 * burst);
    CHECK(out_of_order == 0);
}
