#include "support/events.hpp"

#include <doctest/doctest.h>

#include <herald/topic.hpp>

#include <atomic>
#include <string_view>

namespace {
namespace shop {
struct payments : herald::topic<int> {};
} // namespace shop
} // namespace

TEST_CASE("a topic's name is its declared name, else its type's spelling") {
    CHECK(herald::topic_name_v<test::refunds> == "shop.refunds");
    CHECK(herald::topic_name_v<test::orders> == "test::orders");
    CHECK(herald::topic_name_v<shop::payments>.ends_with("shop::payments"));
}

TEST_CASE("topic ids are compile-time constants that differ between topics") {
    static_assert(herald::topic_id_v<test::orders> != herald::topic_id_v<test::refunds>);
    static_assert(herald::topic_id_v<test::orders> == herald::topic_id_v<test::orders>);
    CHECK(herald::topic_id_v<test::orders> != 0);
}

TEST_CASE("topic_type accepts topics and rejects other types") {
    static_assert(herald::topic_type<test::orders>);
    static_assert(!herald::topic_type<int>);
    static_assert(!herald::topic_type<test::order_placed>);
    static_assert(std::is_same_v<test::orders::policy_type, herald::fire_and_forget>);
    static_assert(herald::delivery_policy<herald::fire_and_forget>);
    CHECK(herald::fire_and_forget::guarantee == herald::delivery_guarantee::at_most_once);
}

TEST_CASE("two topics carrying the same event type are independent") {
    herald::bus bus{{.workers = 1}};
    std::atomic<int> on_orders{0};
    std::atomic<int> on_refunds{0};
    auto a =
        bus.subscribe<test::orders>([&](const test::order_placed&) { ++on_orders; }, {.mode = herald::inline_delivery});
    auto b = bus.subscribe<test::refunds>([&](const test::order_placed&) { ++on_refunds; },
                                          {.mode = herald::inline_delivery});
    bus.publish<test::orders>({"latte", 3.5});
    bus.publish<test::orders>({"tea", 2.0});
    bus.publish<test::refunds>({"latte", 3.5});
    CHECK(on_orders == 2);
    CHECK(on_refunds == 1);
}

namespace {
struct clash_a : herald::topic<int> {
    static constexpr std::string_view name = "same";
};
struct clash_b : herald::topic<long> {
    static constexpr std::string_view name = "same";
};
} // namespace

TEST_CASE("two topic types with one name are refused at first use") {
    herald::bus bus{{.workers = 1}};
    CHECK(bus.publish<clash_a>(1).accepted());
    CHECK_THROWS_AS(bus.publish<clash_b>(2L), herald::usage_error);
}
