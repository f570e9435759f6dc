// Latency metrics, causation, trace context, observers, report() and topology().
#include <doctest/doctest.h>

#include <herald/herald.hpp>
#include <herald/testing.hpp>
#include <herald/trace_context.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;

/// A wall clock the test moves by hand: envelope times and latency metrics read it.
struct hand_clock {
    using rep = std::chrono::system_clock::rep;
    using period = std::chrono::system_clock::period;
    using duration = std::chrono::system_clock::duration;
    using time_point = std::chrono::system_clock::time_point;
    static inline std::atomic<std::int64_t> ns{1'000'000'000'000};
    static time_point now() noexcept { return time_point(std::chrono::nanoseconds(ns.load())); }
    static void advance(std::chrono::nanoseconds step) { ns.fetch_add(step.count()); }
};

/// Every event timed, by the hand clock.
struct timed_traits : herald::default_bus_traits {
    using clock = hand_clock;
    static constexpr std::uint32_t latency_sample_every = 1;
};

/// Latency metrics off.
struct dark_traits : herald::default_bus_traits {
    static constexpr bool latency_metrics = false;
};

struct step {
    int n = 0;
};
struct first_steps : herald::topic<step> {
    static constexpr std::string_view name = "chain.first";
};
struct second_steps : herald::topic<step> {
    static constexpr std::string_view name = "chain.second";
};
struct third_steps : herald::topic<step> {
    static constexpr std::string_view name = "chain.third";
};
struct flaky_steps
    : herald::topic<step, herald::at_least_once<herald::max_attempts<2>, herald::fixed_backoff<herald::delay::ms(0)>>> {
    static constexpr std::string_view name = "chain.flaky";
};

const herald::subscriber_metrics& find(const herald::bus_metrics& m, std::string_view topic, std::string_view who) {
    for (const auto& t : m.topics) {
        for (const auto& s : t.subscribers) {
            if (t.name == topic && s.name == who) {
                return s;
            }
        }
    }
    throw std::runtime_error("no subscriber " + std::string(who) + " on " + std::string(topic));
}

/// The bucket `value` falls in holds it: bound and quantile agree with the value within
/// the histogram's 25 % resolution.
void check_near(std::chrono::nanoseconds got, std::chrono::nanoseconds want) {
    CHECK(got >= want);
    CHECK(got.count() <= want.count() + want.count() / 4);
}

} // namespace

TEST_CASE("histogram buckets: every value lies in its bucket, buckets are contiguous") {
    using h = herald::latency_histogram;
    for (std::uint64_t v : {0ULL, 1ULL, 7ULL, 8ULL, 9ULL, 15ULL, 16ULL, 1000ULL, 123456789ULL, 1ULL << 40U}) {
        const auto b = h::bucket_of(v);
        CHECK(v <= h::upper_bound(b));
        if (b > 0) {
            CHECK(v > h::upper_bound(b - 1));
        }
    }
    for (std::size_t b = 1; b + 1 < h::bucket_count; ++b) {
        CHECK(h::bucket_of(h::upper_bound(b)) == b);
        CHECK(h::bucket_of(h::upper_bound(b - 1) + 1) == b);
        // Each bucket is at most a quarter wider than where it starts.
        const double low = static_cast<double>(h::upper_bound(b - 1) + 1);
        CHECK(static_cast<double>(h::upper_bound(b)) <= low * 1.25 + 1);
    }
    CHECK(h::bucket_of(UINT64_MAX) == h::bucket_count - 1);
    CHECK(h::upper_bound(h::bucket_count - 1) == UINT64_MAX);
}

