// The publish path reads subscriber lists and runs inline handlers without locked
// instructions: each thread announces what it reads and calls in its own slot, and
// subscribe/unsubscribe look there. These tests attack that scheme: lists replaced while
// publishers (nested deeper than the slot has entries) read them, unsubscribe racing with
// inline calls on other threads, and exact counts from many publishing threads.
#include "support/blocking.hpp"
#include "support/events.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

namespace {

constexpr int chains_per_publisher = test::scaled(3000, 300);

/// A handler's captured state that counts how many copies of it are alive, so a test
/// can tell whether replaced subscriber lists (which own the handlers) were freed.
struct alive_token {
    explicit alive_token(std::atomic<int>& counter) : alive(&counter) { alive->fetch_add(1); }
    alive_token(const alive_token& other) : alive(other.alive) { alive->fetch_add(1); }
    alive_token& operator=(const alive_token&) = delete;
    ~alive_token() { alive->fetch_sub(1); }
    std::atomic<int>* alive;
};

/// Depth of the nested publishes: deeper than a thread slot's entries (8), so both the
/// announced path and the reference-counted fallback run.
constexpr int chain_depth = 12;

} // namespace

TEST_CASE("subscriber lists replaced under nested publishers stay valid and are freed afterwards") {
    herald::bus bus{{.workers = 1}};
    std::atomic<long> chain_calls{0};
    // Every tick with value v > 0 publishes v - 1 from inside the handler: one publish
    // of chain_depth makes a stack of chain_depth + 1 nested publishes.
    herald::subscription chain;
    chain = bus.subscribe<test::ticks>(
        [&](const test::tick& t) {
            chain_calls.fetch_add(1, std::memory_order_relaxed);
            if (t.value > 0) {
                bus.publish<test::ticks>({t.publisher, t.value - 1});
            }
        },
        {.mode = herald::inline_delivery});

    std::atomic<int> alive{0};
    std::atomic<int> late_calls{0};
    std::atomic<long> churned_calls{0};
    std::atomic<bool> publishing{true};
    std::thread churn([&] {
        while (publishing.load()) {
            auto gone = std::make_shared<std::atomic<bool>>(false);
            auto sub = bus.subscribe<test::ticks>(
                [token = alive_token{alive}, gone, &late_calls, &churned_calls](const test::tick&) {
                    churned_calls.fetch_add(1, std::memory_order_relaxed);
                    if (gone->load()) {
                        late_calls.fetch_add(1); // ran after unsubscribe returned
                    }
                },
                {.mode = herald::inline_delivery});
            std::this_thread::yield();
            sub.unsubscribe();
            gone->store(true);
        }
    });

    constexpr int publishers = 3;
    std::vector<std::thread> threads;
    for (int p = 0; p < publishers; ++p) {
        threads.emplace_back([&bus, p] {
            for (int i = 0; i < chains_per_publisher; ++i) {
                CHECK(bus.publish<test::ticks>({p, chain_depth}).accepted());
            }
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    publishing = false;
    churn.join();

    CHECK(late_calls == 0);
    CHECK(chain_calls == long{publishers} * chains_per_publisher * (chain_depth + 1));
    // Lists still read when they were replaced wait for a later replacement: one more
    // subscribe and unsubscribe, with no publisher left, frees every one of them and so
    // every churned handler.
    bus.subscribe<test::ticks>([](const test::tick&) {}, {.mode = herald::inline_delivery}).unsubscribe();
    CHECK(alive == 0);
    MESSAGE("churned subscribers handled " << churned_calls.load() << " events");
}

TEST_CASE("unsubscribe waits for an inline call running on another thread") {
    herald::bus bus{{.workers = 1}};
    test::blocking_call call;
    auto sub = bus.subscribe<test::orders>(call.handler<test::order_placed>(), {.mode = herald::inline_delivery});
    std::thread publisher([&] { bus.publish<test::orders>({"a", 1}); });
    test::check_unsubscribe_waits(sub, call); // the call runs on the publisher's thread
    publisher.join();
    bus.publish<test::orders>({"b", 1});
    CHECK(call.calls == 1);
}

TEST_CASE("inline deliveries from many threads are counted exactly") {
    herald::bus bus{{.workers = 1}};
    std::atomic<long> calls{0};
    auto sub = bus.subscribe<test::ticks>([&](const test::tick&) { calls.fetch_add(1, std::memory_order_relaxed); },
                                          {.mode = herald::inline_delivery});
    // More threads than the subscriber's counter shards (8), some alive at once and some
    // reusing the slots of threads that ended, so every counting path is taken.
    constexpr int waves = 3;
    constexpr int threads_per_wave = 12;
    constexpr int events_per_thread = 2000;
    for (int wave = 0; wave < waves; ++wave) {
        std::vector<std::thread> threads;
        for (int p = 0; p < threads_per_wave; ++p) {
            threads.emplace_back([&bus, p] {
                for (int i = 0; i < events_per_thread; ++i) {
                    bus.publish<test::ticks>({p, i});
                }
            });
        }
        for (auto& t : threads) {
            t.join();
        }
    }
    constexpr long expected = long{waves} * threads_per_wave * events_per_thread;
    CHECK(calls == expected);
    CHECK(sub.stats().delivered == expected);
    CHECK(bus.stats().delivered == expected);
}
