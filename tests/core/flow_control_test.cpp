// Bounded mailboxes: every overflow rule, what publish_result and the statistics say,
// blocking publishers that must not deadlock, and the options herald refuses.
#include "support/events.hpp"

#include <doctest/doctest.h>

#include <herald/herald.hpp>
#include <herald/testing.hpp>

#include <atomic>
#include <chrono>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

struct quote {
    std::string symbol;
    int price = 0;
};
struct quotes : herald::topic<quote> {};
struct letters_quotes : herald::topic<quote, herald::with_dead_letters<>> {};
struct retried_quotes
    : herald::topic<quote,
                    herald::at_least_once<herald::max_attempts<3>, herald::fixed_backoff<herald::delay::ms(1)>>> {};

/// Conservation once nothing waits: every accepted event has exactly one outcome.
void check_conservation(const herald::subscription_stats& s) {
    CHECK(s.waiting == 0);
    CHECK(s.accepted ==
          s.delivered + s.failed + s.dropped + s.rejected + s.conflated + s.dead_lettered + s.discarded + s.expired);
}

/// A handler that waits until `open` is set, then records the event.
struct gated_log {
    std::atomic<bool> open{false};
    std::vector<std::string> seen;
    std::mutex mutex;
    void operator()(const quote& q) {
        while (!open.load()) {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        const std::lock_guard lock(mutex);
        seen.push_back(q.symbol + std::to_string(q.price));
    }
};

} // namespace

TEST_CASE("reject: a full mailbox refuses, and the publish result names who refused") {
    herald::testing::harness h;
    std::vector<int> seen;
    auto sub = h.bus().subscribe<quotes>([&](const quote& q) { seen.push_back(q.price); },
                                         {.name = "ticker", .capacity = 2, .overflow = herald::overflow::reject});
    CHECK(h.bus().publish<quotes>({"A", 1}).queued == 1);
    CHECK(h.bus().publish<quotes>({"A", 2}).queued == 1);
    const herald::publish_result third = h.bus().publish<quotes>({"A", 3});
    CHECK(third.accepted());
    CHECK(third.queued == 0);
    CHECK(third.refused == 1);
    REQUIRE(third.refused_by.size() == 1);
    CHECK(third.refused_by[0] == "ticker");
    auto s = sub.stats();
    CHECK(s.accepted == 3);
    CHECK(s.rejected == 1);
    CHECK(s.waiting == 2);
    CHECK(s.capacity == 2);
    CHECK(s.high_water == 2);
    h.run_until_idle();
    CHECK(seen == std::vector<int>{1, 2});
    // Room again once the strand took them.
    CHECK(h.bus().publish<quotes>({"A", 4}).queued == 1);
    h.run_until_idle();
    CHECK(seen == std::vector<int>{1, 2, 4});
    check_conservation(sub.stats());
    CHECK(h.bus().stats().refused == 1);
}

TEST_CASE("drop_newest and drop_oldest keep the first or the last events, counted as dropped") {
    herald::testing::harness h;
    std::vector<int> newest_kept;
    std::vector<int> oldest_kept;
    auto newest = h.bus().subscribe<quotes>([&](const quote& q) { newest_kept.push_back(q.price); },
                                            {.capacity = 2, .overflow = herald::overflow::drop_newest});
    auto oldest = h.bus().subscribe<quotes>([&](const quote& q) { oldest_kept.push_back(q.price); },
                                            {.capacity = 2, .overflow = herald::overflow::drop_oldest});
    for (int i = 1; i <= 5; ++i) {
        const auto r = h.bus().publish<quotes>({"A", i});
        CHECK(r.refused == 0);
    }
    CHECK(newest.stats().waiting == 2);
    CHECK(oldest.stats().waiting == 2);
    h.run_until_idle();
    CHECK(newest_kept == std::vector<int>{1, 2});
    CHECK(oldest_kept == std::vector<int>{4, 5});
    CHECK(newest.stats().dropped == 3);
    CHECK(oldest.stats().dropped == 3);
    check_conservation(newest.stats());
    check_conservation(oldest.stats());
    h.bus().drain(); // drain counts of the dropped events were settled
}

