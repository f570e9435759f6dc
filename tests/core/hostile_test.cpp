// Hostile use of the bus: events whose copies throw, owners that die, executors that
// refuse work, user code that re-enters the bus, cycles of inline handlers. Each case
// is a finding of the hardening review; each hung, crashed or miscounted before its fix.
#include "support/blocking.hpp"
#include "support/events.hpp"
#include "support/watchdog.hpp"

#include <doctest/doctest.h>

#include <herald/herald.hpp>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <latch>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#if defined(__unix__)
#include <sys/wait.h>
#include <unistd.h>
#endif

namespace {

/// An event whose copies throw once this thread's budget is spent (moves never throw).
struct fragile {
    static inline thread_local int copies_left = -1; // negative: unlimited
    int value = 0;

    fragile() = default;
    explicit fragile(int v) : value(v) {}
    fragile(const fragile& other) : value(other.value) { spend(); }
    fragile(fragile&&) noexcept = default;
    fragile& operator=(const fragile&) = default;
    fragile& operator=(fragile&&) noexcept = default;
    ~fragile() = default;

    static void spend() {
        if (copies_left == 0) {
            throw std::runtime_error("copy refused");
        }
        if (copies_left > 0) {
            --copies_left;
        }
    }
};
struct fragile_topic : herald::topic<fragile> {};

/// A rule-of-three event: a user copy constructor and no move constructor, so every
/// move is a copy, and copies made on any thread but `home` throw.
struct old_school {
    static inline std::atomic<std::thread::id> home{};
    static inline std::atomic<bool> refuse_here{false};
    int value = 0;

    old_school() = default;
    explicit old_school(int v) : value(v) {}
    old_school(const old_school& other) : value(other.value) {
        if (std::this_thread::get_id() != home.load() || refuse_here.load()) {
            throw std::runtime_error("copy refused on this thread");
        }
    }
    old_school& operator=(const old_school& other) = default;
    ~old_school() = default;
};
struct old_topic : herald::topic<old_school> {};
struct old_priority_topic : herald::topic<old_school, herald::priority<2>> {};

/// Collects what reaches the error handler.
struct error_log {
    std::mutex mutex;
    std::vector<std::string> subscribers;
    std::vector<std::string> messages;

    herald::error_handler handler() {
        return [this](const herald::delivery_error& e) {
            std::lock_guard lock(mutex);
            subscribers.emplace_back(e.subscriber);
            messages.push_back(e.message());
        };
    }
    std::size_t size() {
        std::lock_guard lock(mutex);
        return messages.size();
    }
};

struct ping : herald::topic<test::tick> {};

struct pong : herald::topic<test::tick> {};

} // namespace

TEST_CASE("a publish whose copy of the event throws changes nothing, and drain still returns") {
    error_log errors;
    herald::bus bus{{.workers = 1, .on_error = errors.handler()}};
    std::atomic<int> got{0};
    auto sub = bus.subscribe<fragile_topic>([&](const fragile&) { ++got; });
    const fragile event{1};

    fragile::copies_left = 0;
    CHECK_THROWS_AS(bus.publish<fragile_topic>(event), std::runtime_error);
    fragile::copies_left = -1;
    CHECK(bus.stats().published == 0);
    {
        const test::watchdog dog("drain() after a publish whose copy threw");
        bus.drain();
    }
    const auto r = bus.publish<fragile_topic>(event);
    CHECK(r.sequence == 1); // no number was used by the refused publish
    bus.drain();
    CHECK(got == 1);
    CHECK(errors.size() == 0);

    SUBCASE("an rvalue whose move is a throwing copy") {
        old_school::home = std::this_thread::get_id();
        old_school::refuse_here = true;
        CHECK_THROWS_AS(bus.publish<old_topic>(old_school{2}), std::runtime_error);
        old_school::refuse_here = false;
        CHECK(bus.stats().published == 1);
    }
}

