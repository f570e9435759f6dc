// expect: priority policies do not nest
// Priority composes with at_least_once, not with another priority.
#include <herald/herald.hpp>

struct alert {
    int level = 0;
};
struct alerts : herald::topic<alert, herald::priority<3, herald::priority<2>>> {};

int main() {
    herald::bus bus;
    bus.publish<alerts>(alert{1});
}