TEST_CASE("conflate keeps only the newest waiting event of each key, in its place") {
    herald::testing::harness h;
    std::vector<std::string> seen;
    auto sub = h.bus().subscribe<quotes>(
        [&](const quote& q) { seen.push_back(q.symbol + std::to_string(q.price)); },
        {.capacity = 2, .overflow = herald::overflow::conflate, .key = [](const quote& q) { return q.symbol; }});
    h.bus().publish<quotes>({"A", 1});
    h.bus().publish<quotes>({"B", 1});
    h.bus().publish<quotes>({"A", 2}); // replaces A1 where it waits
    h.bus().publish<quotes>({"B", 2});
    h.run_until_idle();
    CHECK(seen == std::vector<std::string>{"A2", "B2"});
    CHECK(sub.stats().conflated == 2);
    // A new key when `capacity` keys wait drops the oldest.
    seen.clear();
    h.bus().publish<quotes>({"A", 3});
    h.bus().publish<quotes>({"B", 3});
    h.bus().publish<quotes>({"C", 1});
    h.run_until_idle();
    CHECK(seen == std::vector<std::string>{"B3", "C1"});
    CHECK(sub.stats().dropped == 1);
    check_conservation(sub.stats());
    h.bus().drain();
}

TEST_CASE("conflate without a bound keeps one event per key and never drops") {
    herald::testing::harness h;
    std::vector<std::string> seen;
    auto sub = h.bus().subscribe<quotes>([&](const quote& q) { seen.push_back(q.symbol + std::to_string(q.price)); },
                                         {.capacity = herald::unbounded,
                                          .overflow = herald::overflow::conflate,
                                          .key = [](const quote& q) { return q.symbol; }});
    for (int round = 1; round <= 3; ++round) {
        for (const char* symbol : {"A", "B", "C", "D"}) {
            h.bus().publish<quotes>({symbol, round});
        }
    }
    h.run_until_idle();
    CHECK(seen == std::vector<std::string>{"A3", "B3", "C3", "D3"});
    CHECK(sub.stats().conflated == 8);
    CHECK(sub.stats().capacity == herald::unbounded);
    check_conservation(sub.stats());
}

TEST_CASE("a key extractor that throws is a failed delivery of that subscriber only") {
    herald::testing::harness h;
    int others = 0;
    auto keyed = h.bus().subscribe<quotes>(
        [](const quote&) {}, {.overflow = herald::overflow::conflate, .key = [](const quote& q) -> std::string {
                                  if (q.price < 0) {
                                      throw std::runtime_error("no key");
                                  }
                                  return q.symbol;
                              }});
    auto other = h.bus().subscribe<quotes>([&](const quote&) { ++others; });
    const auto r = h.bus().publish<quotes>({"A", -1});
    CHECK(r.failed_to_queue == 1);
    CHECK(r.queued == 1);
    h.run_until_idle();
    CHECK(others == 1);
    CHECK(keyed.stats().failed == 1);
    check_conservation(keyed.stats());
    CHECK(h.errors().size() == 1);
}

TEST_CASE("dead_letter: an event a full mailbox turns away becomes a dead letter with reason overflow") {
    herald::testing::harness h;
    auto sub = h.bus().subscribe<letters_quotes>([](const quote&) {},
                                                 {.capacity = 1, .overflow = herald::overflow::dead_letter});
    h.bus().publish<letters_quotes>({"A", 1});
    const auto second = h.bus().publish<letters_quotes>({"A", 2});
    CHECK(second.overflowed == 1);
    const auto letters = h.bus().dead_letters<letters_quotes>();
    REQUIRE(letters.size() == 1);
    CHECK(letters[0].reason == herald::dead_letter_reason::overflow);
    CHECK(letters[0].original.event().price == 2);
    CHECK(letters[0].attempts == 0);
    h.run_until_idle();
    CHECK(sub.stats().dead_lettered == 1);
    check_conservation(sub.stats());
}

