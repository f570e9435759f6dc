// idempotent(): a handler runs once per event id, failures are not remembered, the window is bounded.
#include "support/events.hpp"

#include <doctest/doctest.h>

#include <herald/herald.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <unordered_map>

using namespace std::chrono_literals;
using herald::delay;

namespace {
struct charge {
    int order = 0;
};
struct charges
    : herald::topic<charge, herald::at_least_once<herald::max_attempts<20>, herald::fixed_backoff<delay::ms(0)>>> {};

/// The fault a real consumer meets: the side effect happened, then the acknowledgement
/// was lost (here: thrown after the inner handler returned), so the event comes again.
template <class Inner>
struct lose_acks {
    Inner inner;
    std::shared_ptr<std::atomic<int>> lost = std::make_shared<std::atomic<int>>(0);
    void operator()(const herald::envelope<charge>& e) {
        inner(e);
        const std::uint64_t h = (e.id().low * 0x9e3779b97f4a7c15ULL) ^ (e.attempt() * 0xbf58476d1ce4e5b9ULL);
        if ((h >> 32U) % 2 == 0) { // about half of all attempts
            ++*lost;
            throw std::runtime_error("ack lost");
        }
    }
};
} // namespace

TEST_CASE("under 50% lost acknowledgements the side effect still happens exactly once per id") {
    herald::bus bus{{.workers = 2, .on_error = [](const herald::delivery_error&) {}}};
    std::mutex mutex;
    std::unordered_map<herald::event_id, int> effects;
    auto side_effect = herald::idempotent([&](const herald::envelope<charge>& e) {
        std::lock_guard lock(mutex);
        ++effects[e.id()];
    });
    lose_acks<decltype(side_effect)> flaky{side_effect};
    auto sub = bus.subscribe<charges>(flaky);
    constexpr int count = 2000;
    for (int i = 0; i < count; ++i) {
        bus.publish<charges>({i});
    }
    bus.drain();
    CHECK(*flaky.lost > count / 4); // the fault really was injected
    CHECK(side_effect.skipped() == static_cast<std::uint64_t>(flaky.lost->load()));
    CHECK(bus.dead_letters<charges>().empty());
    std::lock_guard lock(mutex);
    REQUIRE(effects.size() == count);
    for (const auto& [id, n] : effects) {
        REQUIRE(n == 1);
    }
}

TEST_CASE("a failed call is not remembered, so its retry runs the handler again") {
    int calls = 0;
    auto handler = herald::idempotent([&](const charge&) -> herald::outcome {
        ++calls;
        return calls == 1 ? herald::nack() : herald::ack();
    });
    auto clock = std::make_shared<herald::manual_clock>();
    herald::bus bus{{.workers = 1, .on_error = [](const herald::delivery_error&) {}, .clock = clock}};
    auto sub = bus.subscribe<charges>(handler);
    const auto r = bus.publish<charges>({1});
    bus.drain();
    clock->advance(0ms);
    bus.drain();
    CHECK(calls == 2);
    bus.publish<charges>({1}, {.id = r.id}); // the same event again: skipped
    bus.drain();
    CHECK(calls == 2);
    CHECK(handler.skipped() == 1);
}

TEST_CASE("the window forgets the oldest ids beyond its size, and ids older than its age") {
    int calls = 0;
    herald::bus bus{{.workers = 1}};
    auto handler = herald::idempotent([&](const charge&) { ++calls; }, {.max_ids = 2});
    auto sub = bus.subscribe<charges>(handler);
    const auto a = bus.publish<charges>({1});
    const auto b = bus.publish<charges>({2});
    const auto c = bus.publish<charges>({3});
    bus.drain();
    CHECK(handler.remembered() == 2);
    bus.publish<charges>({3}, {.id = c.id}); // remembered: skipped
    bus.publish<charges>({1}, {.id = a.id}); // forgotten: handled again
    bus.drain();
    CHECK(calls == 4);
    (void)b;

    auto clock = std::make_shared<herald::manual_clock>();
    int aged_calls = 0;
    auto aged = herald::idempotent([&](const charge&) { ++aged_calls; }, {.max_age = 1s, .clock = clock});
    auto sub3 = bus.subscribe<charges>(aged);
    const auto d = bus.publish<charges>({4});
    bus.drain();
    bus.publish<charges>({4}, {.id = d.id});
    bus.drain();
    CHECK(aged_calls == 1);
    clock->advance(2s);
    bus.publish<charges>({4}, {.id = d.id});
    bus.drain();
    CHECK(aged_calls == 2);
}
