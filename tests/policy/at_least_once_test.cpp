// at_least_once: retries after the backoff, per subscriber; dead letters; outcomes; shutdown.
#include "support/events.hpp"

#include <doctest/doctest.h>

#include <herald/herald.hpp>
#include <herald/testing.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using herald::delay;

namespace {

struct payment {
    int order = 0;
};

using three_tries =
    herald::at_least_once<herald::max_attempts<4>, herald::backoff_list<delay::ms(10), delay::ms(20), delay::ms(50)>>;
struct payments : herald::topic<payment, three_tries> {};

struct quick_payments
    : herald::topic<payment, herald::at_least_once<herald::max_attempts<3>, herald::fixed_backoff<delay::ms(5)>>> {
    static constexpr std::string_view name = "quick_payments";
};

/// Retries only what looks transient: a custom policy.
struct only_system_errors : herald::at_least_once<herald::max_attempts<5>, herald::fixed_backoff<delay::ms(1)>> {
    static bool should_retry(const std::exception_ptr& error) noexcept {
        try {
            std::rethrow_exception(error);
        } catch (const std::system_error&) {
            return true;
        } catch (...) {
            return false;
        }
    }
};
struct picky_payments : herald::topic<payment, only_system_errors> {};

/// A harness from herald::testing: a manual executor and a manual clock, so each test
/// steps through the retry schedule exactly, on one thread.
struct fixture {
    herald::testing::harness h;
    herald::bus& bus = h.bus();
    herald::manual_clock* clock = &h.clock();
    [[nodiscard]] std::size_t errors() const { return h.errors().size(); }
};

/// Records the attempts a subscriber saw, with the manual time of each.
struct attempt_log {
    std::mutex mutex;
    std::vector<std::uint32_t> attempts;
    std::vector<herald::clock_source::time_point> times;

    void add(std::uint32_t attempt, herald::clock_source::time_point when) {
        std::lock_guard lock(mutex);
        attempts.push_back(attempt);
        times.push_back(when);
    }
    std::vector<std::uint32_t> seen() {
        std::lock_guard lock(mutex);
        return attempts;
    }
};

} // namespace

TEST_CASE_FIXTURE(fixture, "a failing delivery is retried after each backoff delay, exactly, then dead-lettered") {
    attempt_log log;
    auto gateway = bus.subscribe<payments>(
        [&](const herald::envelope<payment>& e) {
            log.add(e.attempt(), clock->now());
            throw std::runtime_error("gateway down");
        },
        {.name = "gateway"});
    const auto start = clock->now();
    const auto published = bus.publish<payments>({7});
    bus.drain();
    CHECK(log.seen() == std::vector<std::uint32_t>{1});

    clock->advance(9ms); // one millisecond short of the first delay
    bus.drain();
    CHECK(log.seen() == std::vector<std::uint32_t>{1});
    clock->advance(1ms);
    bus.drain();
    CHECK(log.seen() == std::vector<std::uint32_t>{1, 2});
    clock->advance(20ms);
    bus.drain();
    CHECK(log.seen() == std::vector<std::uint32_t>{1, 2, 3});
    clock->advance(49ms);
    bus.drain();
    CHECK(log.seen() == std::vector<std::uint32_t>{1, 2, 3});
    CHECK(bus.dead_letters<payments>().empty());
    clock->advance(1ms);
    bus.drain();
    CHECK(log.seen() == std::vector<std::uint32_t>{1, 2, 3, 4});
    CHECK(log.times == std::vector<herald::clock_source::time_point>{start, start + 10ms, start + 30ms, start + 80ms});

    const auto letters = bus.dead_letters<payments>();
    REQUIRE(letters.size() == 1);
    CHECK(letters[0].event().order == 7);
    CHECK(letters[0].original.id() == published.id);
    CHECK(letters[0].attempts == 4);
    CHECK(letters[0].original.attempt() == 4);
    CHECK(letters[0].reason == herald::dead_letter_reason::attempts_exhausted);
    CHECK(letters[0].error == "gateway down");
    CHECK(letters[0].exception != nullptr);
    CHECK(letters[0].subscriber == "gateway");
    CHECK(errors() == 4);
    const auto stats = bus.stats();
    CHECK(stats.retried == 3);
    CHECK(stats.dead_lettered == 1);
    CHECK(stats.dead_letters_stored == 1);
    CHECK(gateway.stats().failed == 4);
    clock->advance(1h);
    bus.drain();
    CHECK(log.seen().size() == 4); // nothing more, ever
}

