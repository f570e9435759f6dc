// A serial subscriber replaces its queue after a large backlog drained (to give the
// memory back) while publishers keep putting events in: none may be lost, duplicated
// or reordered per publisher. The traits make it shrink after every backlog of more
// than 8 events, so a run goes through the switch thousands of times. Also run under
// ThreadSanitizer.
#include "support/events.hpp"
#include "support/watchdog.hpp"

#include <doctest/doctest.h>

#include <array>
#include <atomic>
#include <thread>
#include <vector>

namespace {

struct shrinking_traits : herald::default_bus_traits {
    static constexpr std::size_t queue_shrink_threshold = 8;
    static constexpr std::chrono::milliseconds queue_shrink_interval{0};
    static constexpr std::size_t batch_size = 16;
};

/// A tick whose copies and moves sometimes take a few microseconds: a publisher is then
/// still putting into the queue it read when the strand replaces it.
struct slow_tick {
    int publisher = 0;
    int value = 0;

    slow_tick(int p, int v) : publisher(p), value(v) {}
    slow_tick(const slow_tick& other) : publisher(other.publisher), value(other.value) { dawdle(); }
    slow_tick(slow_tick&& other) noexcept : publisher(other.publisher), value(other.value) { dawdle(); }
    slow_tick& operator=(const slow_tick&) = default;
    slow_tick& operator=(slow_tick&&) noexcept = default;
    ~slow_tick() = default;

    void dawdle() const noexcept {
        if (value % 8 == 0) {
            const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(3);
            while (std::chrono::steady_clock::now() < until) {
            }
        }
    }
};
struct slow_ticks : herald::topic<slow_tick> {};

constexpr int publishers = 4;
constexpr int events_per_publisher = test::scaled(20000, 4000);

} // namespace

TEST_CASE("a queue replaced under publishers loses, duplicates and reorders nothing") {
    const test::watchdog dog("shrinking queue under publishers", std::chrono::seconds(120));
    herald::basic_bus<shrinking_traits> bus{{.workers = 2}};
    std::vector<std::atomic<int>> hits(publishers * events_per_publisher);
    std::array<int, publishers> last{-1, -1, -1, -1};
    std::atomic<int> out_of_order{0};
    std::atomic<int> filtered_out{0};

    bool filtered = false;
    SUBCASE("no filter") {}
    SUBCASE("a filter") { filtered = true; }
    auto sub = bus.subscribe<slow_ticks>(
        [&](const slow_tick& t) {
            hits[static_cast<std::size_t>(t.publisher * events_per_publisher + t.value)].fetch_add(1);
            auto& seen = last[static_cast<std::size_t>(t.publisher)]; // serial: calls never overlap
            if (t.value <= seen) {
                out_of_order.fetch_add(1);
            }
            seen = t.value;
            // About a microsecond per call, so bursts leave a backlog behind them.
            const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(1);
            while (std::chrono::steady_clock::now() < until) {
            }
        },
        {.filter = [&](const slow_tick& t) {
            if (filtered && t.value % 5 == 4) {
                filtered_out.fetch_add(1);
                return false;
            }
            return true;
        }});

    std::vector<std::thread> threads;
    for (int p = 0; p < publishers; ++p) {
        threads.emplace_back([&bus, p] {
            for (int i = 0; i < events_per_publisher; ++i) {
                bus.publish<slow_ticks>(slow_tick{p, i});
                if (i % 32 == 31) {
                    // Bursts of 32 with pauses of varying length: backlogs drain while
                    // other publishers are in the middle of theirs.
                    std::this_thread::sleep_for(std::chrono::microseconds(100 + (i * 7 + p * 13) % 200));
                }
            }
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    bus.drain();

    int wrong = 0;
    for (std::size_t i = 0; i < hits.size(); ++i) {
        const int expected = filtered && static_cast<int>(i % events_per_publisher) % 5 == 4 ? 0 : 1;
        wrong += hits[i].load() == expected ? 0 : 1;
    }
    CHECK(wrong == 0);
    CHECK(out_of_order == 0);
    const auto stats = sub.stats();
    CHECK(stats.delivered + static_cast<std::uint64_t>(filtered_out.load()) ==
          static_cast<std::uint64_t>(publishers * events_per_publisher));
}
