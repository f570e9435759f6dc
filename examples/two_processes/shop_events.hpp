// What the order service and the billing service of examples/two_processes/ agree on:
// the events they exchange, their JSON form on the wire, and the topics. A topic's name
// travels as the CloudEvents `type`, so both processes must use the same names.
#pragma once

#include <herald/herald.hpp>

#include <charconv>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <system_error>

namespace shop {

/// A customer placed an order (the order service publishes it).
struct order_placed {
    std::uint64_t order_id = 0;
    std::string customer;
    std::int64_t amount_cents = 0;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(order_placed, order_id, customer, amount_cents)

/// Billing charged an order (the billing service publishes it).
struct payment_taken {
    std::uint64_t order_id = 0;
    std::int64_t amount_cents = 0;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(payment_taken, order_id, amount_cents)

struct orders : herald::topic<order_placed> {
    static constexpr std::string_view name = "shop.orders";
};

// Money must not get lost: when the bridge's outbox refuses a payment (it is full), the
// export fails like any handler and the bus tries it again after a pause.
struct payments
    : herald::topic<payment_taken,
                    herald::at_least_once<herald::max_attempts<8>,
                                          herald::exponential_backoff<herald::delay::ms(100), herald::delay::s(5)>>> {
    static constexpr std::string_view name = "shop.payments";
};

/// The `main` of both services: `<program> [nats-url] [orders]`, then `run(url, count)`.
/// Exit code 2 for bad arguments or an exception (`name` prefixes the message).
template <class Run>
int service_main(int argc, char** argv, const char* name, Run run) {
    std::setvbuf(stdout, nullptr, _IOLBF, 0); // whole lines, even into a pipe both share
    const std::string url = argc > 1 ? argv[1] : "nats://127.0.0.1:4222";
    std::uint64_t count = 1000;
    if (argc > 2) {
        const std::string_view text = argv[2];
        const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), count);
        if (error != std::errc{} || end != text.data() + text.size() || count == 0) {
            std::fprintf(stderr, "usage: %s [nats-url] [orders > 0]\n", argv[0]);
            return 2;
        }
    }
    try {
        return run(url, count);
    } catch (const std::exception& failure) {
        std::fprintf(stderr, "%s: %s\n", name, failure.what());
        return 2;
    }
}

} // namespace shop