TEST_CASE_FIXTURE(fixture, "only the failing subscriber gets the retry") {
    std::atomic<int> steady{0};
    attempt_log flaky_log;
    auto steady_sub = bus.subscribe<quick_payments>([&](const payment&) { ++steady; });
    auto flaky = bus.subscribe<quick_payments>([&](const herald::envelope<payment>& e) {
        flaky_log.add(e.attempt(), clock->now());
        if (e.attempt() < 2) {
            throw std::runtime_error("first try fails");
        }
    });
    for (int i = 0; i < 10; ++i) {
        bus.publish<quick_payments>({i});
    }
    bus.drain();
    clock->advance(5ms);
    bus.drain();
    CHECK(steady == 10);
    CHECK(flaky_log.seen().size() == 20);
    CHECK(flaky.stats().delivered == 10);
    CHECK(flaky.stats().failed == 10);
    CHECK(steady_sub.stats().delivered == 10);
    CHECK(bus.dead_letters<quick_payments>().empty());
}

TEST_CASE_FIXTURE(fixture, "handlers can fail without throwing: nack, retry_after and reject") {
    attempt_log log;
    auto sub = bus.subscribe<payments>([&](const herald::envelope<payment>& e) -> herald::outcome {
        log.add(e.attempt(), clock->now());
        if (e.event().order == 1) {
            return e.attempt() == 1 ? herald::nack("busy") : herald::ack();
        }
        if (e.event().order == 2) {
            return e.attempt() == 1 ? herald::retry_after(3ms, "come back later") : herald::ack();
        }
        return herald::reject("malformed");
    });
    bus.publish<payments>({1});
    bus.publish<payments>({2});
    bus.publish<payments>({3});
    bus.drain();
    clock->advance(3ms); // retry_after's own delay, shorter than the policy's 10 ms
    bus.drain();
    CHECK(log.seen() == std::vector<std::uint32_t>{1, 1, 1, 2});
    clock->advance(7ms);
    bus.drain();
    CHECK(log.seen() == std::vector<std::uint32_t>{1, 1, 1, 2, 2});
    const auto letters = bus.dead_letters<payments>();
    REQUIRE(letters.size() == 1);
    CHECK(letters[0].event().order == 3);
    CHECK(letters[0].reason == herald::dead_letter_reason::rejected);
    CHECK(letters[0].attempts == 1);
    CHECK(letters[0].error == "malformed");
    CHECK(letters[0].exception == nullptr);
    CHECK(sub.stats().delivered == 2);
    CHECK(sub.stats().failed == 3);
}

TEST_CASE_FIXTURE(fixture, "a custom policy decides which exceptions are worth a retry") {
    std::atomic<int> calls{0};
    auto sub = bus.subscribe<picky_payments>([&](const herald::envelope<payment>& e) {
        ++calls;
        if (e.event().order == 1) {
            throw std::system_error(std::make_error_code(std::errc::connection_refused));
        }
        throw std::invalid_argument("bad payment");
    });
    bus.publish<picky_payments>({1});
    bus.publish<picky_payments>({2});
    bus.drain();
    for (int i = 0; i < 5; ++i) {
        clock->advance(1ms);
        bus.drain();
    }
    CHECK(calls == 6); // 5 attempts for the transient error, 1 for the other
    const auto letters = bus.dead_letters<picky_payments>();
    REQUIRE(letters.size() == 2);
    CHECK(letters[0].event().order == 2);
    CHECK(letters[0].reason == herald::dead_letter_reason::rejected);
    CHECK(letters[1].event().order == 1);
    CHECK(letters[1].reason == herald::dead_letter_reason::attempts_exhausted);
    CHECK(letters[1].attempts == 5);
}

TEST_CASE_FIXTURE(fixture, "dead letters go to the dead-letter topic's subscribers, and can be re-published") {
    std::mutex mutex;
    std::vector<herald::dead_letter<payment>> received;
    auto monitor =
        bus.subscribe<herald::dead_letter_topic<quick_payments>>([&](const herald::dead_letter<payment>& letter) {
            std::lock_guard lock(mutex);
            received.push_back(letter);
        });
    CHECK(herald::topic_name_v<herald::dead_letter_topic<quick_payments>> == "quick_payments.dead_letters");
    bool healthy = false;
    std::vector<herald::event_id> handled;
    auto gateway = bus.subscribe<quick_payments>([&](const herald::envelope<payment>& e) {
        if (!healthy) {
            throw std::runtime_error("down");
        }
        std::lock_guard lock(mutex);
        handled.push_back(e.id());
    });
    const auto first = bus.publish<quick_payments>({5});
    bus.drain();
    clock->advance(5ms);
    bus.drain();
    clock->advance(5ms);
    bus.drain(); // drain() also waits for the dead letters of what it waited for
    {
        std::lock_guard lock(mutex);
        REQUIRE(received.size() == 1);
        CHECK(received[0].original.id() == first.id);
        CHECK(received[0].original.topic() == "quick_payments");
    }
    CHECK(bus.dead_letters<quick_payments>().empty()); // taken by the monitor, not stored

    healthy = true;
    const auto again = bus.republish<quick_payments>(received[0]);
    const auto fresh = bus.republish<quick_payments>(received[0], {.fresh_id = true});
    bus.drain();
    CHECK(again.id == first.id);
    CHECK(fresh.id != first.id);
    CHECK(again.sequence > first.sequence);
    std::lock_guard lock(mutex);
    CHECK(handled == std::vector<herald::event_id>{first.id, fresh.id});
}

