// Bounded mailboxes under concurrent publishers: for every overflow rule, each accepted
// event ends in exactly one outcome, nothing waits once drained, and the bound holds.
#include "support/events.hpp"

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