TEST_CASE("a subscriber whose copy throws fails alone; the others get the event") {
    error_log errors;
    herald::bus bus{{.workers = 2, .on_error = errors.handler()}};
    std::atomic<int> first{0};
    std::atomic<int> second{0};
    std::atomic<int> third{0};
    auto s1 = bus.subscribe<fragile_topic>([&](const fragile&) { ++first; }, {.name = "first"});
    auto s2 = bus.subscribe<fragile_topic>([&](const fragile&) { ++second; }, {.name = "second"});
    auto s3 = bus.subscribe<fragile_topic>([&](const fragile&) { ++third; }, {.name = "third"});
    const fragile event{1};

    // Copies: the bus's own, then one per subscriber but the last (which gets it moved).
    fragile::copies_left = 2;
    const auto r = bus.publish<fragile_topic>(event);
    fragile::copies_left = -1;
    CHECK(r.accepted());
    CHECK(r.queued == 2);
    CHECK(r.failed_to_queue == 1);
    {
        const test::watchdog dog("drain() after a subscriber's copy threw");
        bus.drain();
    }
    CHECK(first == 1);
    CHECK(second == 0);
    CHECK(third == 1);
    CHECK(s2.stats().failed == 1);
    REQUIRE(errors.size() == 1);
    CHECK(errors.subscribers[0] == "second");
    CHECK(errors.messages[0] == "copy refused");

    const auto next = bus.publish<fragile_topic>(event);
    CHECK(next.sequence == 2); // accepted events keep the sequence gap-free
    bus.drain();
    const auto stats = bus.stats();
    CHECK(stats.published == 2);
    CHECK(stats.delivered == 5);
    CHECK(stats.failed == 1);
}

TEST_CASE("events whose move can throw are delivered by serial, concurrent and priority subscribers") {
    old_school::home = std::this_thread::get_id(); // copies on the workers throw
    error_log errors;
    herald::bus bus{{.workers = 2, .on_error = errors.handler()}};
    std::atomic<int> serial{0};
    std::atomic<int> concurrent{0};
    std::atomic<int> prioritised{0};
    auto a = bus.subscribe<old_topic>([&](const old_school&) { ++serial; });
    auto b =
        bus.subscribe<old_topic>([&](const old_school&) { ++concurrent; }, {.order = herald::ordering::concurrent});
    auto c = bus.subscribe<old_priority_topic>([&](const old_school&) { ++prioritised; });
    auto by_value = bus.subscribe<old_topic>([](old_school) {}, {.name = "by value"});

    const old_school event{7};
    for (int i = 0; i < 50; ++i) {
        bus.publish<old_topic>(event);
        bus.publish<old_priority_topic>(event, {.priority = static_cast<std::uint8_t>(i % 2)});
    }
    {
        const test::watchdog dog("drain() with events whose move throws");
        bus.drain();
    }
    CHECK(serial == 50);
    CHECK(concurrent == 50);
    CHECK(prioritised == 50);
    // The by-value handler's copy is made on a worker and throws: a failed call.
    CHECK(by_value.stats().failed == 50);
    CHECK(errors.size() == 50);
}

TEST_CASE("a filter of a tracked subscription never runs after its owner died") {
    herald::bus bus{{.workers = 1}};
    std::atomic<int> late_calls{0};
    std::atomic<bool> dead{false};
    struct owner_state {
        explicit owner_state(std::atomic<bool>* flag) : dead(flag) {}
        owner_state(const owner_state&) = delete;
        owner_state& operator=(const owner_state&) = delete;
        ~owner_state() { *dead = true; }
        std::atomic<bool>* dead;
    };
    auto owner = std::make_shared<owner_state>(&dead);
    herald::delivery mode = herald::async_delivery;
    SUBCASE("inline") { mode = herald::inline_delivery; }
    SUBCASE("async") {}
    auto sub = bus.subscribe<test::ticks>(
        [&](const test::tick&) {
            if (dead) {
                ++late_calls;
            }
        },
        {.mode = mode,
         .filter =
             [&](const test::tick&) {
                 if (dead) {
                     ++late_calls;
                 }
                 return true;
             },
         .track = owner});
    bus.publish<test::ticks>({0, 1});
    bus.drain();
    owner.reset();
    bus.publish<test::ticks>({0, 2});
    bus.drain();
    CHECK(late_calls == 0);
}

TEST_CASE("a dead tracked owner disconnects at once") {
    herald::bus bus{{.workers = 1}};
    auto owner = std::make_shared<int>(1);
    herald::delivery mode = herald::async_delivery;
    SUBCASE("inline") { mode = herald::inline_delivery; }
    SUBCASE("async") {}
    auto sub = bus.subscribe<test::ticks>([](const test::tick&) {}, {.mode = mode, .track = owner});
    CHECK(sub.is_connected());
    CHECK(bus.stats().subscribers == 1);
    owner.reset();
    CHECK(bus.stats().subscribers == 0);
    CHECK_FALSE(sub.is_connected());
}

