// Bounded mailboxes under concurrent publishers: for every overflow rule, each accepted
// event ends in exactly one outcome, nothing waits once drained, and the bound holds.
#include "support/events.hpp"
#include "support/watchdog.hpp"

#include <doctest/doctest.h>

#include <herald/herald.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <string>
#include <thread>
#include <vector>

namespace {

struct reading {
    int sensor = 0;
    int value = 0;
};
struct readings : herald::topic<reading, herald::with_dead_letters<>> {};

constexpr int publishers = 4;
constexpr int per_publisher = test::scaled(20000, 3000);
constexpr std::size_t capacity = 64;

void run_mode(herald::overflow rule, herald::ordering order) {
    CAPTURE(static_cast<int>(rule));
    CAPTURE(static_cast<int>(order));
    herald::bus bus{{.workers = 2}};
    std::atomic<std::size_t> max_seen{0};
    herald::subscription sub;
    // The handler is slower than the publishers, so the mailbox fills up and stays full.
    auto handler = [&](const reading&) {
        const auto w = sub.stats().waiting;
        std::size_t seen = max_seen.load();
        while (w > seen && !max_seen.compare_exchange_weak(seen, w)) {
        }
        const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(2);
        while (std::chrono::steady_clock::now() < until) {
        }
    };
    sub = bus.subscribe<readings>(handler, {.order = order,
                                            .capacity = capacity,
                                            .overflow = rule,
                                            .block_timeout = std::chrono::milliseconds(1),
                                            .key = [](const reading& r) { return r.sensor; }});
    std::atomic<std::uint64_t> refused{0};
    std::vector<std::thread> threads;
    for (int p = 0; p < publishers; ++p) {
        threads.emplace_back([&, p] {
            for (int i = 0; i < per_publisher; ++i) {
                refused.fetch_add(bus.publish<readings>({(p * 7 + i) % 100, i}).refused);
            }
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    bus.drain();
    const auto s = sub.stats();
    CHECK(s.accepted == static_cast<std::uint64_t>(publishers) * per_publisher);
    CHECK(s.waiting == 0);
    CHECK(s.accepted ==
          s.delivered + s.failed + s.dropped + s.rejected + s.conflated + s.dead_lettered + s.discarded + s.expired);
    CHECK(s.rejected == refused.load());
    CHECK(s.high_water <= capacity);
    CHECK(max_seen.load() <= capacity);
    CHECK(s.failed == 0);
    if (rule == herald::overflow::dead_letter) {
        const auto kept = bus.stats();
        CHECK(kept.dead_letters_stored + kept.dead_letters_evicted == s.dead_lettered);
    }
}

} // namespace

TEST_CASE("every overflow rule conserves events under four publishers (serial)") {
    for (auto rule : {herald::overflow::block, herald::overflow::reject, herald::overflow::drop_newest,
                      herald::overflow::drop_oldest, herald::overflow::dead_letter, herald::overflow::conflate}) {
        run_mode(rule, herald::ordering::serial);
    }
}

TEST_CASE("the rules a concurrent subscriber has conserve events under four publishers") {
    for (auto rule : {herald::overflow::block, herald::overflow::reject, herald::overflow::drop_newest,
                      herald::overflow::dead_letter}) {
        run_mode(rule, herald::ordering::concurrent);
    }
}

namespace {

struct keyed_entry {
    int key = 0;
    int publisher = 0;
    int n = 0;
};
struct keyed_entries : herald::topic<keyed_entry> {};

} // namespace

TEST_CASE("by_key: keys whose queues come and go under twelve publishers lose nothing and keep order") {
    // Twelve publishers alive at once: more than the keyed mailbox's pins, so some put
    // through its lock while the others use their pin. Every 64 events a publisher
    // pauses longer than a dry key waits, so key queues leave the mailbox and come back
    // while publishers that cached them keep publishing to their keys.
    constexpr int publishers = 12;
    constexpr int keys = 4;
    const int per_publisher = test::scaled(4000, 800);
    herald::bus bus{{.workers = 1}};
    auto pool = bus.make_pool(3);
    std::vector<std::atomic<int>> inside(keys);
    std::atomic<int> overlap{0};
    std::atomic<int> out_of_order{0};
    std::atomic<int> handled{0};
    std::vector<std::vector<int>> last(keys, std::vector<int>(publishers, -1)); // one key's calls never overlap
    auto sub = bus.subscribe<keyed_entries>(
        [&](const keyed_entry& e) {
            if (inside[static_cast<std::size_t>(e.key)].fetch_add(1) != 0) {
                overlap.fetch_add(1);
            }
            int& seen = last[static_cast<std::size_t>(e.key)][static_cast<std::size_t>(e.publisher)];
            if (e.n <= seen) {
                out_of_order.fetch_add(1);
            }
            seen = e.n;
            inside[static_cast<std::size_t>(e.key)].fetch_sub(1);
            handled.fetch_add(1);
        },
        {.order = herald::ordering::by_key, .pool = pool, .key = [](const keyed_entry& e) { return e.key; }});
    std::atomic<int> ready{0};
    std::vector<std::thread> threads;
    for (int p = 0; p < publishers; ++p) {
        threads.emplace_back([&, p] {
            ready.fetch_add(1);
            while (ready.load() < publishers) {
                std::this_thread::yield();
            }
            for (int i = 0; i < per_publisher; ++i) {
                bus.publish<keyed_entries>({(i / 16 + p) % keys, p, i});
                if (i % 64 == 63) {
                    std::this_thread::sleep_for(std::chrono::microseconds(50));
                }
            }
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    {
        // An event put into a queue that had left would never run: drain() would hang.
        const test::watchdog dog("drain() after keyed queues came and went");
        bus.drain();
    }
    CHECK(handled.load() == publishers * per_publisher);
    CHECK(overlap.load() == 0);
    CHECK(out_of_order.load() == 0);
    const auto s = sub.stats();
    CHECK(s.accepted == static_cast<std::uint64_t>(publishers * per_publisher));
    CHECK(s.delivered == s.accepted);
    CHECK(s.waiting == 0);
}
