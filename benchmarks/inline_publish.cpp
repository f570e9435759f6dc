// Inline publish cost (ns per publish) for 1 to 1000 subscribers: herald vs indirect-call loops and Boost.Signals2.
#include "support/bench_support.hpp"

#include <herald/herald.hpp>

#include <benchmark/benchmark.h>
#include <boost/signals2/signal.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

namespace {

using herald_bench::ev16;

struct inline_topic : herald::topic<ev16> {};

// Every variant runs the same handler body: add one word of the event to a sink.

/// A bus without latency metrics: what "metrics off" costs is measured against it.
struct no_metrics_traits : herald::default_bus_traits {
    static constexpr bool latency_metrics = false;
};

// `Traits`: default (latency metrics on, one call in 64 timed) or `no_metrics_traits`.
template <class Traits = herald::default_bus_traits>
void herald_inline(benchmark::State& state) {
    const auto subscribers = static_cast<std::size_t>(state.range(0));
    herald::basic_bus<Traits> bus{{.workers = 1}};
    std::uint64_t sink = 0;
    std::vector<herald::subscription> keep;
    keep.reserve(subscribers);
    for (std::size_t i = 0; i < subscribers; ++i) {
        keep.push_back(bus.template subscribe<inline_topic>([&sink](const ev16& e) { sink += e.a; },
                                                            {.mode = herald::inline_delivery}));
    }
    std::uint64_t i = 0;
    for (auto _ : state) {
        bus.template publish<inline_topic>(ev16{i, i});
        ++i;
    }
    benchmark::DoNotOptimize(sink);
    state.counters["subscribers"] = static_cast<double>(subscribers);
}

// The floor: a virtual call per handler. Two handler classes (first half one, second
// half the other) so the compiler cannot devirtualise the loop; in blocks rather than
// alternating, so the indirect branch stays as predictable as herald's (whose
// subscribers here all share one handler type).
struct handler_base {
    handler_base() = default;
    handler_base(const handler_base&) = delete;
    handler_base& operator=(const handler_base&) = delete;
    virtual ~handler_base() = default;
    virtual void on(const ev16& e) = 0;
};

struct add_a final : handler_base {
    explicit add_a(std::uint64_t* s) : sink(s) {}
    void on(const ev16& e) override { *sink += e.a; }
    std::uint64_t* sink;
};

struct add_b final : handler_base {
    explicit add_b(std::uint64_t* s) : sink(s) {}
    void on(const ev16& e) override { *sink += e.b; }
    std::uint64_t* sink;
};

void virtual_loop(benchmark::State& state) {
    const auto subscribers = static_cast<std::size_t>(state.range(0));
    std::uint64_t sink = 0;
    std::vector<std::unique_ptr<handler_base>> handlers;
    for (std::size_t i = 0; i < subscribers; ++i) {
        if (i < (subscribers + 1) / 2) {
            handlers.push_back(std::make_unique<add_a>(&sink));
        } else {
            handlers.push_back(std::make_unique<add_b>(&sink));
        }
    }
    std::uint64_t i = 0;
    for (auto _ : state) {
        const ev16 e{i, i};
        for (const auto& h : handlers) {
            h->on(e);
        }
        ++i;
    }
    benchmark::DoNotOptimize(sink);
    state.counters["subscribers"] = static_cast<double>(subscribers);
}

void function_loop(benchmark::State& state) {
    const auto subscribers = static_cast<std::size_t>(state.range(0));
    std::uint64_t sink = 0;
    std::vector<std::function<void(const ev16&)>> handlers;
    for (std::size_t i = 0; i < subscribers; ++i) {
        handlers.emplace_back([&sink](const ev16& e) { sink += e.a; });
    }
    std::uint64_t i = 0;
    for (auto _ : state) {
        const ev16 e{i, i};
        for (const auto& h : handlers) {
            h(e);
        }
        ++i;
    }
    benchmark::DoNotOptimize(sink);
    state.counters["subscribers"] = static_cast<double>(subscribers);
}

void signals2_emit(benchmark::State& state) {
    const auto subscribers = static_cast<std::size_t>(state.range(0));
    std::uint64_t sink = 0;
    boost::signals2::signal<void(const ev16&)> signal; // default: boost::signals2::mutex
    for (std::size_t i = 0; i < subscribers; ++i) {
        signal.connect([&sink](const ev16& e) { sink += e.a; });
    }
    std::uint64_t i = 0;
    for (auto _ : state) {
        signal(ev16{i, i});
        ++i;
    }
    benchmark::DoNotOptimize(sink);
    state.counters["subscribers"] = static_cast<double>(subscribers);
}

void subscriber_counts(benchmark::internal::Benchmark* b) {
    for (const int n : {1, 10, 100, 1000}) {
        b->Arg(n);
    }
}

BENCHMARK(herald_inline<>)->Name("inline/herald")->Apply(subscriber_counts);
BENCHMARK(herald_inline<no_metrics_traits>)->Name("inline/herald_no_metrics")->Arg(1)->Arg(10);
BENCHMARK(virtual_loop)->Name("inline/virtual_loop")->Apply(subscriber_counts);
BENCHMARK(function_loop)->Name("inline/function_loop")->Apply(subscriber_counts);
BENCHMARK(signals2_emit)->Name("inline/signals2")->Apply(subscriber_counts);

} // namespace
