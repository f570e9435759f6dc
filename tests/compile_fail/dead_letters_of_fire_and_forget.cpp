// expect: this topic's policy never dead-letters
// A fire-and-forget topic has no dead letters to inspect.
#include <herald/herald.hpp>

struct order_placed {
    int total = 0;
};
struct orders : herald::topic<order_placed> {};

int main() {
    herald::bus bus;
    (void)bus.dead_letters<orders>();
}