TEST_CASE("unsubscribe waits for a filter running on another thread") {
    herald::bus bus{{.workers = 1}};
    test::blocking_call call;
    herald::delivery mode = herald::async_delivery;
    SUBCASE("inline") { mode = herald::inline_delivery; }
    SUBCASE("async") {}
    auto sub = bus.subscribe<test::ticks>([](const test::tick&) {}, {.mode = mode, .filter = [&](const test::tick& t) {
                                                                         call.handler<test::tick>()(t);
                                                                         return true;
                                                                     }});
    std::thread publisher([&] { bus.publish<test::ticks>({0, 1}); });
    test::check_unsubscribe_waits(sub, call);
    publisher.join();
}

TEST_CASE("a filter that throws is a counted failure") {
    error_log errors;
    herald::bus bus{{.workers = 1, .on_error = errors.handler()}};
    herald::delivery mode = herald::async_delivery;
    SUBCASE("inline") { mode = herald::inline_delivery; }
    SUBCASE("async") {}
    auto sub = bus.subscribe<test::ticks>(
        [](const test::tick&) {},
        {.mode = mode, .filter = [](const test::tick&) -> bool { throw std::runtime_error("bad filter"); }});
    bus.publish<test::ticks>({0, 1});
    bus.drain();
    CHECK(sub.stats().failed == 1);
    CHECK(sub.stats().delivered == 0);
    CHECK(bus.stats().failed == 1);
    CHECK(errors.size() == 1);
}

TEST_CASE("drain() and shutdown() from an error handler or a filter throw usage_error") {
    const test::watchdog dog("drain()/shutdown() from an error handler or filter");
    std::atomic<int> refused{0};
    herald::bus* self = nullptr;
    herald::bus bus{{.workers = 1, .on_error = [&](const herald::delivery_error&) {
                         try {
                             self->drain();
                         } catch (const herald::usage_error&) {
                             ++refused;
                         }
                         try {
                             (void)self->shutdown();
                         } catch (const herald::usage_error&) {
                             ++refused;
                         }
                     }}};
    self = &bus;
    herald::delivery mode = herald::async_delivery;
    SUBCASE("inline") { mode = herald::inline_delivery; }
    SUBCASE("async") {}
    auto failing =
        bus.subscribe<test::ticks>([](const test::tick&) { throw std::runtime_error("no"); }, {.mode = mode});
    auto filtered =
        bus.subscribe<test::ticks>([](const test::tick&) {}, {.mode = mode, .filter = [&](const test::tick&) {
                                                                  try {
                                                                      bus.drain();
                                                                  } catch (const herald::usage_error&) {
                                                                      ++refused;
                                                                  }
                                                                  return true;
                                                              }});
    bus.publish<test::ticks>({0, 1});
    bus.drain();
    CHECK(refused == 3);
    CHECK_FALSE(bus.is_stopped());
}

TEST_CASE("handlers that unsubscribe each other do not deadlock") {
    const test::watchdog dog("handlers unsubscribing each other");
    herald::bus bus{{.workers = 2}};

    SUBCASE("two async subscribers, each unsubscribing the other") {
        herald::subscription a;
        herald::subscription b;
        std::latch both(2);
        a = bus.subscribe<ping>([&](const test::tick&) {
            both.arrive_and_wait();
            b.unsubscribe();
        });
        b = bus.subscribe<pong>([&](const test::tick&) {
            both.arrive_and_wait();
            a.unsubscribe();
        });
        bus.publish<ping>({0, 1});
        bus.publish<pong>({0, 1});
        bus.drain();
        CHECK_FALSE(a.is_connected());
        CHECK_FALSE(b.is_connected());
    }
    SUBCASE("a concurrent subscriber unsubscribing itself from two workers") {
        herald::subscription sub;
        std::latch both(2);
        std::atomic<int> calls{0};
        sub = bus.subscribe<ping>(
            [&](const test::tick&) {
                ++calls;
                both.arrive_and_wait();
                sub.unsubscribe();
            },
            {.order = herald::ordering::concurrent});
        bus.publish<ping>({0, 1});
        bus.publish<ping>({0, 2});
        bus.drain();
        CHECK(calls == 2);
        CHECK_FALSE(sub.is_connected());
    }
    SUBCASE("two inline subscribers on two publishing threads") {
        herald::subscription a;
        herald::subscription b;
        std::latch both(2);
        a = bus.subscribe<ping>(
            [&](const test::tick&) {
                both.arrive_and_wait();
                b.unsubscribe();
            },
            {.mode = herald::inline_delivery});
        b = bus.subscribe<pong>(
            [&](const test::tick&) {
                both.arrive_and_wait();
                a.unsubscribe();
            },
            {.mode = herald::inline_delivery});
        std::thread left([&] { bus.publish<ping>({0, 1}); });
        std::thread right([&] { bus.publish<pong>({1, 1}); });
        left.join();
        right.join();
        CHECK_FALSE(a.is_connected());
        CHECK_FALSE(b.is_connected());
    }
}

