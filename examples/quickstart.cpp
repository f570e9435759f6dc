// The coffee shop: one order topic, a barista and a pastry chef that each take only
// their own orders, and an audit log that sees every order as it is placed.
#include <herald/herald.hpp>

#include <cstdio>
#include <fstream>
#include <mutex>
#include <string>

// An event is a fact that already happened; a topic is a type that carries one.
struct order_placed {
    std::string item;
    std::string customer;
    double price = 0;
};

struct orders : herald::topic<order_placed> {
    static constexpr std::string_view name = "shop.orders";
};

namespace {
std::mutex print_mutex;

template <class... Args>
void say(const char* format, Args... args) {
    std::lock_guard lock(print_mutex);
    std::printf(format, args...);
}

bool is_coffee(const order_placed& o) { return o.item == "espresso" || o.item == "latte"; }
} // namespace

int main(int argc, char** argv) {
    herald::bus bus{{.source = "coffee-shop", .workers = 2}};

    // Async (the default): runs on the bus's worker threads, one order at a time.
    auto barista = bus.subscribe<orders>(
        [](const order_placed& o) { say("barista:     brewing %s for %s\n", o.item.c_str(), o.customer.c_str()); },
        {.name = "barista", .filter = is_coffee});

    // Its own pool: a slow oven cannot hold up the coffee.
    auto pastry_chef = bus.subscribe<orders>(
        [](const order_placed& o) { say("pastry chef: baking %s for %s\n", o.item.c_str(), o.customer.c_str()); },
        {.name = "pastry chef",
         .filter = [](const order_placed& o) { return !is_coffee(o); },
         .pool = bus.make_pool(1, "oven")});

    // Inline: runs in the publisher's thread before publish() returns, with metadata.
    auto audit = bus.subscribe<orders>(
        [](const herald::envelope<order_placed>& e) {
            say("audit:       #%llu %s %.2f (%s)\n", static_cast<unsigned long long>(e.sequence()),
                e.event().item.c_str(), e.event().price, std::string(e.source()).c_str());
        },
        {.name = "audit", .mode = herald::inline_delivery});

    for (const auto& [item, customer, price] :
         {order_placed{"latte", "Ada", 3.5}, order_placed{"croissant", "Alan", 2.2},
          order_placed{"espresso", "Grace", 2.0}}) {
        const auto result = bus.publish<orders>({item, customer, price});
        if (!result) {
            say("order rejected: %s\n", std::string(herald::to_string(result.status)).c_str());
        }
    }

    bus.drain(); // every order placed above has now been handled
    const auto stats = bus.stats();
    say("%llu orders, %llu deliveries, %llu failures\n", static_cast<unsigned long long>(stats.published),
        static_cast<unsigned long long>(stats.delivered), static_cast<unsigned long long>(stats.failed));

    // `quickstart shop.dot` also writes the shop's shape for Graphviz: `dot -Tpng shop.dot`.
    if (argc > 1) {
        std::ofstream(argv[1]) << bus.topology();
    }
}
