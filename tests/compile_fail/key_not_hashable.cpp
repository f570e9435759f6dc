// expect: must return a copyable key with std::hash and ==
// A subscription's key must be something herald can hash and compare.
#include <herald/herald.hpp>

struct price {
    double value = 0;
};
struct position {
    int x = 0;
    int y = 0; // no std::hash<position>, no ==
};
struct prices : herald::topic<price> {};

int main() {
    herald::bus bus;
    auto sub = bus.subscribe<prices>(
        [](const price&) {}, {.overflow = herald::overflow::conflate, .key = [](const price&) { return position{}; }});
}