TEST_CASE_FIXTURE(fixture, "a poison subscriber dead-letters everything while the others get every event") {
    std::atomic<int> good{0};
    auto poison =
        bus.subscribe<quick_payments>([](const payment&) { throw std::runtime_error("poison"); }, {.name = "poison"});
    auto fine = bus.subscribe<quick_payments>([&](const payment&) { ++good; }, {.name = "fine"});
    constexpr int count = 200;
    for (int i = 0; i < count; ++i) {
        bus.publish<quick_payments>({i});
    }
    bus.drain();
    clock->advance(5ms);
    bus.drain();
    clock->advance(5ms);
    bus.drain();
    CHECK(good == count);
    const auto letters = bus.take_dead_letters<quick_payments>();
    CHECK(letters.size() == count);
    for (const auto& l : letters) {
        CHECK(l.subscriber == "poison");
        CHECK(l.attempts == 3);
    }
    CHECK(bus.dead_letters<quick_payments>().empty()); // take_ emptied the store
}

TEST_CASE("an inline subscriber's first attempt runs in publish; its retries run on the pool") {
    auto clock = std::make_shared<herald::manual_clock>();
    herald::bus bus{{.workers = 2, .on_error = [](const herald::delivery_error&) {}, .clock = clock}};
    attempt_log log;
    std::atomic<bool> on_publisher{false};
    const auto publisher = std::this_thread::get_id();
    auto sub = bus.subscribe<quick_payments>(
        [&](const herald::envelope<payment>& e) {
            log.add(e.attempt(), clock->now());
            if (e.attempt() == 1) {
                on_publisher = std::this_thread::get_id() == publisher;
                throw std::runtime_error("no");
            }
            CHECK(std::this_thread::get_id() != publisher);
        },
        {.mode = herald::inline_delivery});
    const auto r = bus.publish<quick_payments>({1});
    CHECK(r.failed_inline == 1);
    CHECK(r.retrying_inline == 1);
    CHECK(on_publisher);
    clock->advance(5ms);
    bus.drain();
    CHECK(log.seen() == std::vector<std::uint32_t>{1, 2});
    CHECK(sub.stats().delivered == 1);
}

TEST_CASE("with a real clock each retry waits at least its delay, and drain() waits for retries") {
    std::mutex mutex;
    std::vector<std::chrono::steady_clock::time_point> at;
    herald::bus bus{{.workers = 2, .on_error = [](const herald::delivery_error&) {}}};
    auto sub = bus.subscribe<payments>([&](const herald::envelope<payment>& e) {
        {
            std::lock_guard lock(mutex);
            at.push_back(std::chrono::steady_clock::now());
        }
        if (e.attempt() < 4) {
            throw std::runtime_error("again");
        }
    });
    bus.publish<payments>({1});
    bus.drain();
    std::lock_guard lock(mutex);
    REQUIRE(at.size() == 4);
    CHECK(at[1] - at[0] >= 10ms);
    CHECK(at[2] - at[1] >= 20ms);
    CHECK(at[3] - at[2] >= 50ms);
}

