// expect: more delays than there are retries
// Three attempts allow two retries; a third delay could never be used (NATS rejects it too).
#include <herald/herald.hpp>

using herald::delay;
struct payment {
    int order = 0;
};
struct payments
    : herald::topic<payment, herald::at_least_once<herald::max_attempts<3>,
                                                   herald::backoff_list<delay::ms(1), delay::ms(2), delay::ms(3)>>> {};

int main() {
    herald::bus bus;
    bus.publish<payments>(payment{1});
}
