// Unit tests of a component that uses the bus (examples/order_service.hpp), fully deterministic:
// a manual executor, virtual time, recorders and injected faults; no sleeps, no threads.
#include "../../examples/order_service.hpp"

#include <doctest/doctest.h>

#include <herald/testing.hpp>

#include <chrono>
#include <set>

using namespace std::chrono_literals;
using herald::testing::fault_plan;
using shop::order_state;

namespace {

/// The test's stand-in for the payment service: declines the orders listed.
struct fake_gateway {
    herald::bus& bus;
    std::multiset<int> declines; // one entry per time the order is declined
    int charged = 0;

    void operator()(const herald::envelope<shop::order_placed>& e) {
        if (auto it = declines.find(e.event().order); it != declines.end()) {
            declines.erase(it);
            bus.publish<shop::payment_failures>({e.event().order, "card declined"});
            return;
        }
        ++charged;
    }
};

struct fixture {
    herald::testing::harness h;
    herald::bus& bus = h.bus();
    herald::testing::recorder<shop::orders> placed{bus};
    herald::testing::recorder<shop::cancellations> cancelled{bus};
    shop::order_service<> service{bus};
};

} // namespace

TEST_CASE_FIXTURE(fixture, "placing an order publishes exactly one order_placed, and nothing else") {
    const int order = service.place("ada", 9.5);
    CHECK(placed.published_exactly(
        1, [](const shop::order_placed& o) { return o.total == 9.5; }, "with total 9.5"));
    CHECK(placed.published_in_order({{order, "ada", 9.5}}));
    CHECK(cancelled.published_nothing());
    CHECK(service.state(order) == order_state::awaiting_payment);
}

TEST_CASE_FIXTURE(fixture, "a declined payment is asked for again, correlated with the failure") {
    fake_gateway gateway{bus, {1, 1}};
    auto sub = bus.subscribe<shop::orders>(std::ref(gateway));
    const int order = service.place("ada", 20);
    CHECK(h.pending() == 1); // nothing ran yet: the manual executor waits for the test
    h.run_until_idle();
    CHECK(gateway.charged == 1);
    CHECK(placed.published_exactly(3));
    const auto all = placed.all();
    CHECK_FALSE(all[0].has_correlation_id());
    CHECK(all[1].has_correlation_id());
    CHECK(all[2].has_correlation_id());
    CHECK(cancelled.published_nothing());
    CHECK(service.state(order) == order_state::awaiting_payment);
}

TEST_CASE_FIXTURE(fixture, "a third decline cancels the order, once") {
    fake_gateway gateway{bus, {1, 1, 1}};
    auto sub = bus.subscribe<shop::orders>(std::ref(gateway));
    const int order = service.place("ada", 20);
    h.run_until_idle();
    CHECK(placed.published_exactly(3));
    CHECK(cancelled.published_exactly(1, [&](const shop::order_cancelled& c) { return c.order == order; }));
    CHECK(cancelled.last().event().reason == "payment declined: card declined");
    CHECK(service.state(order) == order_state::cancelled);
}

TEST_CASE_FIXTURE(fixture,
                  "a gateway that crashes on its first attempt is retried after the backoff, in virtual time") {
    fake_gateway gateway{bus, {}};
    auto flaky = herald::testing::inject_faults(std::ref(gateway), fault_plan::on_attempts({1}));
    auto sub = bus.subscribe<shop::orders>(flaky, {.name = "gateway"});
    const int order = service.place("ada", 20);
    h.run_until_idle();
    CHECK(gateway.charged == 0);
    h.advance(99ms);
    CHECK(gateway.charged == 0);
    h.advance(1ms);
    CHECK(gateway.charged == 1);
    CHECK(flaky.injected() == 1);
    REQUIRE(h.errors().size() == 1);
    CHECK(h.errors()[0].subscriber == "gateway");
    CHECK(service.state(order) == order_state::awaiting_payment);
}

TEST_CASE_FIXTURE(fixture,
                  "an unreachable gateway dead-letters the order after 3 attempts and the order is cancelled") {
    fake_gateway gateway{bus, {}};
    auto down = herald::testing::inject_faults(std::ref(gateway), fault_plan::always());
    auto sub = bus.subscribe<shop::orders>(down);
    const int order = service.place("ada", 20);
    const auto waited = h.settle(); // plays out the whole backoff schedule at once
    CHECK(waited == 300ms);         // 100 ms + 200 ms of virtual time
    CHECK(down.calls() == 3);
    CHECK(cancelled.published_exactly(
        1, [](const shop::order_cancelled& c) { return c.reason == "payment service unreachable"; }));
    CHECK(service.state(order) == order_state::cancelled);
    CHECK(bus.stats().dead_lettered == 1);
}

TEST_CASE("the same component runs synchronously when a test prefers that") {
    herald::testing::harness h{{.mode = herald::testing::execution::synchronous}};
    herald::testing::recorder<shop::cancellations> cancelled{h.bus()};
    shop::order_service<> service{h.bus()};
    fake_gateway gateway{h.bus(), {1, 1, 1}};
    auto sub = h.bus().subscribe<shop::orders>(std::ref(gateway));
    const int order = service.place("bob", 5);
    // Everything already happened inside place(): three payment attempts and the cancel.
    CHECK(cancelled.published_exactly(1));
    CHECK(service.state(order) == order_state::cancelled);
}