TEST_CASE("latency histograms measure the wait in the mailbox and the time in the handler (hand clock)") {
    auto pool = std::make_shared<herald::testing::manual_executor>();
    herald::basic_bus<timed_traits> bus{{.default_executor = pool}};
    auto slow = bus.subscribe<first_steps>([](const step& s) { hand_clock::advance(std::chrono::milliseconds(s.n)); },
                                           {.name = "slow"});
    auto quick = bus.subscribe<first_steps>([](const step&) {}, {.name = "quick", .mode = herald::inline_delivery});

    // Ten events with handler times 1..10 ms; each waits 3 ms before the worker runs it
    // (plus the handler times of the events ahead of it: the worker runs them in order).
    for (int i = 1; i <= 10; ++i) {
        bus.publish<first_steps>(step{i});
        hand_clock::advance(3ms);
        pool->run_until_idle();
    }
    const auto m = bus.metrics();
    CHECK(m.sample_every == 1);
    const auto& s = find(m, "chain.first", "slow");
    REQUIRE(s.handled.count() == 10);
    REQUIRE(s.waited.count() == 10);
    CHECK(s.handled.sum() == 55ms);
    CHECK(s.waited.sum() == 30ms);
    check_near(s.waited.quantile(0.5), 3ms);
    check_near(s.handled.quantile(0.5), 5ms);
    check_near(s.handled.quantile(1.0), 10ms);
    check_near(s.handled.quantile(0.0), 1ms);
    CHECK(s.handled.count_at_most(std::chrono::nanoseconds((1LL << 22) - 1)) == 4); // 2^22 ns = 4.19 ms
    // Inline handlers wait for nothing: only their calls are timed.
    const auto& q = find(m, "chain.first", "quick");
    CHECK(q.handled.count() == 10);
    CHECK(q.waited.count() == 0);
    CHECK(q.handled.sum() == 0ns);
}

TEST_CASE("latency metrics sample one event in latency_sample_every, the same ones for every subscriber") {
    herald::bus bus{{.workers = 1}};
    auto a = bus.subscribe<first_steps>([](const step&) {}, {.name = "a"});
    auto b = bus.subscribe<first_steps>([](const step&) {}, {.name = "b", .mode = herald::inline_delivery});
    constexpr int events = 64000;
    for (int i = 0; i < events; ++i) {
        bus.publish<first_steps>(step{i});
    }
    bus.drain();
    const auto m = bus.metrics();
    CHECK(m.sample_every == 64);
    const auto timed = find(m, "chain.first", "a").handled.count();
    CHECK(timed == find(m, "chain.first", "b").handled.count());
    CHECK(find(m, "chain.first", "a").waited.count() == timed);
    // A hash of the sequence picks them: about one in 64 (1000 expected).
    CHECK(timed > 800);
    CHECK(timed < 1200);
}

TEST_CASE("traits without latency metrics: no histograms, nothing timed") {
    herald::basic_bus<dark_traits> bus{{.workers = 1}};
    auto a = bus.subscribe<first_steps>([](const step&) {}, {.name = "a"});
    for (int i = 0; i < 100; ++i) {
        bus.publish<first_steps>(step{i});
    }
    bus.drain();
    const auto m = bus.metrics();
    CHECK(m.sample_every == 0);
    const auto& s = find(m, "chain.first", "a");
    CHECK(s.stats.delivered == 100);
    CHECK(s.handled.count() == 0);
    CHECK(s.waited.count() == 0);
    CHECK(bus.report().find("latency metrics off") != std::string::npos);
}

TEST_CASE("a chain of three topics carries its correlation and causation ids") {
    herald::bus bus{{.workers = 2}};
    std::mutex mutex;
    std::vector<herald::envelope<step>> seen_second;
    std::vector<herald::envelope<step>> seen_third;
    auto one = bus.subscribe<first_steps>([&](const step& s) { bus.publish<second_steps>(step{s.n}); });
    auto two = bus.subscribe<second_steps>(
        [&](const herald::envelope<step>& e) {
            {
                std::lock_guard lock(mutex);
                seen_second.push_back(e);
            }
            bus.publish<third_steps>(step{e.event().n});
        },
        {.mode = herald::inline_delivery});
    auto three = bus.subscribe<third_steps>([&](const herald::envelope<step>& e) {
        std::lock_guard lock(mutex);
        seen_third.push_back(e);
    });
    const auto root = bus.publish<first_steps>(step{1});
    const auto given = bus.publish<first_steps>(step{2}, {.correlation = herald::event_id{7, 7}});
    // drain() waits for what was published before it: once per step of the chain.
    bus.drain();
    bus.drain();

    REQUIRE(seen_second.size() == 2);
    REQUIRE(seen_third.size() == 2);
    for (std::size_t i = 0; i < 2; ++i) {
        const auto& b = seen_second[i];
        const auto& c = seen_third[i];
        const auto& cause = b.event().n == 1 ? root : given;
        REQUIRE(c.event().n == b.event().n);
        // Root -> second: caused by the root's span, correlated with its trace.
        CHECK(b.causation_id() == herald::span_of(cause.id));
        CHECK(c.causation_id() == b.span_id());
        CHECK(c.correlation_id() == b.correlation_id());
        CHECK(b.sampled());
        if (b.event().n == 1) {
            CHECK(b.correlation_id() == root.id); // the root had none: its own id is the trace
        } else {
            CHECK(b.correlation_id() == herald::event_id{7, 7}); // a given one travels on
        }
    }
}