namespace {
/// A thread pool whose `post` throws while `refusals` is positive.
class refusing_executor final : public herald::executor {
public:
    explicit refusing_executor(std::size_t threads) : pool_(threads) {}
    void post(herald::detail::task_ptr work) override {
        if (refusals.load() > 0) {
            --refusals;
            throw std::runtime_error("executor refused the task");
        }
        pool_.post(std::move(work));
    }
    [[nodiscard]] std::size_t concurrency() const noexcept override { return pool_.concurrency(); }
    void stop() override { pool_.stop(); }

    std::atomic<int> refusals{0};

private:
    herald::thread_pool pool_;
};

using herald::delay;
struct retried_ticks
    : herald::topic<test::tick, herald::at_least_once<herald::max_attempts<3>, herald::fixed_backoff<delay::ms(1)>>> {};
} // namespace

TEST_CASE("an executor that refuses a task fails those deliveries instead of stranding the subscriber") {
    const test::watchdog dog("drain() after an executor refused a task");
    error_log errors;
    auto pool = std::make_shared<refusing_executor>(2);
    herald::bus bus{{.default_executor = pool, .on_error = errors.handler()}};
    std::atomic<int> got{0};

    SUBCASE("serial") {
        auto sub = bus.subscribe<test::ticks>([&](const test::tick&) { ++got; });
        pool->refusals = 1;
        bus.publish<test::ticks>({0, 1});
        bus.publish<test::ticks>({0, 2});
        bus.drain();
        CHECK(got == 1);
        CHECK(sub.stats().failed == 1);
        REQUIRE(errors.size() == 1);
        CHECK(errors.messages[0] == "executor refused the task");
    }
    SUBCASE("concurrent") {
        auto sub =
            bus.subscribe<test::ticks>([&](const test::tick&) { ++got; }, {.order = herald::ordering::concurrent});
        pool->refusals = 1;
        bus.publish<test::ticks>({0, 1});
        bus.publish<test::ticks>({0, 2});
        bus.drain();
        CHECK(got == 1);
        CHECK(sub.stats().failed == 1);
    }
    SUBCASE("at-least-once: the refused delivery is retried") {
        auto sub = bus.subscribe<retried_ticks>([&](const test::tick&) { ++got; });
        pool->refusals = 1;
        bus.publish<retried_ticks>({0, 1});
        bus.drain();
        CHECK(got == 1);
        CHECK(sub.stats().failed == 1);
        CHECK(sub.stats().retried == 1);
        CHECK(sub.stats().delivered == 1);
    }
    SUBCASE("an inline subscriber's retry refused by the pool") {
        std::atomic<int> calls{0};
        auto sub = bus.subscribe<retried_ticks>(
            [&](const test::tick&) {
                if (++calls == 1) {
                    throw std::runtime_error("first call fails");
                }
            },
            {.mode = herald::inline_delivery});
        pool->refusals = 1;
        bus.publish<retried_ticks>({0, 1});
        bus.drain();
        // Attempt 1 threw; the pool refused attempt 2 (a failure too); attempt 3 ran.
        CHECK(calls == 2);
        CHECK(sub.stats().failed == 2);
        CHECK(sub.stats().delivered == 1);
    }
    CHECK(pool->refusals == 0);
    const auto later = bus.publish<test::ticks>({0, 3});
    CHECK(later.accepted());
    bus.drain();
}

// The refusal fails what was waiting when the executor said no, and nothing queued
// after it: a retry (or a publish) that arrives while the refused deliveries are being
// failed is a new delivery, and the executor is asked again for it. CI once saw a retry
// timer fire inside that window and the retry fail with the old refusal.
TEST_CASE("a delivery queued while a refusal is handled is not failed with that refusal") {
    const test::watchdog dog("drain() after a refusal raced a publish");
    auto pool = std::make_shared<refusing_executor>(2);
    std::latch reported(1);
    std::latch published(1);
    std::atomic<int> errors{0};
    herald::bus bus{{.default_executor = pool, .on_error = [&](const herald::delivery_error&) {
                         if (++errors == 1) {
                             reported.count_down();
                             published.wait(); // the refusal is being handled right now
                         }
                     }}};
    std::vector<int> got;
    auto sub = bus.subscribe<test::ticks>([&](const test::tick& t) { got.push_back(t.value); });
    pool->refusals = 1;
    std::thread first([&] { bus.publish<test::ticks>({0, 1}); }); // refused, fails in on_error
    reported.wait();
    const auto second = bus.publish<test::ticks>({0, 2}); // queued behind the refused one
    published.count_down();
    first.join();
    bus.drain();
    CHECK(second.accepted());
    CHECK(errors == 1);
    CHECK(sub.stats().failed == 1);
    CHECK(sub.stats().delivered == 1);
    CHECK(got == std::vector<int>{2});
}