TEST_CASE("a retry takes its place in the bounded mailbox again, so the bound stays exact") {
    // A retry re-enters the mailbox without asking for room (the event was accepted
    // already) but gives its place back when it is taken out, like any event: the
    // places it takes and gives back must balance, or the bound loosens by one per retry.
    herald::testing::harness h;
    std::vector<int> seen;
    int failures_left = 4;
    auto sub = h.bus().subscribe<retried_quotes>(
        [&](const quote& q) {
            if (failures_left > 0) {
                --failures_left;
                throw std::runtime_error("not yet");
            }
            seen.push_back(q.price);
        },
        {.capacity = 2, .overflow = herald::overflow::reject});
    h.bus().publish<retried_quotes>({"A", 1});
    h.bus().publish<retried_quotes>({"A", 2});
    (void)h.settle();
    CHECK(seen == std::vector<int>{1, 2});
    CHECK(sub.stats().retried == 4);
    CHECK(sub.stats().waiting == 0);
    // Still exactly two places: the third publish is refused.
    CHECK(h.bus().publish<retried_quotes>({"A", 3}).queued == 1);
    CHECK(h.bus().publish<retried_quotes>({"A", 4}).queued == 1);
    CHECK(h.bus().publish<retried_quotes>({"A", 5}).refused == 1);
    CHECK(sub.stats().high_water == 2);
    (void)h.settle();
    CHECK(seen == std::vector<int>{1, 2, 3, 4});
    const auto s = sub.stats();
    CHECK(s.accepted == 5);
    CHECK(s.delivered == 4);
    CHECK(s.rejected == 1);
    CHECK(s.failed == 4);
}

TEST_CASE("options herald does not offer are usage errors at subscribe") {
    herald::testing::harness h;
    CHECK_THROWS_AS((void)h.bus().subscribe<quotes>([](const quote&) {}, {.overflow = herald::overflow::conflate}),
                    herald::usage_error);
    CHECK_THROWS_AS((void)h.bus().subscribe<quotes>([](const quote&) {}, {.order = herald::ordering::concurrent,
                                                                          .capacity = 4,
                                                                          .overflow = herald::overflow::drop_oldest}),
                    herald::usage_error);
    CHECK_THROWS_AS((void)h.bus().subscribe<quotes>([](const quote&) {},
                                                    {.capacity = 4, .overflow = herald::overflow::dead_letter}),
                    herald::usage_error);
    struct ranked : herald::topic<quote, herald::priority<3>> {};
    CHECK_THROWS_AS((void)h.bus().subscribe<ranked>([](const quote&) {},
                                                    {.capacity = 4, .overflow = herald::overflow::drop_oldest}),
                    herald::usage_error);
    // Bounded priority and concurrent subscribers with the other rules are fine.
    auto a = h.bus().subscribe<ranked>([](const quote&) {}, {.capacity = 4, .overflow = herald::overflow::reject});
    auto b = h.bus().subscribe<quotes>(
        [](const quote&) {},
        {.order = herald::ordering::concurrent, .capacity = 4, .overflow = herald::overflow::drop_newest});
    CHECK(a.stats().capacity == 4);
    CHECK(b.stats().capacity == 4);
}

TEST_CASE("the bus's default capacity applies to subscriptions that set none") {
    herald::testing::harness h;
    herald::bus bounded{{.workers = 1, .default_capacity = 3}};
    auto sub = bounded.subscribe<quotes>([](const quote&) {}, {.overflow = herald::overflow::reject});
    auto own = bounded.subscribe<quotes>([](const quote&) {}, {.capacity = herald::unbounded});
    CHECK(sub.stats().capacity == 3);
    CHECK(own.stats().capacity == herald::unbounded);
    auto plain = h.bus().subscribe<quotes>([](const quote&) {});
    CHECK(plain.stats().capacity == herald::unbounded);
}

TEST_CASE("block: the publisher waits for room and goes on once the subscriber takes events") {
    herald::bus bus{{.workers = 1}};
    gated_log log;
    auto sub = bus.subscribe<quotes>(std::ref(log), {.capacity = 1, .overflow = herald::overflow::block});
    bus.publish<quotes>({"A", 1}); // taken by the strand, which waits in the handler
    CHECK(test::eventually([&] { return sub.stats().waiting == 1; }));
    std::thread opener([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        log.open.store(true);
    });
    const auto started = std::chrono::steady_clock::now();
    const auto r = bus.publish<quotes>({"A", 2}); // full until the handler returns
    const auto waited = std::chrono::steady_clock::now() - started;
    opener.join();
    CHECK(r.queued == 1);
    CHECK(r.refused == 0);
    CHECK(waited >= std::chrono::milliseconds(20));
    bus.drain();
    CHECK(log.seen == std::vector<std::string>{"A1", "A2"});
    CHECK(sub.stats().blocked >= std::chrono::milliseconds(20));
    check_conservation(sub.stats());
}

