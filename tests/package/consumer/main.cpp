// Builds against herald as a user's project would; see tests/package/consumer/CMakeLists.txt.
// Exits non-zero unless an event published on the bus reaches its subscriber.
#include <herald/herald.hpp>

#include <atomic>

static_assert(herald::version_major >= 0);

#if defined(HERALD_EXPECTED_VERSION_MAJOR)
static_assert(herald::version_major == HERALD_EXPECTED_VERSION_MAJOR &&
                  herald::version_minor == HERALD_EXPECTED_VERSION_MINOR &&
                  herald::version_patch == HERALD_EXPECTED_VERSION_PATCH,
              "include/herald/version.hpp disagrees with project(herald VERSION ...)");
#endif

namespace {
struct greeting {
    int value = 0;
};
struct greetings : herald::topic<greeting> {};
} // namespace

int main() {
    std::atomic<int> sum{0};
    herald::bus bus{{.workers = 1}};
    auto sub = bus.subscribe<greetings>([&](const greeting& g) { sum += g.value; });
    if (!bus.publish<greetings>({41}) || !bus.publish<greetings>({1})) {
        return 1;
    }
    bus.drain();
    return sum == 42 ? 0 : 2;
}
