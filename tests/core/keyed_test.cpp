// ordering::by_key: equal keys one at a time in publish order, different keys in
// parallel, a slow key holding back only itself.
#include "support/events.hpp"
#include "support/watchdog.hpp"

#include <doctest/doctest.h>

#include <herald/herald.hpp>
#include <herald/testing.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

namespace {

struct order_event {
    int account = 0;
    int publisher = 0;
    int n = 0;
};
struct account_events : herald::topic<order_event> {};
/// Copy-only (every move is a copy); the copy throws once `copies_left` (this thread's)
/// reaches zero.
struct brittle {
    static inline thread_local int copies_left = -1; // negative: unlimited
    int account = 0;
    int n = 0;
    brittle(int a, int v) : account(a), n(v) {}
    brittle(const brittle& other) : account(other.account), n(other.n) {
        if (copies_left == 0) {
            throw std::runtime_error("copy refused");
        }
        if (copies_left > 0) {
            --copies_left;
        }
    }
    brittle& operator=(const brittle&) = default;
    ~brittle() = default;
};
struct brittle_events : herald::topic<brittle> {};
struct retried_account_events
    : herald::topic<order_event,
                    herald::at_least_once<herald::max_attempts<3>, herald::fixed_backoff<herald::delay::ms(1)>>> {};

} // namespace

