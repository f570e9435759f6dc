// Flow control: what a bound costs a 1->1 stream, whether `block` makes a publisher go
// at the consumer's pace, and keyed ordering against a serial subscriber (parallel keys
// with slow handlers; one key with fast ones).
#include "support/bench_support.hpp"

#include <herald/herald.hpp>

#include <benchmark/benchmark.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <utility>
#include <vector>

namespace {

using herald_bench::ev16;

struct flow_topic : herald::topic<ev16> {};

/// Events per timed iteration of the streaming scenarios.
std::uint64_t events() { return herald_bench::scaled<std::uint64_t>(2'000'000, 200'000); }

void publish_range(herald::bus& bus, std::uint64_t n) {
    for (std::uint64_t i = 0; i < n; ++i) {
        bus.publish<flow_topic>(ev16{i, i});
    }
}

// --- a bound on a 1->1 stream ------------------------------------------------------------

/// One publisher streams `n` events per iteration to one subscriber set up with
/// `options` (handler: add to a sink) on a one-worker bus, after a warm-up of `n / 8`.
void stream(benchmark::State& state, std::uint64_t n, herald::subscribe_options<ev16> options) {
    herald::bus bus{{.workers = 1}};
    std::uint64_t sink = 0;
    auto sub = bus.subscribe<flow_topic>([&sink](const ev16& e) { sink += e.a; }, std::move(options));
    publish_range(bus, n / 8);
    bus.drain();
    for (auto _ : state) {
        publish_range(bus, n);
        bus.drain();
    }
    benchmark::DoNotOptimize(sink);
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
}

// The async 1->1 run of bench_async_throughput, with and without a capacity of 1M
// (overflow::block; the backlog never reaches it, so this is the cost of counting).
void stream_1to1(benchmark::State& state, std::size_t capacity) { stream(state, events(), {.capacity = capacity}); }

// --- block under overload ----------------------------------------------------------------

/// Spins for `d` (the handler's cost).
void work_for(std::chrono::nanoseconds d) {
    const auto until = std::chrono::steady_clock::now() + d;
    while (std::chrono::steady_clock::now() < until) {
    }
}

// A handler of 2 us, a publisher as fast as it can, a mailbox of 1000 with `block`:
// the publisher's rate (events over the time its publishes took) against the
// consumer's (events over the time until all were handled).
void block_overload(benchmark::State& state) {
    const std::uint64_t n = herald_bench::scaled<std::uint64_t>(200'000, 20'000);
    herald::bus bus{{.workers = 1}};
    auto sub = bus.subscribe<flow_topic>(
        [](const ev16&) { work_for(std::chrono::microseconds(2)); },
        {.capacity = 1000, .overflow = herald::overflow::block, .block_timeout = std::chrono::seconds(60)});
    double publisher_rate = 0;
    double consumer_rate = 0;
    for (auto _ : state) {
        const auto start = std::chrono::steady_clock::now();
        publish_range(bus, n);
        const auto published = std::chrono::steady_clock::now();
        bus.drain();
        const auto handled = std::chrono::steady_clock::now();
        publisher_rate = static_cast<double>(n) / std::chrono::duration<double>(published - start).count();
        consumer_rate = static_cast<double>(n) / std::chrono::duration<double>(handled - start).count();
    }
    state.counters["publisher_per_s"] = publisher_rate;
    state.counters["consumer_per_s"] = consumer_rate;
    state.counters["refused"] = static_cast<double>(sub.stats().rejected);
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
}

// --- keyed ordering ----------------------------------------------------------------------

/// Four publishers, 1000 keys, handlers that sleep 100 us, on an 8-worker pool: a
/// serial subscriber against a keyed one.
void keys_in_parallel(benchmark::State& state, herald::ordering order) {
    constexpr int publishers = 4;
    const int per_publisher = herald_bench::scaled(500, 100);
    herald::bus bus{{.workers = 1}};
    auto pool = bus.make_pool(8);
    auto sub =
        bus.subscribe<flow_topic>([](const ev16&) { std::this_thread::sleep_for(std::chrono::microseconds(100)); },
                                  {.order = order, .pool = pool, .key = [](const ev16& e) { return e.a % 1000; }});
    for (auto _ : state) {
        std::vector<std::thread> threads;
        for (int p = 0; p < publishers; ++p) {
            threads.emplace_back([&, p] {
                for (int i = 0; i < per_publisher; ++i) {
                    bus.publish<flow_topic>(ev16{static_cast<std::uint64_t>(i * publishers + p), 0});
                }
            });
        }
        for (auto& t : threads) {
            t.join();
        }
        bus.drain();
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * publishers * per_publisher);
}

/// One publisher, one key, a trivial handler: what keyed bookkeeping costs a stream.
void one_key(benchmark::State& state, herald::ordering order) {
    stream(state, events() / 4, {.order = order, .key = [](const ev16&) { return 7; }});
}

/// Each scenario runs once per repetition (bench.sh repeats and takes medians), timed
/// in wall-clock milliseconds.
[[maybe_unused]] const bool registered = [] {
    const auto once = [](benchmark::internal::Benchmark* b) {
        b->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);
    };
    once(benchmark::RegisterBenchmark("bounded_1to1/unbounded", stream_1to1, herald::unbounded));
    once(benchmark::RegisterBenchmark("bounded_1to1/capacity_1M", stream_1to1, std::size_t{1'000'000}));
    once(benchmark::RegisterBenchmark("block_overload/herald", block_overload));
    once(benchmark::RegisterBenchmark("keyed_parallel/serial", keys_in_parallel, herald::ordering::serial));
    once(benchmark::RegisterBenchmark("keyed_parallel/by_key", keys_in_parallel, herald::ordering::by_key));
    once(benchmark::RegisterBenchmark("keyed_one_key/serial", one_key, herald::ordering::serial));
    once(benchmark::RegisterBenchmark("keyed_one_key/by_key", one_key, herald::ordering::by_key));
    return true;
}();

} // namespace
