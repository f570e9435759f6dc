#include "support/events.hpp"

#include <doctest/doctest.h>

#include <herald/thread_pool.hpp>

#include <atomic>
#include <memory>
#include <stdexcept>

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
