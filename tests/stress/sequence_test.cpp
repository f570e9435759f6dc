// Sequence numbers stay gap-free and unique when a topic's only publisher (which takes
// numbers without a locked instruction) is joined by others, and when threads come and go.
#include "support/events.hpp"

#include <herald/herald.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

namespace {

/// Publishes `count` events and keeps the sequence numbers `publish` returned.
std::vector<std::uint64_t> publish_some(herald::bus& bus, int publisher, int count) {
    std::vector<std::uint64_t> seen;
    seen.reserve(static_cast<std::size_t>(count));
    for (int i = 0; i < count; ++i) {
        seen.push_back(bus.publish<test::ticks>({publisher, i}).sequence);
    }
    return seen;
}

/// Every number from 1 to the total exactly once, and each thread's numbers rising.
void check_numbers(const std::vector<std::vector<std::uint64_t>>& per_thread) {
    std::vector<std::uint64_t> all;
    for (const auto& mine : per_thread) {
        CHECK(std::is_sorted(mine.begin(), mine.end()));
        CHECK(std::adjacent_find(mine.begin(), mine.end()) == mine.end());
        all.insert(all.end(), mine.begin(), mine.end());
    }
    std::sort(all.begin(), all.end());
    bool gap_free = true;
    for (std::size_t i = 0; i < all.size(); ++i) {
        gap_free = gap_free && all[i] == i + 1;
    }
    CHECK(gap_free);
}

} // namespace

TEST_CASE("the first publisher's numbers and its late-coming rivals' never collide or skip") {
    constexpr int rounds = test::scaled(40, 8);
    constexpr int per_thread = test::scaled(20000, 2000);
    for (int round = 0; round < rounds; ++round) {
        herald::bus bus{{.workers = 1}};
        std::vector<std::vector<std::uint64_t>> numbers(4);
        std::atomic<bool> owner_started{false};
        std::vector<std::thread> threads;
        // The owner publishes first; the others start while it is still publishing, so
        // revocation races with its plain increments.
        threads.emplace_back([&] {
            numbers[0].push_back(bus.publish<test::ticks>({0, -1}).sequence);
            owner_started.store(true);
            auto rest = publish_some(bus, 0, per_thread);
            numbers[0].insert(numbers[0].end(), rest.begin(), rest.end());
        });
        for (int p = 1; p < 4; ++p) {
            threads.emplace_back([&, p] {
                while (!owner_started.load()) {
                    std::this_thread::yield();
                }
                numbers[static_cast<std::size_t>(p)] = publish_some(bus, p, per_thread / (p * 10));
            });
        }
        for (auto& t : threads) {
            t.join();
        }
        check_numbers(numbers);
        CHECK(bus.stats().published == numbers[0].size() + numbers[1].size() + numbers[2].size() + numbers[3].size());
    }
}

TEST_CASE("a thread that takes over an ended owner's slot keeps the numbers going") {
    herald::bus bus{{.workers = 1}};
    std::vector<std::vector<std::uint64_t>> numbers;
    // Sequential threads: each one likely reuses the previous one's slot (and with it
    // the ownership); the last two run at once.
    for (int p = 0; p < 5; ++p) {
        std::vector<std::uint64_t> mine;
        std::thread([&] { mine = publish_some(bus, p, 1000); }).join();
        numbers.push_back(std::move(mine));
    }
    std::vector<std::uint64_t> a;
    std::vector<std::uint64_t> b;
    std::thread ta([&] { a = publish_some(bus, 5, 5000); });
    std::thread tb([&] { b = publish_some(bus, 6, 5000); });
    ta.join();
    tb.join();
    numbers.push_back(std::move(a));
    numbers.push_back(std::move(b));
    check_numbers(numbers);
}
