// Publish-to-handler-entry latency (p50/p90/p99 ns) at a paced rate and on an idle bus, herald vs baseline queues.
#include "support/bench_support.hpp"

#include <herald/herald.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace {

using herald_bench::ev16;
using herald_bench::now_ns;

struct latency_topic : herald::topic<ev16> {};

/// One pacing regime: an event every `period`, `events` of them per repetition.
struct pacing {
    std::chrono::nanoseconds period;
    std::size_t events;
    std::size_t warmup;
};

// busy: an event every 10 us (the consumer may still be spinning when the next comes);
// idle: one every 1 ms, long enough for every consumer to fall asleep in between.
pacing busy() { return {std::chrono::microseconds(10), herald_bench::scaled<std::size_t>(20'000, 2'000), 1'000}; }
pacing idle() { return {std::chrono::milliseconds(1), herald_bench::scaled<std::size_t>(300, 40), 20}; }

/// Each event carries its send time (`a`, steady-clock ns) and its index (`b`); the
/// handler stores "now - a" at index `b` of a preallocated vector.
struct recorder {
    std::vector<std::int64_t> latency;
    explicit recorder(std::size_t n) : latency(n, 0) {}
    void operator()(const ev16& e) { latency[e.b] = now_ns() - static_cast<std::int64_t>(e.a); }
};

/// Sends `count` events `period` apart, busy-waiting on steady_clock for each slot. In
/// long gaps (the idle regime) the sender sleeps until shortly before the slot, so it
/// does not hold a core the consumer might need.
template <class Send>
void paced(std::chrono::nanoseconds period, std::size_t count, Send&& send) {
    using std::chrono::steady_clock;
    constexpr auto spin_window = std::chrono::microseconds(200);
    auto next = steady_clock::now();
    for (std::size_t i = 0; i < count; ++i) {
        next += period;
        for (auto left = next - steady_clock::now(); left > left.zero(); left = next - steady_clock::now()) {
            if (left > 2 * spin_window) {
                std::this_thread::sleep_for(left - spin_window);
            } else {
                herald_bench::cpu_relax();
            }
        }
        send(ev16{static_cast<std::uint64_t>(now_ns()), i});
    }
}

void report(benchmark::State& state, std::vector<std::int64_t> samples) {
    state.counters["p50_ns"] = herald_bench::percentile(samples, 0.50);
    state.counters["p90_ns"] = herald_bench::percentile(samples, 0.90);
    state.counters["p99_ns"] = herald_bench::percentile(samples, 0.99);
}

/// The pool of `herald_low_latency`: one worker that polls for 100 µs after each task
/// (ten times the busy regime's pacing) before it sleeps.
std::shared_ptr<herald::executor> low_latency_pool() {
    return std::make_shared<herald::thread_pool>(
        herald::thread_pool_options{.threads = 1, .name = "low-latency", .spin = std::chrono::microseconds(100)});
}

void herald_latency(benchmark::State& state, pacing p, bool low_latency) {
    herald::bus bus{low_latency ? herald::bus_options{.default_executor = low_latency_pool()}
                                : herald::bus_options{.workers = 1}};
    recorder rec(std::max(p.events, p.warmup));
    auto sub = bus.subscribe<latency_topic>([&rec](const ev16& e) { rec(e); });
    auto send = [&bus](const ev16& e) { bus.publish<latency_topic>(e); };
    paced(p.period, p.warmup, send);
    bus.drain();
    for (auto _ : state) {
        paced(p.period, p.events, send);
        bus.drain();
    }
    report(state, {rec.latency.begin(), rec.latency.begin() + static_cast<std::ptrdiff_t>(p.events)});
}

template <template <class, class> class Queue>
void queue_latency(benchmark::State& state, pacing p) {
    recorder rec(std::max(p.events, p.warmup));
    std::atomic<std::uint64_t> handled{0};
    auto on_item = [&rec, &handled](const ev16& e) {
        rec(e);
        herald_bench::bump(handled);
    };
    Queue<ev16, decltype(on_item)> queue(on_item);
    auto token = queue.make_token();
    auto send = [&queue, &token](const ev16& e) { queue.push(token, e); };
    std::uint64_t target = p.warmup;
    paced(p.period, p.warmup, send);
    herald_bench::wait_until(handled, target);
    for (auto _ : state) {
        paced(p.period, p.events, send);
        target += p.events;
        herald_bench::wait_until(handled, target);
    }
    report(state, {rec.latency.begin(), rec.latency.begin() + static_cast<std::ptrdiff_t>(p.events)});
}

void register_all() {
    struct regime {
        const char* name;
        pacing (*make)();
    };
    for (const regime r : {regime{"latency_10us", &busy}, regime{"latency_idle", &idle}}) {
        const std::string prefix = r.name;
        const pacing p = r.make();
        benchmark::RegisterBenchmark((prefix + "/herald").c_str(), herald_latency, p, false)
            ->Iterations(1)
            ->UseRealTime();
        benchmark::RegisterBenchmark((prefix + "/herald_low_latency").c_str(), herald_latency, p, true)
            ->Iterations(1)
            ->UseRealTime();
        benchmark::RegisterBenchmark((prefix + "/moodycamel_spin").c_str(), queue_latency<herald_bench::spin_queue>, p)
            ->Iterations(1)
            ->UseRealTime();
        benchmark::RegisterBenchmark((prefix + "/moodycamel_blocking").c_str(),
                                     queue_latency<herald_bench::blocking_queue>, p)
            ->Iterations(1)
            ->UseRealTime();
        benchmark::RegisterBenchmark((prefix + "/mutex_condvar").c_str(), queue_latency<herald_bench::mutex_queue>, p)
            ->Iterations(1)
            ->UseRealTime();
    }
}

} // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
        return 1;
    }
    register_all(); // after Initialize, so quick mode and sizes are read at run time
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