TEST_CASE("by_key: per-key order is exact, keys run in parallel, calls of one key never overlap") {
    constexpr int publishers = 4;
    constexpr int keys = test::scaled(1000, 200);
    constexpr int per_publisher = test::scaled(2000, 400);
    herald::bus bus{{.workers = 1}};
    auto pool = bus.make_pool(8);
    std::mutex mutex;
    std::map<std::pair<int, int>, int> last; // (account, publisher) -> last n seen
    std::vector<std::atomic<int>> inside(keys);
    std::atomic<int> overlap{0};
    std::atomic<int> running{0};
    std::atomic<int> most_running{0};
    std::atomic<int> out_of_order{0};
    std::atomic<int> handled{0};
    auto sub = bus.subscribe<account_events>(
        [&](const order_event& e) {
            if (inside[static_cast<std::size_t>(e.account)].fetch_add(1) != 0) {
                overlap.fetch_add(1);
            }
            const int now = running.fetch_add(1) + 1;
            int seen = most_running.load();
            while (now > seen && !most_running.compare_exchange_weak(seen, now)) {
            }
            {
                const std::lock_guard lock(mutex);
                auto [it, fresh] = last.try_emplace({e.account, e.publisher}, -1);
                if (e.n <= it->second) {
                    out_of_order.fetch_add(1);
                }
                it->second = e.n;
            }
            std::this_thread::sleep_for(std::chrono::microseconds(100));
            running.fetch_sub(1);
            inside[static_cast<std::size_t>(e.account)].fetch_sub(1);
            handled.fetch_add(1);
        },
        {.order = herald::ordering::by_key, .pool = pool, .key = [](const order_event& e) { return e.account; }});
    std::vector<std::thread> threads;
    for (int p = 0; p < publishers; ++p) {
        threads.emplace_back([&, p] {
            for (int i = 0; i < per_publisher; ++i) {
                bus.publish<account_events>({(i * 31 + p * 7) % keys, p, i});
            }
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    bus.drain();
    CHECK(handled.load() == publishers * per_publisher);
    CHECK(overlap.load() == 0);
    CHECK(out_of_order.load() == 0);
    CHECK(most_running.load() > 1);
    const auto s = sub.stats();
    CHECK(s.delivered == static_cast<std::uint64_t>(publishers * per_publisher));
    CHECK(s.accepted == s.delivered);
}

TEST_CASE("by_key: a slow key holds back only its own events") {
    herald::bus bus{{.workers = 1}};
    auto pool = bus.make_pool(2);
    std::atomic<bool> release{false};
    std::atomic<int> fast_done{0};
    auto sub = bus.subscribe<account_events>(
        [&](const order_event& e) {
            if (e.account == 0) {
                while (!release.load()) {
                    std::this_thread::sleep_for(std::chrono::milliseconds(1));
                }
            } else {
                fast_done.fetch_add(1);
            }
        },
        {.order = herald::ordering::by_key, .pool = pool, .key = [](const order_event& e) { return e.account; }});
    bus.publish<account_events>({0, 0, 0});
    bus.publish<account_events>({0, 0, 1}); // waits behind its key
    for (int i = 0; i < 100; ++i) {
        bus.publish<account_events>({1 + i % 10, 0, i});
    }
    CHECK(test::eventually([&] { return fast_done.load() == 100; }));
    CHECK(sub.stats().waiting >= 1);
    release.store(true);
    bus.drain();
    CHECK(sub.stats().delivered == 102);
}

TEST_CASE("by_key with a bound refuses like any bounded mailbox, and conserves events") {
    herald::testing::harness h;
    std::vector<int> seen;
    auto sub = h.bus().subscribe<account_events>([&](const order_event& e) { seen.push_back(e.n); },
                                                 {.order = herald::ordering::by_key,
                                                  .capacity = 3,
                                                  .overflow = herald::overflow::reject,
                                                  .key = [](const order_event& e) { return e.account; }});
    int refused = 0;
    for (int i = 0; i < 5; ++i) {
        refused += static_cast<int>(h.bus().publish<account_events>({i % 2, 0, i}).refused);
    }
    CHECK(refused == 2);
    CHECK(sub.stats().waiting == 3);
    h.run_until_idle();
    CHECK(seen.size() == 3);
    const auto s = sub.stats();
    CHECK(s.waiting == 0);
    CHECK(s.accepted == s.delivered + s.rejected);
}

TEST_CASE("by_key needs a key, and priority topics stay serial") {
    herald::testing::harness h;
    CHECK_THROWS_AS(
        (void)h.bus().subscribe<account_events>([](const order_event&) {}, {.order = herald::ordering::by_key}),
        herald::usage_error);
    struct ranked : herald::topic<order_event, herald::priority<2>> {};
    CHECK_THROWS_AS((void)h.bus().subscribe<ranked>(
                        [](const order_event&) {},
                        {.order = herald::ordering::by_key, .key = [](const order_event& e) { return e.account; }}),
                    herald::usage_error);
}

TEST_CASE("by_key: unsubscribing discards what waits, and drain still returns") {
    herald::bus bus{{.workers = 1}};
    std::atomic<bool> release{false};
    auto sub = bus.subscribe<account_events>(
        [&](const order_event&) {
            while (!release.load()) {
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
            }
        },
        {.order = herald::ordering::by_key, .key = [](const order_event& e) { return e.account; }});
    for (int i = 0; i < 20; ++i) {
        bus.publish<account_events>({i % 3, 0, i});
    }
    std::thread releaser([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(30));
        release.store(true);
    });
    sub.unsubscribe();
    releaser.join();
    bus.drain();
    const auto s = sub.stats();
    CHECK(s.delivered + s.discarded == 20);
}

TEST_CASE("by_key: a retry goes back to its key's queue, and nothing else is woken") {
    // A failed attempt is retried through the key's own queue; the retry must not wake
    // the serial strand a keyed subscriber does not use (which would spin on a mailbox it
    // cannot take from, holding the subscriber, so that unsubscribe() never returned).
    herald::testing::harness h;
    std::map<int, std::vector<int>> seen;
    std::map<int, int> failures;
    auto sub = h.bus().subscribe<retried_account_events>(
        [&](const order_event& e) {
            if (e.n % 2 == 0 && failures[e.n]++ == 0) {
                throw std::runtime_error("first attempt fails");
            }
            seen[e.account].push_back(e.n);
        },
        {.order = herald::ordering::by_key, .key = [](const order_event& e) { return e.account; }});
    for (int i = 0; i < 12; ++i) {
        h.bus().publish<retried_account_events>({i % 3, 0, i});
    }
    (void)h.settle();
    CHECK(h.pending() == 0);
    std::size_t handled = 0;
    for (const auto& [account, ns] : seen) {
        handled += ns.size();
    }
    CHECK(handled == 12);
    const auto s = sub.stats();
    CHECK(s.delivered == 12);
    CHECK(s.retried == 6);
    CHECK(s.accepted == 12);
    sub.unsubscribe(); // returns: nothing holds the subscriber
    CHECK_FALSE(sub.is_connected());
}

TEST_CASE("by_key: a copy that throws fails only its event, into a running key or a new one") {
    auto token = std::make_shared<int>(0);
    std::vector<int> seen;
    herald::subscription_stats s{};
    {
        herald::bus bus{{.workers = 1}};
        std::mutex mutex;
        auto sub = bus.subscribe<brittle_events>(
            [&, token](const brittle& e) {
                const std::lock_guard lock(mutex);
                seen.push_back(e.n);
            },
            {.order = herald::ordering::by_key, .key = [](const brittle& e) { return e.account; }});
        // The publish's own copy succeeds; the copy into the mailbox throws.
        const auto refused_copy = [&](int account, int n) {
            const brittle e{account, n};
            brittle::copies_left = 1;
            const auto r = bus.publish<brittle_events>(e);
            brittle::copies_left = -1;
            CHECK(r.failed_to_queue == 1);
        };
        const auto publish = [&](int account, int n) { (void)bus.publish<brittle_events>(brittle{account, n}); };
        publish(1, 0);
        refused_copy(1, 1); // key 1's queue is probably still running
        publish(1, 2);
        bus.drain();
        std::this_thread::sleep_for(std::chrono::milliseconds(20)); // key 1's queue has left
        refused_copy(2, 3); // a new queue, made for the put that failed, must leave again
        publish(2, 4);
        refused_copy(1, 5);
        publish(1, 6);
        {
            // A failed put that left its new queue listed but never posted would strand
            // the events after it, and drain() would not return.
            const test::watchdog dog("drain() after failed puts into keyed queues");
            bus.drain();
        }
        s = sub.stats();
    }
    // The bus is gone: nothing (a key queue that never left, a publisher's pin) may keep
    // the subscriber, and with it the handler, alive.
    CHECK(token.use_count() == 1);
    const std::vector<int> expected{0, 2, 4, 6};
    std::sort(seen.begin(), seen.end()); // keys 1 and 2 may run in either order
    CHECK(seen == expected);
    CHECK(s.failed == 3);
    CHECK(s.delivered == 4);
    CHECK(s.accepted == 7);
}