namespace {
struct shallow_traits : herald::default_bus_traits {
    static constexpr std::uint32_t max_publish_depth = 8;
};

/// An inline handler that records how deep it runs and publishes on `Next`.
template <class Next, class Bus>
auto publish_onwards(Bus& bus, int& deepest) {
    return [&bus, &deepest](const test::tick& t) {
        deepest = std::max(deepest, t.value);
        (void)bus.template publish<Next>({0, t.value + 1});
    };
}

/// Two inline handlers that publish to each other's topic, for ever; returns how deep
/// the cycle got before a publish was refused.
template <class Bus>
int run_cycle(Bus& bus) {
    int deepest = 0;
    auto forth = bus.template subscribe<ping>(publish_onwards<pong>(bus, deepest), {.mode = herald::inline_delivery});
    auto back = bus.template subscribe<pong>(publish_onwards<ping>(bus, deepest), {.mode = herald::inline_delivery});
    const auto r = bus.template publish<ping>({0, 1});
    CHECK(r.handled_inline == 1); // the outermost handler returned normally
    return deepest;
}
} // namespace

TEST_CASE("a cycle of inline handlers ends at the nesting limit with a reported failure") {
    error_log errors;
    herald::basic_bus<shallow_traits> bus{{.workers = 1, .on_error = errors.handler()}};
    CHECK(run_cycle(bus) == 8);
    REQUIRE(errors.size() == 1); // only the innermost handler failed
    CHECK(errors.messages[0].find("max_publish_depth") != std::string::npos);
    CHECK(bus.stats().failed == 1);

    SUBCASE("the default limit keeps a long cycle off the stack's end") {
        herald::bus deep{{.workers = 1, .on_error = [](const herald::delivery_error&) {}}};
        CHECK(run_cycle(deep) == static_cast<int>(herald::default_bus_traits::max_publish_depth));
        CHECK(deep.stats().failed == 1);
    }
}

TEST_CASE("counters of departed subscribers survive compaction") {
    herald::bus bus{{.workers = 1}};
    std::vector<herald::subscription> kept;
    for (int i = 0; i < 1000; ++i) {
        auto sub = bus.subscribe<test::ticks>([](const test::tick&) {}, {.mode = herald::inline_delivery});
        bus.publish<test::ticks>({0, i});
        sub.unsubscribe();
        if (i % 10 == 0) {
            kept.push_back(std::move(sub)); // some handles outlive their subscription
        }
    }
    const auto stats = bus.stats();
    CHECK(stats.delivered == 1000);
    CHECK(stats.subscribers == 0);
    CHECK(kept.front().stats().delivered == 1);
}

#if defined(__unix__) && !defined(NDEBUG) && !defined(__SANITIZE_THREAD__)
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define HERALD_TEST_NO_FORK
#endif
#endif
#ifndef HERALD_TEST_NO_FORK
TEST_CASE("debug builds abort when a bus is destroyed under a publisher") {
    std::fflush(nullptr);
    const pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        // The child breaks the rule on purpose; its diagnostic goes to /dev/null, and
        // doctest's crash report is not wanted there.
        (void)std::freopen("/dev/null", "w", stderr);
        (void)std::signal(SIGABRT, SIG_DFL);
        auto* bus = new herald::bus({.workers = 1});
        std::atomic<bool> inside{false};
        auto sub = bus->subscribe<test::ticks>(
            [&](const test::tick&) {
                inside = true;
                std::this_thread::sleep_for(std::chrono::milliseconds(500));
            },
            {.mode = herald::inline_delivery});
        std::thread publisher([&] { bus->publish<test::ticks>({0, 1}); });
        while (!inside) {
            std::this_thread::yield();
        }
        delete bus; // aborts here
        std::_Exit(0);
    }
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child);
    CHECK(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGABRT);
}
#endif
#endif
