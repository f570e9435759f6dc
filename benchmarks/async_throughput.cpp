// Async throughput (events/s, end to end until handled): 1->1, 1->4 and 2->1, herald vs
// moodycamel queues, a mutex+condvar queue and a batching (swap the whole list) queue.
#include "support/bench_support.hpp"

#include <herald/herald.hpp>

#include <benchmark/benchmark.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

namespace {

using herald_bench::ev16;

struct async_topic : herald::topic<ev16> {};

/// Events per timed iteration: 2M (200k in quick mode).
std::uint64_t events() { return herald_bench::scaled<std::uint64_t>(2'000'000, 200'000); }
/// Events published before timing, so queues have grown their blocks.
std::uint64_t warmup_events() { return events() / 8; }

/// A bus without latency metrics: what "metrics off" costs is measured against it.
struct no_metrics_traits : herald::default_bus_traits {
    static constexpr bool latency_metrics = false;
};

template <class Bus>
void publish_range(Bus& bus, std::uint64_t from, std::uint64_t to) {
    for (std::uint64_t i = from; i < to; ++i) {
        bus.template publish<async_topic>(ev16{i, i});
    }
}

// --- 1 publisher -> 1 subscriber --------------------------------------------------------

// herald: publish N, then drain() (returns when every event has been handled). One
// worker, like the baselines' one consumer thread. `Traits`: default (latency metrics
// on, one event in 64 timed) or `no_metrics_traits`.
template <class Traits = herald::default_bus_traits>
void herald_1to1(benchmark::State& state) {
    const std::uint64_t n = events();
    herald::basic_bus<Traits> bus{{.workers = 1}};
    std::uint64_t sink = 0; // the subscriber is serial: one writer at a time
    auto sub = bus.template subscribe<async_topic>([&sink](const ev16& e) { sink += e.a; });
    publish_range(bus, 0, warmup_events());
    bus.drain();
    for (auto _ : state) {
        publish_range(bus, 0, n);
        bus.drain();
    }
    benchmark::DoNotOptimize(sink);
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
}

// Baselines: push N through the queue, then wait until the consumer has handled N.
template <template <class, class> class Queue>
void queue_1to1(benchmark::State& state) {
    const std::uint64_t n = events();
    std::uint64_t sink = 0;
    std::atomic<std::uint64_t> handled{0};
    auto on_item = [&sink, &handled](const ev16& e) {
        sink += e.a;
        herald_bench::bump(handled);
    };
    Queue<ev16, decltype(on_item)> queue(on_item);
    auto token = queue.make_token();
    std::uint64_t target = 0;
    auto run = [&](std::uint64_t count) {
        for (std::uint64_t i = 0; i < count; ++i) {
            queue.push(token, ev16{i, i});
        }
        target += count;
        herald_bench::wait_until(handled, target);
    };
    run(warmup_events());
    for (auto _ : state) {
        run(n);
    }
    benchmark::DoNotOptimize(sink);
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
}

// --- 1 publisher -> 4 subscribers -------------------------------------------------------

constexpr std::size_t fan_out = 4;

// herald: four async subscribers on one topic, the default pool (one worker per core).
void herald_1to4(benchmark::State& state) {
    const std::uint64_t n = events();
    herald::bus bus;
    std::array<std::uint64_t, fan_out> sinks{};
    std::vector<herald::subscription> subs;
    for (auto& sink : sinks) {
        subs.push_back(bus.subscribe<async_topic>([&sink](const ev16& e) { sink += e.a; }));
    }
    publish_range(bus, 0, warmup_events());
    bus.drain();
    for (auto _ : state) {
        publish_range(bus, 0, n);
        bus.drain();
    }
    benchmark::DoNotOptimize(sinks);
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n * fan_out)); // deliveries
}

// Baselines: one queue and consumer thread per subscriber; the publisher pushes each
// event into all four.
template <template <class, class> class Queue>
void queues_1to4(benchmark::State& state) {
    const std::uint64_t n = events();
    struct consumer {
        std::uint64_t sink = 0;
        std::atomic<std::uint64_t> handled{0};
        void operator()(const ev16& e) {
            sink += e.a;
            herald_bench::bump(handled);
        }
    };
    struct forward {
        consumer* to;
        void operator()(const ev16& e) const { (*to)(e); }
    };
    using queue_type = Queue<ev16, forward>;
    std::array<consumer, fan_out> consumers{};
    std::vector<std::unique_ptr<queue_type>> queues;
    std::vector<typename queue_type::token> tokens;
    for (auto& c : consumers) {
        queues.push_back(std::make_unique<queue_type>(forward{&c}));
        tokens.push_back(queues.back()->make_token());
    }
    std::uint64_t target = 0;
    auto run = [&](std::uint64_t count) {
        for (std::uint64_t i = 0; i < count; ++i) {
            for (std::size_t q = 0; q < fan_out; ++q) {
                queues[q]->push(tokens[q], ev16{i, i});
            }
        }
        target += count;
        for (const auto& c : consumers) {
            herald_bench::wait_until(c.handled, target);
        }
    };
    run(warmup_events());
    for (auto _ : state) {
        run(n);
    }
    std::uint64_t total = 0;
    for (const auto& c : consumers) {
        total += c.sink;
    }
    benchmark::DoNotOptimize(total);
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n * fan_out));
}

