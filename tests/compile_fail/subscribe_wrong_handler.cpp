// expect: the handler cannot be called with the topic's event
// Subscribing a handler that takes another event type names the topic and the types.
#include <herald/herald.hpp>

#include <string>

struct order_placed {
    int total = 0;
};
struct orders : herald::topic<order_placed> {};

int main() {
    herald::bus bus;
    auto sub = bus.subscribe<orders>([](const std::string&) {});
}
