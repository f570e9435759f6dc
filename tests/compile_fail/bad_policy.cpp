// expect: delivery_policy
// A delivery policy must satisfy herald::delivery_policy.
#include <herald/herald.hpp>

struct not_a_policy {
    int state = 0;
};
struct order_placed {
    int total = 0;
};
struct orders : herald::topic<order_placed, not_a_policy> {};

int main() {
    herald::bus bus;
    bus.publish<orders>(order_placed{1});
}
