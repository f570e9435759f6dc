// expect: topic_type
// Publishing to something that is not a topic fails on the topic_type concept.
#include <herald/herald.hpp>

struct order_placed {
    int total = 0;
};

int main() {
    herald::bus bus;
    bus.publish<order_placed>(order_placed{1});
}
