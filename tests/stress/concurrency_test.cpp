// Concurrency promises under load: exact delivery counts, per-publisher order, and
// subscribe/unsubscribe/drain racing with publishers. Also run under ThreadSanitizer.
#include "support/events.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

namespace {

constexpr int events_per_publisher = test::scaled(20000, 3000);
constexpr int publishers = 4;

/// Counts how often each (publisher, value) reached one subscriber, and whether one
/// publisher's events arrived in order.
struct ledger {
    explicit ledger(bool check_order) : ordered(check_order), hits(publishers * events_per_publisher) {
        for (auto& last : last_seen) {
            last = -1;
        }
    }
    void record(const test::tick& t) {
        hits[static_cast<std::size_t>(t.publisher * events_per_publisher + t.value)].fetch_add(1);
        if (ordered) {
            // Serial subscribers: calls never overlap, so plain reads of last_seen are safe.
            auto& last = last_seen[static_cast<std::size_t>(t.publisher)];
            if (t.value <= last) {
                out_of_order.fetch_add(1);
            }
            last = t.value;
        }
    }
    [[nodiscard]] int wrong_counts() const {
        int wrong = 0;
        for (const auto& h : hits) {
            wrong += h.load() == 1 ? 0 : 1;
        }
        return wrong;
    }
    bool ordered;
    std::vector<std::atomic<int>> hits;
    std::array<int, publishers> last_seen{};
    std::atomic<int> out_of_order{0};
};

void publish_all(herald::bus& bus) {
    std::vector<std::thread> threads;
    for (int p = 0; p < publishers; ++p) {
        threads.emplace_back([&bus, p] {
            for (int i = 0; i < events_per_publisher; ++i) {
                CHECK(bus.publish<test::ticks>({p, i}).accepted());
            }
        });
    }
    for (auto& t : threads) {
        t.join();
    }
}

} // namespace

TEST_CASE("every (event, subscriber) pair is handled exactly once, in order per publisher for serial subscribers") {
    herald::bus bus{{.workers = 2}};
    ledger serial_a{true};
    ledger serial_b{true};
    ledger dedicated{true};
    ledger concurrent{false};
    ledger immediate{false};
    auto a = bus.subscribe<test::ticks>([&](const test::tick& t) { serial_a.record(t); });
    auto b = bus.subscribe<test::ticks>([&](const herald::envelope<test::tick>& e) { serial_b.record(e.event()); });
    auto c = bus.subscribe<test::ticks>([&](const test::tick& t) { dedicated.record(t); },
                                        {.pool = bus.make_pool(1, "dedicated")});
    auto d = bus.subscribe<test::ticks>([&](test::tick t) { concurrent.record(t); },
                                        {.order = herald::ordering::concurrent});
    auto e = bus.subscribe<test::ticks>([&](const test::tick& t) { immediate.record(t); },
                                        {.mode = herald::inline_delivery});
    publish_all(bus);
    bus.drain();
    for (ledger* l : {&serial_a, &serial_b, &dedicated, &concurrent, &immediate}) {
        CHECK(l->wrong_counts() == 0);
        CHECK(l->out_of_order == 0);
    }
    const auto stats = bus.stats();
    CHECK(stats.published == publishers * events_per_publisher);
    CHECK(stats.delivered == 5ULL * publishers * events_per_publisher);
    CHECK(stats.failed == 0);
}

