// Testing a component that uses the bus, with herald::testing and no test framework at all:
// the order service (order_service.hpp) checked step by step, in virtual time, on one thread.
// tests/testing/order_service_test.cpp does the same with doctest.
#include "order_service.hpp"

#include <herald/testing.hpp>

#include <chrono>
#include <cstdio>

using namespace std::chrono_literals;

namespace {
int failures = 0;

void expect(const herald::testing::expectation& e, const char* what) {
    std::printf("%s %s\n", e ? "PASS" : "FAIL", what);
    if (!e) {
        std::printf("%s\n", e.message().c_str());
        ++failures;
    }
}

void expect(bool ok, const char* what) {
    expect(ok ? herald::testing::expectation::pass() : herald::testing::expectation::fail("  (false)"), what);
}
} // namespace

int main() {
    // 1. A fresh harness per test: a real herald::bus, run by hand, with virtual time.
    herald::testing::harness h;
    herald::testing::recorder<shop::orders> placed{h.bus()};
    herald::testing::recorder<shop::cancellations> cancelled{h.bus()};

    // 2. The component gets the bus like in production; it has no test-only code.
    shop::order_service<> service{h.bus()};

    // 3. Stand-in for the payment service: down for good (every attempt throws).
    int gateway_calls = 0;
    auto gateway = herald::testing::inject_faults([&](const shop::order_placed&) { ++gateway_calls; },
                                                  herald::testing::fault_plan::always());
    auto sub = h.bus().subscribe<shop::orders>(gateway, {.name = "payment-gateway"});

    const int order = service.place("ada", 9.5);
    expect(placed.published_exactly(
               1, [](const shop::order_placed& o) { return o.total == 9.5; }, "with total 9.5"),
           "placing an order publishes one order_placed");
    expect(h.pending() == 1, "nothing has run yet: the test decides when");

    // 4. Play out the retry schedule (100 ms, then 200 ms) in virtual time.
    const auto waited = h.settle();
    std::printf("     virtual time that passed: %lld ms\n",
                static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(waited).count()));
    expect(gateway.calls() == 3, "the gateway was tried 3 times");
    expect(h.errors().size() == 3, "each failure was reported");
    expect(cancelled.published_exactly(1), "the order was cancelled once, after the dead letter");
    expect(service.state(order) == shop::order_state::cancelled, "the service marked the order cancelled");

    // 5. What a failure message looks like.
    const auto wrong = placed.published_exactly(2);
    std::printf("\nA failing expectation explains itself:\n%s\n", wrong.message().c_str());

    return failures == 0 ? 0 : 1;
}
