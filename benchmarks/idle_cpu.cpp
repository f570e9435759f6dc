// CPU used by an idle bus (default pool, no events) as % of one core, vs an idle BlockingConcurrentQueue consumer.
#include "support/bench_support.hpp"

#include <herald/herald.hpp>

#include <benchmark/benchmark.h>

#include <chrono>
#include <memory>
#include <sys/resource.h>
#include <thread>

namespace {

using herald_bench::ev16;

/// How long each idle window lasts: 2 s (0.2 s in quick mode).
std::chrono::milliseconds window() {
    return herald_bench::scaled(std::chrono::milliseconds(2000), std::chrono::milliseconds(200));
}

/// User + system CPU seconds of the whole process (every thread).
double process_cpu_seconds() {
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    auto seconds = [](const timeval& t) {
        return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) * 1e-6;
    };
    return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

/// Sleeps for the window and reports the process's CPU time over it as % of one core.
/// The benchmark thread itself sleeps, so what is counted is the idle threads' cost.
void measure_window(benchmark::State& state) {
    const auto wall_start = std::chrono::steady_clock::now();
    const double cpu_start = process_cpu_seconds();
    std::this_thread::sleep_for(window());
    const double cpu = process_cpu_seconds() - cpu_start;
    const std::chrono::duration<double> wall = std::chrono::steady_clock::now() - wall_start;
    state.counters["cpu_pct"] = 100.0 * cpu / wall.count();
    state.counters["window_s"] = wall.count();
}

// herald: a bus with its default pool (one worker per core), no subscriber, no event
// (the pool starts no thread before its first task).
void herald_idle(benchmark::State& state) {
    for (auto _ : state) {
        herald::bus bus;
        measure_window(state);
    }
}

// herald: the same after a burst of async events, so the workers have run and parked.
struct idle_topic : herald::topic<ev16> {};
void herald_idle_after_burst(benchmark::State& state) {
    for (auto _ : state) {
        herald::bus bus;
        std::uint64_t sink = 0;
        auto sub = bus.subscribe<idle_topic>([&sink](const ev16& e) { sink += e.a; });
        for (std::uint64_t i = 0; i < 10'000; ++i) {
            bus.publish<idle_topic>(ev16{i, i});
        }
        bus.drain();
        measure_window(state);
        benchmark::DoNotOptimize(sink);
    }
}

// herald: a low-latency pool (workers poll 100 us after each task) after a burst: once
// the budget is spent the workers must sleep like the default ones.
void herald_idle_low_latency(benchmark::State& state) {
    for (auto _ : state) {
        herald::bus bus{{.default_executor = std::make_shared<herald::thread_pool>(herald::thread_pool_options{
                             .threads = 2, .name = "low-latency", .spin = std::chrono::microseconds(100)})}};
        std::uint64_t sink = 0;
        auto sub = bus.subscribe<idle_topic>([&sink](const ev16& e) { sink += e.a; });
        for (std::uint64_t i = 0; i < 10'000; ++i) {
            bus.publish<idle_topic>(ev16{i, i});
        }
        bus.drain();
        measure_window(state);
        benchmark::DoNotOptimize(sink);
    }
}

// Baseline: one consumer thread blocked in BlockingConcurrentQueue::wait_dequeue.
void blocking_idle(benchmark::State& state) {
    for (auto _ : state) {
        auto on_item = [](const ev16& e) { benchmark::DoNotOptimize(e); };
        herald_bench::blocking_queue<ev16, decltype(on_item)> queue(on_item);
        measure_window(state);
    }
}

BENCHMARK(herald_idle)->Name("idle_cpu/herald")->Iterations(1)->UseRealTime();
BENCHMARK(herald_idle_after_burst)->Name("idle_cpu/herald_after_burst")->Iterations(1)->UseRealTime();
BENCHMARK(herald_idle_low_latency)->Name("idle_cpu/herald_low_latency")->Iterations(1)->UseRealTime();
BENCHMARK(blocking_idle)->Name("idle_cpu/moodycamel_blocking")->Iterations(1)->UseRealTime();

} // namespace
