// at-least-once under load: 4 publishers x 25k events, injected failures, exact final outcomes.
#include "support/events.hpp"

#include <doctest/doctest.h>

#include <herald/herald.hpp>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <vector>

using herald::delay;

namespace {

struct work {
    int publisher = 0;
    int index = 0;
};
constexpr std::uint32_t max_attempts = 5;
struct work_topic : herald::topic<work, herald::at_least_once<herald::max_attempts<max_attempts>,
                                                              herald::jittered_backoff<delay::us(1), delay::us(50)>>> {
};

/// Whether attempt `attempt` of event `id` fails: a hash, so the decision is reproducible
/// and independent of timing.
bool fails(herald::event_id id, std::uint32_t attempt, unsigned percent) {
    std::uint64_t x = id.low ^ (id.high << 1U) ^ (std::uint64_t{attempt} * 0x9e3779b97f4a7c15ULL);
    x = (x ^ (x >> 31U)) * 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 29U;
    return x % 100 < percent;
}

struct ledger {
    struct entry {
        std::uint32_t attempts = 0;
        std::uint32_t successes = 0;
        std::uint32_t highest_attempt = 0;
    };
    std::mutex mutex;
    std::unordered_map<herald::event_id, entry> by_id;

    void record(herald::event_id id, std::uint32_t attempt, bool ok) {
        std::lock_guard lock(mutex);
        auto& e = by_id[id];
        ++e.attempts;
        e.successes += ok ? 1U : 0U;
        e.highest_attempt = std::max(e.highest_attempt, attempt);
    }
};

void run(unsigned percent) {
    constexpr int publishers = 4;
    constexpr int per_publisher = 25000;
    constexpr int total = publishers * per_publisher;
    std::atomic<std::uint64_t> errors{0};
    herald::bus bus{{.workers = 2, .on_error = [&](const herald::delivery_error&) { ++errors; }}};
    ledger flaky_ledger;
    std::atomic<int> steady{0};
    auto flaky = bus.subscribe<work_topic>(
        [&](const herald::envelope<work>& e) {
            const bool fail = fails(e.id(), e.attempt(), percent);
            flaky_ledger.record(e.id(), e.attempt(), !fail);
            if (fail) {
                throw std::runtime_error("injected failure at attempt " + std::to_string(e.attempt()));
            }
        },
        {.name = "flaky", .order = herald::ordering::concurrent});
    auto healthy = bus.subscribe<work_topic>([&](const work&) { ++steady; }, {.name = "healthy"});
    // More dead letters than the store keeps (3% of 100k at 50%): a monitor takes them all.
    std::mutex dead_mutex;
    std::vector<herald::dead_letter<work>> letters;
    auto monitor = bus.subscribe<herald::dead_letter_topic<work_topic>>([&](const herald::dead_letter<work>& l) {
        std::lock_guard lock(dead_mutex);
        letters.push_back(l);
    });

    std::vector<herald::event_id> ids(total);
    std::vector<std::thread> threads;
    for (int p = 0; p < publishers; ++p) {
        threads.emplace_back([&, p] {
            for (int i = 0; i < per_publisher; ++i) {
                const auto r = bus.publish<work_topic>({p, i});
                REQUIRE(r.accepted());
                ids[static_cast<std::size_t>(p * per_publisher + i)] = r.id;
            }
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    bus.drain();

    CHECK(bus.dead_letters<work_topic>().empty());
    CHECK(bus.stats().dead_letters_evicted == 0);
    std::unordered_map<herald::event_id, const herald::dead_letter<work>*> dead;
    for (const auto& l : letters) {
        REQUIRE(dead.emplace(l.original.id(), &l).second); // at most one dead letter per event
    }
    std::uint64_t attempts = 0;
    std::uint64_t expected_dead = 0;
    std::lock_guard lock(flaky_ledger.mutex);
    REQUIRE(flaky_ledger.by_id.size() == total);
    for (const auto& id : ids) {
        const auto& e = flaky_ledger.by_id.at(id);
        attempts += e.attempts;
        REQUIRE(e.attempts <= max_attempts);      // never attempted more than the limit
        REQUIRE(e.attempts == e.highest_attempt); // attempts numbered 1..n, none repeated
        REQUIRE(e.successes <= 1);                // no duplicate deliveries
        bool dies = true;
        for (std::uint32_t a = 1; a <= e.attempts; ++a) {
            dies = dies && fails(id, a, percent);
        }
        if (e.successes == 1) {
            REQUIRE(dead.count(id) == 0);
        } else {
            // Not handled: it must be a dead letter with the last attempt and its error.
            ++expected_dead;
            REQUIRE(dies);
            REQUIRE(e.attempts == max_attempts);
            const auto found = dead.find(id);
            REQUIRE(found != dead.end());
            REQUIRE(found->second->attempts == max_attempts);
            REQUIRE(found->second->original.attempt() == max_attempts);
            REQUIRE(found->second->error == "injected failure at attempt 5");
            REQUIRE(found->second->reason == herald::dead_letter_reason::attempts_exhausted);
        }
    }
    CHECK(letters.size() == expected_dead);
    CHECK(steady == total);
    const auto stats = flaky.stats();
    CHECK(stats.delivered + stats.dead_lettered == static_cast<std::uint64_t>(total));
    CHECK(stats.delivered + stats.failed == attempts);
    CHECK(stats.retried == attempts - total);
    CHECK(errors == stats.failed);
    MESSAGE(percent << "% failures: " << attempts << " attempts, " << stats.retried << " retries, " << expected_dead
                    << " dead letters, 0 lost, 0 duplicates");
}

} // namespace

TEST_CASE("10% of attempts fail: every event is handled once or dead-lettered after 5 attempts") { run(10); }

TEST_CASE("50% of attempts fail: every event is handled once or dead-lettered after 5 attempts") { run(50); }