// --- 2 publishers -> 1 subscriber -------------------------------------------------------

// herald: this thread and a helper each publish N/2, then drain(). One worker.
void herald_2to1(benchmark::State& state) {
    const std::uint64_t n = events();
    herald::bus bus{{.workers = 1}};
    std::uint64_t sink = 0;
    auto sub = bus.subscribe<async_topic>([&sink](const ev16& e) { sink += e.a; });
    publish_range(bus, 0, warmup_events());
    bus.drain();
    for (auto _ : state) {
        std::thread helper([&bus, n] { publish_range(bus, n / 2, n); });
        publish_range(bus, 0, n / 2);
        helper.join();
        bus.drain();
    }
    benchmark::DoNotOptimize(sink);
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
}

template <template <class, class> class Queue>
void queue_2to1(benchmark::State& state) {
    const std::uint64_t n = events();
    std::uint64_t sink = 0;
    std::atomic<std::uint64_t> handled{0};
    auto on_item = [&sink, &handled](const ev16& e) {
        sink += e.a;
        herald_bench::bump(handled);
    };
    using queue_type = Queue<ev16, decltype(on_item)>;
    queue_type queue(on_item);
    auto push_range = [&queue](std::uint64_t from, std::uint64_t to) {
        auto token = queue.make_token();
        for (std::uint64_t i = from; i < to; ++i) {
            queue.push(token, ev16{i, i});
        }
    };
    std::uint64_t target = warmup_events();
    push_range(0, target);
    herald_bench::wait_until(handled, target);
    for (auto _ : state) {
        std::thread helper([&push_range, n] { push_range(n / 2, n); });
        push_range(0, n / 2);
        helper.join();
        target += n;
        herald_bench::wait_until(handled, target);
    }
    benchmark::DoNotOptimize(sink);
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
}

// One timed iteration of N events per repetition; wall-clock time, since the work
// happens on other threads.
#define HERALD_THROUGHPUT(fn, name) BENCHMARK(fn)->Name(name)->Iterations(1)->UseRealTime()

HERALD_THROUGHPUT(herald_1to1<>, "async_1to1/herald");
HERALD_THROUGHPUT(herald_1to1<no_metrics_traits>, "async_1to1/herald_no_metrics");
HERALD_THROUGHPUT(queue_1to1<herald_bench::spin_queue>, "async_1to1/moodycamel_spin");
HERALD_THROUGHPUT(queue_1to1<herald_bench::blocking_queue>, "async_1to1/moodycamel_blocking");
HERALD_THROUGHPUT(queue_1to1<herald_bench::mutex_queue>, "async_1to1/mutex_condvar");
HERALD_THROUGHPUT(queue_1to1<herald_bench::swap_queue>, "async_1to1/swap_list");

HERALD_THROUGHPUT(herald_1to4, "async_1to4/herald");
HERALD_THROUGHPUT(queues_1to4<herald_bench::blocking_queue>, "async_1to4/moodycamel_blocking");
HERALD_THROUGHPUT(queues_1to4<herald_bench::swap_queue>, "async_1to4/swap_list");

HERALD_THROUGHPUT(herald_2to1, "async_2to1/herald");
HERALD_THROUGHPUT(queue_2to1<herald_bench::blocking_queue>, "async_2to1/moodycamel_blocking");
HERALD_THROUGHPUT(queue_2to1<herald_bench::mutex_queue>, "async_2to1/mutex_condvar");
HERALD_THROUGHPUT(queue_2to1<herald_bench::swap_queue>, "async_2to1/swap_list");

} // namespace