TEST_CASE("block: a publisher still blocked when the timeout passes is refused") {
    herald::bus bus{{.workers = 1}};
    gated_log log;
    auto sub = bus.subscribe<quotes>(
        std::ref(log),
        {.capacity = 1, .overflow = herald::overflow::block, .block_timeout = std::chrono::milliseconds(30)});
    bus.publish<quotes>({"A", 1});
    CHECK(test::eventually([&] { return sub.stats().waiting == 1; }));
    const auto started = std::chrono::steady_clock::now();
    const auto r = bus.publish<quotes>({"A", 2});
    CHECK(std::chrono::steady_clock::now() - started >= std::chrono::milliseconds(30));
    CHECK(r.refused == 1);
    log.open.store(true);
    bus.drain();
    CHECK(sub.stats().rejected == 1);
    check_conservation(sub.stats());
}

TEST_CASE("block never waits inside a handler: a full mailbox on the handler's own pool refuses at once") {
    struct pings : herald::topic<int> {};
    struct pongs : herald::topic<int> {};
    herald::bus bus{{.workers = 1}};
    const auto patience = std::chrono::seconds(30); // far longer than the test may take
    std::atomic<int> refused{0};
    std::atomic<int> handled{0};
    // Two topics whose handlers publish into each other, on one worker, with mailboxes
    // of one event: a wait would need the worker that is waiting.
    auto ping = bus.subscribe<pings>(
        [&](int n) {
            handled.fetch_add(1);
            if (n > 0) {
                refused.fetch_add(static_cast<int>(bus.publish<pongs>(n - 1).refused));
                refused.fetch_add(static_cast<int>(bus.publish<pongs>(n - 1).refused));
            }
        },
        {.capacity = 1, .overflow = herald::overflow::block, .block_timeout = patience});
    auto pong = bus.subscribe<pongs>(
        [&](int n) {
            handled.fetch_add(1);
            if (n > 0) {
                refused.fetch_add(static_cast<int>(bus.publish<pings>(n - 1).refused));
                refused.fetch_add(static_cast<int>(bus.publish<pings>(n - 1).refused));
            }
        },
        {.capacity = 1, .overflow = herald::overflow::block, .block_timeout = patience});
    const auto started = std::chrono::steady_clock::now();
    bus.publish<pings>(12);
    // drain() does not wait for what handlers publish during the call: drain until a
    // whole drain ran no handler, so that the ping-pong has ended.
    for (int before = -1; before != handled.load();) {
        before = handled.load();
        bus.drain();
    }
    CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(10));
    CHECK(refused.load() > 0);
    check_conservation(ping.stats());
    check_conservation(pong.stats());
}