TEST_CASE("shutdown(drain) dead-letters retries still waiting; shutdown(discard) drops and counts them") {
    struct slow : herald::topic<payment,
                                herald::at_least_once<herald::max_attempts<3>, herald::fixed_backoff<delay::s(3600)>>> {
    };
    std::atomic<int> calls{0};
    SUBCASE("drain") {
        herald::bus bus{{.workers = 1, .on_error = [](const herald::delivery_error&) {}}};
        auto sub = bus.subscribe<slow>([&](const payment&) {
            ++calls;
            throw std::runtime_error("x");
        });
        bus.publish<slow>({1});
        bus.publish<slow>({2});
        CHECK(test::eventually([&] { return bus.stats().retried == 2; }));
        CHECK(bus.shutdown(herald::drain) == 0); // returns at once, not in an hour
        const auto letters = bus.dead_letters<slow>();
        REQUIRE(letters.size() == 2);
        CHECK(letters[0].reason == herald::dead_letter_reason::shutdown);
        CHECK(letters[0].attempts == 1);
        CHECK(calls == 2);
    }
    SUBCASE("discard") {
        herald::bus bus{{.workers = 1, .on_error = [](const herald::delivery_error&) {}}};
        auto sub = bus.subscribe<slow>([&](const payment&) {
            ++calls;
            throw std::runtime_error("x");
        });
        bus.publish<slow>({1});
        CHECK(test::eventually([&] { return bus.stats().retried == 1; }));
        CHECK(bus.shutdown(herald::discard) == 1);
        CHECK(bus.dead_letters<slow>().empty());
        CHECK(bus.stats().dropped == 1);
    }
}

TEST_CASE("the dead-letter store is bounded: the oldest are evicted and counted") {
    struct once
        : herald::topic<payment, herald::at_least_once<herald::max_attempts<1>, herald::fixed_backoff<delay::ms(0)>>> {
    };
    herald::bus bus{{.workers = 1, .on_error = [](const herald::delivery_error&) {}, .dead_letter_capacity = 3}};
    auto sub = bus.subscribe<once>([](const payment&) { throw std::runtime_error("x"); });
    for (int i = 0; i < 5; ++i) {
        bus.publish<once>({i});
    }
    bus.drain();
    const auto letters = bus.dead_letters<once>();
    REQUIRE(letters.size() == 3);
    CHECK(letters[0].event().order == 2);
    CHECK(letters[2].event().order == 4);
    CHECK(bus.stats().dead_letters_evicted == 2);
    CHECK(bus.stats().dead_lettered == 5);
}

TEST_CASE_FIXTURE(fixture, "retry_after(nanoseconds::max()) never runs early; shutdown dead-letters it") {
    attempt_log log;
    auto patient = bus.subscribe<payments>(
        [&](const herald::envelope<payment>& e) -> herald::outcome {
            log.add(e.attempt(), clock->now());
            return herald::retry_after(std::chrono::nanoseconds::max(), "much later");
        },
        {.name = "patient"});
    bus.publish<payments>({9});
    bus.drain();
    CHECK(log.seen() == std::vector<std::uint32_t>{1});
    CHECK(bus.stats().retried == 1);
    // 10 steps of 25 years: 250 years pass, short of the clock's end (about 292 years).
    // A due time that wrapped around (now + max overflowing) would fire at the first step.
    constexpr auto quarter_century = std::chrono::hours(24 * 365 * 25);
    for (int step = 0; step < 10; ++step) {
        clock->advance(quarter_century);
        bus.drain();
    }
    CHECK(log.seen() == std::vector<std::uint32_t>{1});
    CHECK(bus.dead_letters<payments>().empty());
    CHECK(bus.shutdown(herald::drain) == 0);
    const auto letters = bus.dead_letters<payments>();
    REQUIRE(letters.size() == 1);
    CHECK(letters[0].event().order == 9);
    CHECK(letters[0].reason == herald::dead_letter_reason::shutdown);
    CHECK(letters[0].attempts == 1);
    CHECK(letters[0].subscriber == "patient");
    CHECK(log.seen() == std::vector<std::uint32_t>{1});
}

TEST_CASE("with a real clock, retry_after(nanoseconds::max()) does not run early and does not hold up shutdown") {
    std::atomic<int> calls{0};
    herald::bus bus{{.workers = 1, .on_error = [](const herald::delivery_error&) {}}};
    auto patient = bus.subscribe<payments>([&](const payment&) -> herald::outcome {
        ++calls;
        return herald::retry_after(std::chrono::nanoseconds::max(), "much later");
    });
    bus.publish<payments>({1});
    REQUIRE(test::eventually([&] { return bus.stats().retried >= 1; }));
    std::this_thread::sleep_for(50ms); // the timer thread now waits (in capped steps)
    CHECK(calls == 1);
    CHECK(bus.dead_letters<payments>().empty());
    const auto started = std::chrono::steady_clock::now();
    CHECK(bus.shutdown(herald::drain) == 0);
    CHECK(std::chrono::steady_clock::now() - started < 5s); // prompt, not at the end of time
    CHECK(calls == 1);
    const auto letters = bus.dead_letters<payments>();
    REQUIRE(letters.size() == 1);
    CHECK(letters[0].reason == herald::dead_letter_reason::shutdown);
    CHECK(letters[0].attempts == 1);
}
