// A serial subscriber gives back the memory a burst took once its backlog drained
// (moodycamel queues keep their blocks until destroyed, so herald replaces a queue
// after a large backlog). Measured with glibc's allocator statistics, so skipped
// where a sanitizer replaces the allocator.
#include "support/events.hpp"
#include "support/watchdog.hpp"

#include <doctest/doctest.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <semaphore>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define HERALD_TEST_OWN_ALLOCATOR 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define HERALD_TEST_OWN_ALLOCATOR 0
#endif
#endif
#ifndef HERALD_TEST_OWN_ALLOCATOR
#define HERALD_TEST_OWN_ALLOCATOR 1
#endif

#if defined(__GLIBC__) && HERALD_TEST_OWN_ALLOCATOR
namespace {
struct kilobyte {
    std::array<char, 1024> bytes{};
};
struct bulk : herald::topic<kilobyte> {};

constexpr int burst = test::scaled(50000, 10000);

/// Bytes the process's heap has handed out and not taken back, every arena included.
std::int64_t heap_in_use() {
    const struct mallinfo2 info = mallinfo2();
    return static_cast<std::int64_t>(info.uordblks + info.hblkhd);
}
} // namespace

TEST_CASE("the memory of a drained burst goes back") {
    const test::watchdog dog("burst memory test");
    herald::bus bus{{.workers = 1}};
    std::binary_semaphore gate{0};
    std::atomic<int> handled{0};
    std::atomic<bool> first{true};
    auto sub = bus.subscribe<bulk>([&](const kilobyte&) {
        if (first.exchange(false)) {
            gate.acquire(); // hold the strand until the whole burst waits
        }
        ++handled;
    });
    const kilobyte event{};
    bus.publish<bulk>(event);
    REQUIRE(test::eventually([&] { return !first.load(); })); // the first call is held
    const std::int64_t before = heap_in_use();

    for (int i = 0; i < burst; ++i) {
        bus.publish<bulk>(event);
    }
    const std::int64_t peak = heap_in_use();
    CHECK(peak - before > std::int64_t{burst} * 1024); // the backlog really was held
    gate.release();
    bus.drain();
    CHECK(handled == burst + 1);
    const std::int64_t after = heap_in_use();
    CAPTURE(before);
    CAPTURE(peak);
    CAPTURE(after);
    // Back to where it was, give or take a fresh queue's first blocks.
    CHECK(after - before < 512 * 1024);
}
#endif
