// expect: must return void or herald::outcome
// A fire-and-forget handler's return value would be ignored silently, so it is refused.
#include <herald/herald.hpp>

struct order_placed {
    int total = 0;
};
struct orders : herald::topic<order_placed> {};

int main() {
    herald::bus bus;
    auto sub = bus.subscribe<orders>([](const order_placed& o) { return o.total > 0; });
}
