// expect: Event must be copy-constructible
// Every subscriber receives its own copy, so a move-only event type is refused.
#include <herald/herald.hpp>

#include <memory>

struct owns_buffer {
    std::unique_ptr<int> data;
};
struct buffers : herald::topic<owns_buffer> {};

int main() {
    herald::bus bus;
    bus.publish<buffers>(owns_buffer{});
}
