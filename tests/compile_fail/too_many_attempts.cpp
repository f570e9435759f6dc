// expect: at most 65535 attempts
// The envelope counts attempts in 16 bits; a policy may not promise more.
#include <herald/herald.hpp>

struct payment {
    int order = 0;
};
struct payments : herald::topic<payment, herald::at_least_once<herald::max_attempts<70000>>> {};

int main() {
    herald::bus bus;
    bus.publish<payments>(payment{1});
}