TEST_CASE("causation: given ids win, publishes outside handlers have none, dead letters are caused by the failure") {
    herald::bus bus{{.workers = 1}};
    std::vector<herald::envelope<step>> seen;
    std::mutex mutex;
    auto record = bus.subscribe<second_steps>(
        [&](const herald::envelope<step>& e) {
            std::lock_guard lock(mutex);
            seen.push_back(e);
        },
        {.mode = herald::inline_delivery});
    auto relay = bus.subscribe<first_steps>([&](const step&) {
        bus.publish<second_steps>(step{1}, {.correlation = herald::event_id{1, 2}, .causation = 99, .sampled = false});
    });
    bus.publish<second_steps>(step{0});
    const auto root = bus.publish<first_steps>(step{0});
    bus.drain();
    REQUIRE(seen.size() == 2);
    CHECK(seen[0].causation_id() == 0);
    CHECK_FALSE(seen[0].has_correlation_id());
    CHECK(seen[0].trace_id() == seen[0].id());
    CHECK(seen[1].causation_id() == 99);
    CHECK(seen[1].correlation_id() == herald::event_id{1, 2});
    CHECK_FALSE(seen[1].sampled());
    (void)root;

    std::vector<herald::envelope<herald::dead_letter<step>>> letters;
    auto failing = bus.subscribe<flaky_steps>([](const step&) { throw std::runtime_error("no"); }, {.name = "failing"});
    auto dead = bus.subscribe<herald::dead_letter_topic<flaky_steps>>(
        [&](const herald::envelope<herald::dead_letter<step>>& e) {
            std::lock_guard lock(mutex);
            letters.push_back(e);
        },
        {.mode = herald::inline_delivery});
    bus.set_error_handler([](const herald::delivery_error&) {});
    const auto doomed = bus.publish<flaky_steps>(step{5});
    bus.drain();
    REQUIRE(letters.size() == 1);
    CHECK(letters[0].causation_id() == herald::span_of(doomed.id));
    CHECK(letters[0].correlation_id() == doomed.id);
}

