// Observability: the coffee shop with a trace recorder installed. Orders go to a barista
// and a pastry chef, each on its own pool; whoever finishes an order publishes
// `order_ready` from its handler, and a notifier tells the customer. The program serves a
// few hundred orders, prints the bus's report, writes a Chrome trace of a short window
// (open it in https://ui.perfetto.dev) and, if asked, the shop as a Graphviz graph.
//
//   example_observability [trace.json] [shop.dot]
#include <herald/herald.hpp>
#include <herald/trace_recorder.hpp>

#include <array>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

struct order_placed {
    int number = 0;
    std::string item;
};
struct order_ready {
    int number = 0;
    std::string item;
};

struct orders : herald::topic<order_placed> {
    static constexpr std::string_view name = "shop.orders";
};
struct ready : herald::topic<order_ready> {
    static constexpr std::string_view name = "shop.order_ready";
};

namespace {
bool is_coffee(const order_placed& o) { return o.item == "latte" || o.item == "espresso"; }
void work_for(std::chrono::microseconds how_long) { std::this_thread::sleep_for(how_long); }

/// Waits until every order so far is made and announced: the second drain() waits for the
/// order_ready events that handlers published while the first one waited.
void settle(herald::bus& bus) {
    bus.drain();
    bus.drain();
}
} // namespace

int main(int argc, char** argv) {
    const std::string trace_path = argc > 1 ? argv[1] : "observability-trace.json";

    // The recorder is an observer: installed when the bus is made, idle until start().
    auto recorder = std::make_shared<herald::trace_recorder>();
    herald::bus bus{{.source = "coffee-shop", .workers = 1, .observers = {recorder}}};

    auto barista = bus.subscribe<orders>(
        [&](const order_placed& o) {
            work_for(std::chrono::microseconds(100));
            bus.publish<ready>({o.number, o.item}); // caused by this order: the trace draws an arrow
        },
        {.name = "barista", .filter = is_coffee, .pool = bus.make_pool(1, "bar")});
    auto pastry_chef = bus.subscribe<orders>(
        [&](const order_placed& o) {
            work_for(std::chrono::microseconds(200));
            bus.publish<ready>({o.number, o.item});
        },
        {.name = "pastry chef",
         .filter = [](const order_placed& o) { return !is_coffee(o); },
         .pool = bus.make_pool(1, "oven")});
    // Inline: runs inside publish(), so in the trace its slice sits under the publish slice.
    auto till = bus.subscribe<orders>([](const order_placed&) { work_for(std::chrono::microseconds(20)); },
                                      {.name = "till", .mode = herald::inline_delivery});
    // Async on the bus's default pool: a third worker track in the trace.
    auto notifier =
        bus.subscribe<ready>([](const order_ready&) { work_for(std::chrono::microseconds(30)); }, {.name = "notifier"});

    constexpr std::array menu{"latte", "croissant", "espresso", "muffin"};
    constexpr int order_count = 300;
    constexpr int traced_from = 150; // record orders 150 to 153: a trace small enough to read
    constexpr int traced_to = 153;
    for (int n = 1; n <= order_count; ++n) {
        if (n == traced_from) {
            settle(bus);
            recorder->start();
        }
        bus.publish<orders>({n, menu[static_cast<std::size_t>(n) % menu.size()]});
        if (n == traced_to) {
            settle(bus);
            recorder->stop();
        }
        work_for(std::chrono::microseconds(150)); // customers arrive one at a time
    }
    settle(bus);

    std::printf("%s\n", bus.report().c_str());
    recorder->write(trace_path); // throws if the file cannot be written
    std::printf("trace of orders %d to %d: %s (%zu records; open it in https://ui.perfetto.dev)\n", traced_from,
                traced_to, trace_path.c_str(), recorder->size());
    if (argc > 2) {
        std::ofstream(argv[2]) << bus.topology(); // render with `dot -Tsvg`
        std::printf("topology: %s\n", argv[2]);
    }
}
