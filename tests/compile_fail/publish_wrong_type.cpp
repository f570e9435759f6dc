// expect: check_publish<orders, order_placed, refund_issued>
// Publishing a value of another type to a topic names the topic and both types.
#include <herald/herald.hpp>

struct order_placed {
    int total = 0;
};
struct refund_issued {
    int amount = 0;
};
struct orders : herald::topic<order_placed> {};

int main() {
    herald::bus bus;
    bus.publish<orders>(refund_issued{5});
}
