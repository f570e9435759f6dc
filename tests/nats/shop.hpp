// The events of the NATS bridge tests (and of tests/nats/peer.cpp): a shop's orders
// and receipts, with JSON conversions for the bridge's codec.
#pragma once

#include <herald/herald.hpp>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace shop {

struct order {
    std::uint64_t number = 0;
    std::string item;
    double amount = 0;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(order, number, item, amount)

struct orders : herald::topic<order> {
    static constexpr std::string_view name = "shop.orders";
};
struct receipts : herald::topic<order> {
    static constexpr std::string_view name = "shop.receipts";
};
struct retried_orders : herald::topic<order, herald::at_least_once<herald::max_attempts<3>>> {
    static constexpr std::string_view name = "shop.orders";
};

} // namespace shop
