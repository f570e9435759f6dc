#include "support/events.hpp"

#include <doctest/doctest.h>

#include <herald/bus.hpp>
#include <herald/thread_pool.hpp>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <iterator>
#include <memory>
#include <stdexcept>
#include <system_error>
#include <thread>

namespace {
struct counting_task final : herald::detail::task {
    std::atomic<int>* runs;
    explicit counting_task(std::atomic<int>* r) : runs(r) {}
    void run() noexcept override { ++*runs; }
};
} // namespace

TEST_CASE("a thread pool runs every posted task and stops idempotently") {
    std::atomic<int> runs{0};
    herald::thread_pool pool{2, "test"};
    CHECK(pool.concurrency() == 2);
    CHECK(pool.name() == "test");
    for (int i = 0; i < 1000; ++i) {
        pool.post(std::make_shared<counting_task>(&runs));
    }
    CHECK(test::eventually([&] { return runs == 1000; }));
    pool.stop();
    pool.stop();
    pool.post(std::make_shared<counting_task>(&runs)); // released, never run
    CHECK(runs == 1000);
}

TEST_CASE("zero threads means one per hardware thread") {
    herald::thread_pool pool{0};
    CHECK(pool.concurrency() >= 1);
}

TEST_CASE("stopping a pool from its own worker is refused") {
    auto pool = std::make_shared<herald::thread_pool>(1);
    std::atomic<int> refused{0};
    struct stopper final : herald::detail::task {
        herald::thread_pool* pool;
        std::atomic<int>* refused;
        stopper(herald::thread_pool* p, std::atomic<int>* r) : pool(p), refused(r) {}
        void run() noexcept override {
            try {
                pool->stop();
            } catch (const std::logic_error&) {
                ++*refused;
            }
        }
    };
    pool->post(std::make_shared<stopper>(pool.get(), &refused));
    CHECK(test::eventually([&] { return refused == 1; }));
}

namespace {
/// Threads of this process, as Linux lists them (-1 where /proc is missing).
int threads_now() {
    std::error_code failed;
    std::filesystem::directory_iterator tasks("/proc/self/task", failed);
    if (failed) {
        return -1;
    }
    return static_cast<int>(std::distance(tasks, std::filesystem::directory_iterator{}));
}

/// `threads_now()` once it held still for 10 ms: a thread an earlier test joined may
/// stay listed in /proc for a moment after join() returned.
int settled_threads() {
    int n = threads_now();
    for (int still = 0; still < 5;) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
        const int m = threads_now();
        still = m == n ? still + 1 : 0;
        n = m;
    }
    return n;
}
} // namespace

TEST_CASE("a pool starts its workers with the first post") {
    std::atomic<int> runs{0};
    const int before = settled_threads();
    herald::thread_pool pool{3};
    CHECK_FALSE(pool.started());
    CHECK(pool.concurrency() == 3);
    CHECK(threads_now() == before);
    pool.post(std::make_shared<counting_task>(&runs));
    CHECK(pool.started());
    CHECK(test::eventually([&] { return runs == 1; }));
    if (before >= 0) {
        CHECK(threads_now() == before + 3);
    }
    pool.stop();
    // A joined thread may stay listed in /proc for a moment after join() returns.
    CHECK(test::eventually([&] { return threads_now() == before; }));
}

TEST_CASE("a pool stopped before any post never starts a thread") {
    std::atomic<int> runs{0};
    const int before = settled_threads();
    herald::thread_pool pool{2};
    pool.stop();
    pool.post(std::make_shared<counting_task>(&runs)); // released, never run
    CHECK(threads_now() == before);
    CHECK(runs == 0);
}

TEST_CASE("a bus whose subscribers are all inline runs no thread until an async one appears") {
    const int before = settled_threads();
    std::atomic<int> inline_calls{0};
    std::atomic<int> async_calls{0};
    {
        herald::bus bus{{.workers = 2}};
        auto in =
            bus.subscribe<test::ticks>([&](const test::tick&) { ++inline_calls; }, {.mode = herald::inline_delivery});
        for (int i = 0; i < 10; ++i) {
            bus.publish<test::ticks>({0, i});
        }
        bus.drain();
        CHECK(inline_calls == 10);
        CHECK(threads_now() == before);

        auto out = bus.subscribe<test::ticks>([&](const test::tick&) { ++async_calls; });
        bus.publish<test::ticks>({0, 10});
        bus.drain();
        CHECK(async_calls == 1);
        if (before >= 0) {
            CHECK(threads_now() == before + 2);
        }
    }
    CHECK(test::eventually([&] { return threads_now() == before; }));
}

TEST_CASE("a low-latency pool runs every task, and its spin budget is clamped") {
    std::atomic<int> runs{0};
    herald::thread_pool pool{{.threads = 2, .name = "fast", .spin = std::chrono::microseconds(50)}};
    CHECK(pool.spin() == std::chrono::microseconds(50));
    CHECK(pool.concurrency() == 2);
    CHECK(pool.name() == "fast");
    for (int i = 0; i < 1000; ++i) {
        pool.post(std::make_shared<counting_task>(&runs));
        if (i % 100 == 0) {
            std::this_thread::sleep_for(std::chrono::microseconds(200)); // past the budget: workers sleep
        }
    }
    CHECK(test::eventually([&] { return runs == 1000; }));
    pool.stop(); // stops while workers may be spinning

    herald::thread_pool greedy{{.threads = 1, .spin = std::chrono::hours(1)}};
    CHECK(greedy.spin() == herald::thread_pool_options::max_spin);
    herald::thread_pool negative{{.threads = 1, .spin = std::chrono::nanoseconds(-5)}};
    CHECK(negative.spin() == std::chrono::nanoseconds::zero());
}

TEST_CASE("a bus delivers through a low-latency default pool") {
    std::atomic<int> got{0};
    herald::bus bus{{.default_executor = std::make_shared<herald::thread_pool>(
                         herald::thread_pool_options{.threads = 1, .spin = std::chrono::microseconds(100)})}};
    auto sub = bus.subscribe<test::ticks>([&](const test::tick&) { ++got; });
    for (int i = 0; i < 100; ++i) {
        bus.publish<test::ticks>({0, i});
    }
    bus.drain();
    CHECK(got == 100);
}