TEST_CASE("a strand that keeps going idle between events never strands one (no lost wake-up)") {
    // Publishers pause 0-3 us between events, so the serial strands run dry, nap and give
    // up their worker over and over while the next publish races the hand-back. A lost
    // wake-up leaves events queued with no worker scheduled: the counts below would stall,
    // and no drain() is called to rescue them.
    herald::bus bus{{.workers = 2}};
    ledger serial_a{true};
    ledger serial_b{true};
    std::atomic<int> handled{0};
    auto a = bus.subscribe<test::ticks>([&](const test::tick& t) {
        serial_a.record(t);
        handled.fetch_add(1);
    });
    auto b = bus.subscribe<test::ticks>([&](const test::tick& t) {
        serial_b.record(t);
        handled.fetch_add(1);
    });
    constexpr int per_publisher = test::scaled(5000, 1000);
    std::vector<std::thread> threads;
    for (int p = 0; p < 2; ++p) {
        threads.emplace_back([&bus, p] {
            for (int i = 0; i < per_publisher; ++i) {
                CHECK(bus.publish<test::ticks>({p, i}).accepted());
                const auto pause = std::chrono::nanoseconds((i * 7919 + p * 104729) % 3000);
                const auto until = std::chrono::steady_clock::now() + pause;
                while (std::chrono::steady_clock::now() < until) {
                }
            }
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    const int expected = 2 * 2 * per_publisher;
    CHECK(test::eventually([&] { return handled.load() == expected; }));
    CHECK(handled.load() == expected);
    for (ledger* l : {&serial_a, &serial_b}) {
        CHECK(l->out_of_order == 0);
        int delivered = 0;
        for (int p = 0; p < 2; ++p) {
            for (int i = 0; i < per_publisher; ++i) {
                delivered += l->hits[static_cast<std::size_t>(p * events_per_publisher + i)].load();
            }
        }
        CHECK(delivered == 2 * per_publisher);
    }
}

TEST_CASE("subscribe and unsubscribe racing with publishers keep their promises") {
    herald::bus bus{{.workers = 2}};
    ledger steady{true};
    auto keep = bus.subscribe<test::ticks>([&](const test::tick& t) { steady.record(t); });

    std::atomic<bool> publishing{true};
    std::atomic<int> late_calls{0};
    std::atomic<int> churned_calls{0};
    std::thread churn([&] {
        int round = 0;
        while (publishing.load()) {
            auto gone = std::make_shared<std::atomic<bool>>(false);
            const auto mode = round % 2 == 0 ? herald::async_delivery : herald::inline_delivery;
            auto sub = bus.subscribe<test::ticks>(
                [gone, &late_calls, &churned_calls](const test::tick&) {
                    ++churned_calls;
                    if (gone->load()) {
                        ++late_calls; // entered after unsubscribe returned: a broken promise
                    }
                },
                {.mode = mode});
            std::this_thread::yield();
            sub.unsubscribe();
            gone->store(true);
            ++round;
        }
    });
    publish_all(bus);
    publishing = false;
    churn.join();
    bus.drain();
    CHECK(late_calls == 0);
    CHECK(steady.wrong_counts() == 0);
    CHECK(steady.out_of_order == 0);
    MESSAGE("churned subscribers handled " << churned_calls.load() << " events");
}

TEST_CASE("drain racing with publishers waits for everything published before it") {
    herald::bus bus{{.workers = 2}};
    std::atomic<long> handled{0};
    std::atomic<long> published{0};
    auto sub = bus.subscribe<test::ticks>([&](const test::tick&) { handled.fetch_add(1); });
    std::atomic<bool> running{true};
    std::thread publisher([&] {
        int i = 0;
        while (running.load()) {
            bus.publish<test::ticks>({0, i++});
            published.fetch_add(1);
        }
    });
    int violations = 0;
    for (int round = 0; round < 200; ++round) {
        const long before = published.load();
        bus.drain();
        violations += handled.load() < before ? 1 : 0;
    }
    running = false;
    publisher.join();
    bus.drain();
    CHECK(violations == 0);
    CHECK(handled.load() == published.load());
}

TEST_CASE("a bus destroyed while other threads unsubscribe") {
    for (int round = 0; round < 20; ++round) {
        std::vector<herald::subscription> subs;
        auto bus = std::make_unique<herald::bus>(herald::bus_options{.workers = 2});
        std::atomic<int> calls{0};
        for (int i = 0; i < 8; ++i) {
            subs.push_back(bus->subscribe<test::ticks>([&](const test::tick&) { ++calls; }));
        }
        for (int i = 0; i < 100; ++i) {
            bus->publish<test::ticks>({0, i});
        }
        std::thread unsubscriber([&] {
            for (auto& s : subs) {
                s.unsubscribe();
            }
        });
        bus.reset();
        unsubscriber.join();
        CHECK(calls <= 800);
    }
}
