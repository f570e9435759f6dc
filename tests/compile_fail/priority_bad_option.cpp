// expect: each option must be herald::aging
// priority's options are aging, expire_after and one inner delivery policy; nothing else.
#include <herald/herald.hpp>

struct alert {
    int level = 0;
};
struct alerts : herald::topic<alert, herald::priority<3, int>> {};

int main() {
    herald::bus bus;
    bus.publish<alerts>(alert{1});
}
