#include "support/events.hpp"

#include <doctest/doctest.h>

#include <herald/envelope.hpp>

#include <chrono>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

TEST_CASE("every delivered event carries its metadata") {
    herald::bus bus{{.source = "shop-service", .workers = 1}};
    std::vector<herald::envelope<test::order_placed>> seen;
    auto sub = bus.subscribe<test::orders>([&](const herald::envelope<test::order_placed>& e) { seen.push_back(e); },
                                           {.mode = herald::inline_delivery});
    const auto before = std::chrono::system_clock::now();
    const auto first = bus.publish<test::orders>({"latte", 3.5});
    const auto cause = first.id;
    const auto second = bus.publish<test::orders>({"tea", 2.0}, {.correlation = cause});
    const auto after = std::chrono::system_clock::now();

    REQUIRE(seen.size() == 2);
    CHECK(seen[0].event().item == "latte");
    CHECK(seen[0].sequence() == 1);
    CHECK(seen[1].sequence() == 2);
    CHECK(seen[0].id() == first.id);
    CHECK(seen[1].id() == second.id);
    CHECK_FALSE(seen[0].id().is_nil());
    CHECK(seen[0].id() != seen[1].id());
    CHECK(seen[0].topic() == "test::orders");
    CHECK(seen[0].source() == "shop-service");
    CHECK(seen[0].attempt() == 1);
    CHECK(seen[0].time() >= before);
    CHECK(seen[1].time() <= after);
    CHECK_FALSE(seen[0].has_correlation_id());
    CHECK(seen[1].has_correlation_id());
    CHECK(seen[1].correlation_id() == cause);
}

TEST_CASE("event ids are unique across topics and buses, sequences count per topic") {
    std::set<herald::event_id> ids;
    for (int b = 0; b < 2; ++b) {
        herald::bus bus{{.workers = 1}};
        for (int i = 0; i < 100; ++i) {
            const auto r1 = bus.publish<test::orders>({"x", 1});
            const auto r2 = bus.publish<test::refunds>({"x", 1});
            CHECK(r1.sequence == static_cast<std::uint64_t>(i + 1));
            CHECK(r2.sequence == static_cast<std::uint64_t>(i + 1));
            ids.insert(r1.id);
            ids.insert(r2.id);
        }
    }
    CHECK(ids.size() == 400);
}

TEST_CASE("an envelope's topic and source stay right while other buses come and go") {
    // Envelopes name their origin by a number that is reused once its bus is gone; the
    // numbers of live buses must never be confused with one another.
    herald::bus kept{{.source = "kept", .workers = 1}};
    std::optional<herald::envelope<test::order_placed>> seen;
    auto sub = kept.subscribe<test::refunds>([&](const herald::envelope<test::order_placed>& e) { seen = e; },
                                             {.mode = herald::inline_delivery});
    for (int round = 0; round < 50; ++round) {
        herald::bus passing{{.source = "passing-" + std::to_string(round), .workers = 1}};
        std::optional<herald::envelope<test::order_placed>> other;
        auto s = passing.subscribe<test::orders>([&](const herald::envelope<test::order_placed>& e) { other = e; },
                                                 {.mode = herald::inline_delivery});
        passing.publish<test::orders>({"x", 1});
        kept.publish<test::refunds>({"y", 2});
        REQUIRE(other);
        REQUIRE(seen);
        CHECK(other->topic() == "test::orders");
        CHECK(other->source() == "passing-" + std::to_string(round));
        CHECK(seen->topic() == "shop.refunds");
        CHECK(seen->source() == "kept");
    }
}

TEST_CASE("an envelope adds at most 64 bytes to its event") {
    // 56 bytes of ids, times and counts, and 8 for the causation id (the W3C parent span);
    // docs/performance.md's queue-overhead row measures what a waiting event costs.
    CHECK(sizeof(herald::envelope<std::uint64_t>) - sizeof(std::uint64_t) <= 64);
    CHECK(sizeof(herald::envelope<test::tick>) - sizeof(test::tick) <= 64);
}

TEST_CASE("event_id prints as 32 hex digits") {
    const herald::event_id id{0x0123456789abcdefULL, 0x10ULL};
    CHECK(id.to_string() == "0123456789abcdef0000000000000010");
    CHECK(herald::event_id{}.is_nil());
}

TEST_CASE("handlers may take the event, the envelope, a copy or an rvalue") {
    herald::bus bus{{.workers = 1}};
    std::atomic<int> by_ref{0}, by_env{0}, by_value{0}, by_rvalue{0};
    auto a = bus.subscribe<test::orders>([&](const test::order_placed& o) { by_ref += static_cast<int>(o.total); });
    auto b = bus.subscribe<test::orders>(
        [&](const herald::envelope<test::order_placed>& e) { by_env += static_cast<int>(e.event().total); });
    auto c = bus.subscribe<test::orders>([&](test::order_placed o) { by_value += static_cast<int>(o.total); });
    auto d = bus.subscribe<test::orders>([&](test::order_placed&& o) {
        const test::order_placed mine = std::move(o);
        by_rvalue += static_cast<int>(mine.total);
    });
    bus.publish<test::orders>({"latte", 3});
    bus.drain();
    CHECK(by_ref == 3);
    CHECK(by_env == 3);
    CHECK(by_value == 3);
    CHECK(by_rvalue == 3);
}

TEST_CASE("an async by-value handler gets its copy moved in, an inline one gets a copy") {
    herald::bus bus{{.workers = 1}};
    std::optional<test::counted> kept;
    {
        auto sub = bus.subscribe<test::counted_topic>([&](test::counted c) { kept = std::move(c); });
        test::counted::reset();
        bus.publish<test::counted_topic>(test::counted{7});
        bus.drain();
        REQUIRE(kept.has_value());
        CHECK(kept->value == 7);
        // The only subscriber gets the published value moved all the way: no copy.
        CHECK(test::counted::copies == 0);
    }
    {
        std::atomic<int> seen{0};
        auto sub = bus.subscribe<test::counted_topic>([&](test::counted c) { seen = c.value; },
                                                      {.mode = herald::inline_delivery});
        test::counted::reset();
        const test::counted value{9};
        bus.publish<test::counted_topic>(value);
        CHECK(seen == 9);
        // One copy into the envelope, one for the by-value inline handler.
        CHECK(test::counted::copies == 2);
    }
}

TEST_CASE("the publish time is there whenever a handler or filter can read it") {
    herald::bus bus{{.workers = 1}};
    const auto before = std::chrono::system_clock::now();
    std::atomic<bool> filter_saw_time{false};
    std::atomic<int> plain_calls{0};
    // A plain handler cannot see the time; the envelope filter on the other can.
    auto plain = bus.subscribe<test::orders>([&](const test::order_placed&) { ++plain_calls; });
    auto timed = bus.subscribe<test::orders>([](const test::order_placed&) {},
                                             {.filter = [&](const herald::envelope<test::order_placed>& e) {
                                                 filter_saw_time = e.time() >= before;
                                                 return true;
                                             }});
    bus.publish<test::orders>({"a", 1});
    bus.drain();
    CHECK(filter_saw_time);
    CHECK(plain_calls == 1);
}