TEST_CASE("unsubscribe does not wait for a publisher blocked on the subscriber's full mailbox") {
    herald::bus bus{{.workers = 1}};
    gated_log log;
    auto sub = bus.subscribe<quotes>(
        std::ref(log), {.capacity = 1, .overflow = herald::overflow::block, .block_timeout = std::chrono::seconds(30)});
    bus.publish<quotes>({"A", 1});
    CHECK(test::eventually([&] { return sub.stats().waiting == 1; }));
    std::atomic<bool> published{false};
    std::thread publisher([&] {
        bus.publish<quotes>({"A", 2});
        published.store(true);
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::thread releaser([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        log.open.store(true);
    });
    const auto started = std::chrono::steady_clock::now();
    sub.unsubscribe(); // waits for the running handler (50 ms), not for the publisher's 30 s
    CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(10));
    releaser.join();
    publisher.join();
    CHECK(published.load());
    bus.drain();
}

namespace {

/// Too large to wait in a ring mailbox's slot: it waits behind a pointer.
struct big_quote {
    std::string symbol;
    int price = 0;
    char pad[3000] = {};
};
/// A move that may throw (it never does here): it waits behind a pointer too.
struct risky_quote {
    std::string symbol;
    int price = 0;
    risky_quote(std::string s, int p) : symbol(std::move(s)), price(p) {}
    risky_quote(const risky_quote&) = default;
    risky_quote(risky_quote&& other) noexcept(false) : symbol(std::move(other.symbol)), price(other.price) {}
    risky_quote& operator=(const risky_quote&) = default;
    risky_quote& operator=(risky_quote&&) = default;
    ~risky_quote() = default;
};
/// Copy-only (every move is a copy); the copy throws once `copies_left` (this
/// thread's) reaches zero.
struct brittle_quote {
    static inline thread_local int copies_left = -1; // negative: unlimited
    std::string symbol;
    int price = 0;
    brittle_quote(std::string s, int p) : symbol(std::move(s)), price(p) {}
    brittle_quote(const brittle_quote& other) : symbol(other.symbol), price(other.price) {
        if (copies_left == 0) {
            throw std::runtime_error("copy refused");
        }
        if (copies_left > 0) {
            --copies_left;
        }
    }
    brittle_quote& operator=(const brittle_quote&) = default;
    ~brittle_quote() = default;
};

/// drop_oldest over many blocks of the ring, then conflation, for one event type.
template <class Event>
void ring_keeps_the_newest() {
    struct ring_topic : herald::topic<Event> {};
    herald::testing::harness h;
    std::vector<std::string> seen;
    auto record = [&](const Event& q) { seen.push_back(q.symbol + std::to_string(q.price)); };
    {
        auto sub = h.bus().subscribe<ring_topic>(record, {.capacity = 5, .overflow = herald::overflow::drop_oldest});
        for (int i = 0; i < 1000; ++i) {
            h.bus().publish<ring_topic>(Event{"A", i});
        }
        h.run_until_idle();
        CHECK(seen == std::vector<std::string>{"A995", "A996", "A997", "A998", "A999"});
        CHECK(sub.stats().dropped == 995);
        check_conservation(sub.stats());
    }
    seen.clear();
    auto sub = h.bus().subscribe<ring_topic>(
        record,
        {.capacity = 3, .overflow = herald::overflow::conflate, .key = [](const Event& q) { return q.symbol; }});
    for (int i = 0; i < 100; ++i) {
        for (const char* symbol : {"A", "B"}) {
            h.bus().publish<ring_topic>(Event{symbol, i});
        }
    }
    h.bus().publish<ring_topic>(Event{"C", 0});
    h.bus().publish<ring_topic>(Event{"D", 0}); // a fourth key: A99 is dropped
    h.run_until_idle();
    CHECK(seen == std::vector<std::string>{"B99", "C0", "D0"});
    CHECK(sub.stats().conflated == 198);
    CHECK(sub.stats().dropped == 1);
    check_conservation(sub.stats());
    h.bus().drain();
}

} // namespace

TEST_CASE("drop_oldest and conflate keep the newest events, in place or behind a pointer") {
    SUBCASE("in place, trivially relocated") { ring_keeps_the_newest<quote>(); }
    SUBCASE("too large for a slot") { ring_keeps_the_newest<big_quote>(); }
    SUBCASE("a move that may throw") { ring_keeps_the_newest<risky_quote>(); }
}

TEST_CASE("drop_oldest and conflate: a copy that throws fails its event and changes nothing else") {
    struct brittle_quotes : herald::topic<brittle_quote> {};
    for (auto rule : {herald::overflow::drop_oldest, herald::overflow::conflate}) {
        CAPTURE(static_cast<int>(rule));
        herald::testing::harness h;
        std::vector<std::string> seen;
        auto sub = h.bus().subscribe<brittle_quotes>(
            [&](const brittle_quote& q) { seen.push_back(q.symbol + std::to_string(q.price)); },
            {.capacity = 2, .overflow = rule, .key = [](const brittle_quote& q) { return q.symbol; }});
        const brittle_quote a1{"A", 1};
        const brittle_quote b1{"B", 1};
        const brittle_quote a2{"A", 2};
        (void)h.bus().publish<brittle_quotes>(a1);
        (void)h.bus().publish<brittle_quotes>(b1);
        // The publish's own copy succeeds; the copy into the full mailbox throws, before
        // anything waiting is dropped or replaced.
        brittle_quote::copies_left = 1;
        const herald::publish_result r = h.bus().publish<brittle_quotes>(a2);
        brittle_quote::copies_left = -1;
        CHECK(r.failed_to_queue == 1);
        h.run_until_idle();
        CHECK(seen == std::vector<std::string>{"A1", "B1"});
        CHECK(sub.stats().failed == 1);
        CHECK(sub.stats().dropped == 0);
        CHECK(sub.stats().conflated == 0);
        check_conservation(sub.stats());
    }
}