TEST_CASE("trace_context: traceparent text round-trips; malformed text is refused") {
    const herald::trace_context t{{0x0af7651916cd43dd, 0x8448eb211c80319c}, 0xb7ad6b7169203331, true};
    CHECK(t.traceparent() == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    const auto back = herald::trace_context::parse(t.traceparent());
    REQUIRE(back);
    CHECK(back->trace_id == t.trace_id);
    CHECK(back->parent_id == t.parent_id);
    CHECK(back->sampled);
    const auto unsampled = herald::trace_context::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00");
    REQUIRE(unsampled);
    CHECK_FALSE(unsampled->sampled);
    // A later version may append fields; version 00 may not.
    CHECK(herald::trace_context::parse("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra"));
    for (const char* bad : {"", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
                            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
                            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
                            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
                            "00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0g"}) {
        CAPTURE(bad);
        CHECK_FALSE(herald::trace_context::parse(bad));
    }
    // Continuing a trace from outside: the event joins it, caused by the outside span.
    herald::bus bus{{.workers = 1}};
    std::optional<herald::envelope<step>> got;
    auto sub = bus.subscribe<first_steps>([&](const herald::envelope<step>& e) { got = e; },
                                          {.mode = herald::inline_delivery});
    bus.publish<first_steps>(step{3}, t.options());
    REQUIRE(got);
    CHECK(got->correlation_id() == t.trace_id);
    CHECK(got->causation_id() == t.parent_id);
    const auto onward = herald::trace_context::of(*got);
    CHECK(onward.trace_id == t.trace_id);
    CHECK(onward.parent_id == got->span_id());
}

namespace {
/// Counts every observer call; can be told to throw or to publish.
class counting_observer : public herald::observer {
public:
    void on_publish(const herald::envelope_base& e, const herald::publish_result& r,
                    std::chrono::steady_clock::time_point began) override {
        std::lock_guard lock(mutex);
        CHECK(began <= std::chrono::steady_clock::now());
        publishes.push_back(std::string(e.topic()) + ":" +
                            std::to_string(r.queued + r.handled_inline + r.failed_inline));
        if (throw_on_publish) {
            throw std::runtime_error("observer failure");
        }
        if (republish != nullptr) {
            republish();
        }
    }
    void on_delivery_begin(std::string_view who, const herald::envelope_base&) override {
        std::lock_guard lock(mutex);
        ++open[std::string(who)];
        ++begins;
    }
    void on_delivery_end(std::string_view who, const herald::envelope_base&, herald::delivery_outcome how) override {
        std::lock_guard lock(mutex);
        --open[std::string(who)];
        (how == herald::delivery_outcome::handled ? handled : failed) += 1;
    }
    void on_drop(std::string_view who, const herald::envelope_base&, herald::drop_reason why) override {
        std::lock_guard lock(mutex);
        drops.push_back(std::string(who) + ":" + std::string(herald::to_string(why)));
    }
    void on_retry(std::string_view, const herald::envelope_base&, std::chrono::nanoseconds) override {
        std::lock_guard lock(mutex);
        ++retries;
    }
    void on_dead_letter(std::string_view, const herald::envelope_base&, herald::dead_letter_reason) override {
        std::lock_guard lock(mutex);
        ++dead_letters;
    }

    std::mutex mutex;
    std::vector<std::string> publishes;
    std::map<std::string, int> open;
    int begins = 0;
    int handled = 0;
    int failed = 0;
    int retries = 0;
    int dead_letters = 0;
    std::vector<std::string> drops;
    bool throw_on_publish = false;
    std::function<void()> republish;
};
} // namespace

TEST_CASE("observers see publishes, paired deliveries, drops, retries and dead letters") {
    auto seen = std::make_shared<counting_observer>();
    herald::bus bus{{.workers = 1, .observers = {seen, nullptr}}};
    // Subscribers on a manual pool run only when drain() drives it: their mailboxes fill.
    auto held = std::make_shared<herald::testing::manual_executor>();
    bus.set_error_handler([](const herald::delivery_error&) {});
    auto ok = bus.subscribe<first_steps>([](const step&) {}, {.name = "ok"});
    auto bad = bus.subscribe<first_steps>([](const step&) { throw std::runtime_error("bad"); },
                                          {.name = "bad", .mode = herald::inline_delivery});
    auto full = bus.subscribe<second_steps>(
        [](const step&) {}, {.name = "full", .pool = held, .capacity = 1, .overflow = herald::overflow::drop_newest});
    auto flaky = bus.subscribe<flaky_steps>([](const step&) { throw std::runtime_error("again"); }, {.name = "flaky"});

    bus.publish<first_steps>(step{1});
    bus.publish<second_steps>(step{1});
    bus.publish<second_steps>(step{2}); // mailbox full: dropped
    bus.publish<flaky_steps>(step{1});
    bus.drain();
    auto leaving = bus.subscribe<first_steps>([](const step&) {}, {.name = "leaving", .pool = held});
    bus.publish<first_steps>(step{2});
    leaving.unsubscribe(); // its queued copy is discarded
    bus.drain();

    std::lock_guard lock(seen->mutex);
    // Five publishes and the dead letter's (nobody takes it: it is kept).
    CHECK(seen->publishes.size() == 6);
    CHECK(seen->publishes[0] == "chain.first:2");
    CHECK(seen->publishes[2] == "chain.second:0");
    CHECK(std::count(seen->publishes.begin(), seen->publishes.end(), "chain.flaky.dead_letters:0") == 1);
    CHECK(seen->begins == seen->handled + seen->failed);
    for (const auto& entry : seen->open) {
        CAPTURE(entry.first);
        CHECK(entry.second == 0);
    }
    // ok x2, bad x2 (failed), full x1, flaky x2 (failed), the dead letter has no subscriber.
    CHECK(seen->handled == 3);
    CHECK(seen->failed == 4);
    CHECK(seen->retries == 1);
    CHECK(seen->dead_letters == 1);
    CHECK(seen->drops == std::vector<std::string>{"full:dropped", "leaving:discarded"});
    CHECK(bus.stats().observer_failures == 0);
}

TEST_CASE("an observer that throws is counted; one that publishes does not observe itself") {
    auto seen = std::make_shared<counting_observer>();
    herald::bus* target = nullptr;
    seen->throw_on_publish = true;
    herald::bus bus{{.workers = 1, .observers = {seen}}};
    target = &bus;
    int handled = 0;
    auto sub = bus.subscribe<second_steps>([&](const step&) { ++handled; }, {.mode = herald::inline_delivery});
    bus.publish<first_steps>(step{1});
    bus.publish<first_steps>(step{2});
    CHECK(bus.stats().observer_failures == 2);
    {
        std::lock_guard lock(seen->mutex);
        seen->throw_on_publish = false;
        seen->republish = [target] { target->publish<second_steps>(step{9}); };
    }
    bus.publish<first_steps>(step{3});
    bus.drain();
    CHECK(handled == 1); // the observer's publish was delivered...
    std::lock_guard lock(seen->mutex);
    CHECK(seen->publishes.size() == 3); // ...but not observed (no recursion)
    CHECK(seen->begins == 0);
}

TEST_CASE("report() and topology() describe topics, subscribers and pools") {
    herald::bus bus{{.source = "shop", .workers = 1}};
    auto oven = bus.make_pool(1, "oven");
    auto a = bus.subscribe<first_steps>([](const step&) {}, {.name = "barista"});
    auto b = bus.subscribe<first_steps>([](const step&) {}, {.name = "pastry \"chef\"", .pool = oven});
    auto c = bus.subscribe<second_steps>([](const step&) {}, {.name = "audit", .mode = herald::inline_delivery});
    for (int i = 0; i < 20; ++i) {
        bus.publish<first_steps>(step{i});
        bus.publish<second_steps>(step{i});
    }
    bus.drain();
    const std::string table = bus.report();
    CHECK(table.find("herald bus 'shop': 40 published, 60 delivered") != std::string::npos);
    CHECK(table.find("barista") != std::string::npos);
    CHECK(table.find("oven x1 (serial)") != std::string::npos);
    CHECK(table.find("inline") != std::string::npos);
    const std::string dot = bus.topology();
    CHECK(dot.rfind("digraph herald {", 0) == 0);
    CHECK(dot.find("label=\"chain.first\\n20 published\"") != std::string::npos);
    CHECK(dot.find("pastry \\\"chef\\\"") != std::string::npos); // escaped for DOT
    CHECK(dot.find("label=\"oven\\n1 thread\"") != std::string::npos);
    CHECK(dot.find("t0 -> s0_0 [label=\"20\"]") != std::string::npos);
    // Two pools (the default one and the oven), each drawn once.
    CHECK(dot.find(" p0 [shape=component") != std::string::npos);
    CHECK(dot.find(" p1 [shape=component") != std::string::npos);
    CHECK(dot.find(" p2 [shape=component") == std::string::npos);
    // A second call reports rates since the first: nothing happened in between.
    CHECK(bus.topology().find("\\n0.0/s") != std::string::npos);
}
