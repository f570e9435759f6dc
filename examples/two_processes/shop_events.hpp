// What the order service and the billing service of examples/two_processes/ agree on:
// the events they exchange, their JSON form on the wire, and the topics. A topic's name
// travels as the CloudEvents `type`, so both processes must use the same names.
#pragma once

#include <herald/herald.hpp>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

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

} // namespace shop
