// Delivery policies: async 1->1 throughput of at-least-once (no failures, 10% failing) and
// priority, against fire-and-forget in the same binary.
#include "support/bench_support.hpp"

#include <herald/herald.hpp>

#include <benchmark/benchmark.h>

#include <cstdint>
#include <stdexcept>

namespace {

using herald::delay;
using herald_bench::ev16;

struct plain : herald::topic<ev16> {};
// No waiting between attempts: the benchmark measures the retry machinery, not a sleep.
struct retried
    : herald::topic<ev16, herald::at_least_once<herald::max_attempts<5>, herald::fixed_backoff<delay::ms(0)>>> {};
struct ranked : herald::topic<ev16, herald::priority<3>> {};

std::uint64_t events() { return herald_bench::scaled<std::uint64_t>(1'000'000, 100'000); }

/// Whether event `a` fails on `attempt` when `percent` of first attempts fail (a hash, so
/// the same events fail in every run); retries always succeed.
bool fails(std::uint64_t a, std::uint32_t attempt, std::uint64_t percent) {
    if (attempt > 1 || percent == 0) {
        return false;
    }
    std::uint64_t x = a * 0x9e3779b97f4a7c15ULL;
    x ^= x >> 29U;
    return x % 100 < percent;
}

/// Publishes N on one worker and drains (until every event is handled, retries included).
template <class Topic, class Handler>
void run(benchmark::State& state, Handler handler, std::uint8_t levels = 1) {
    const std::uint64_t n = events();
    herald::bus bus{{.workers = 1, .on_error = [](const herald::delivery_error&) {}}};
    auto sub = bus.subscribe<Topic>(handler);
    auto publish_all = [&](std::uint64_t count) {
        for (std::uint64_t i = 0; i < count; ++i) {
            if constexpr (herald::prioritising_policy<typename Topic::policy_type>) {
                bus.publish<Topic>(ev16{i, i}, {.priority = static_cast<std::uint8_t>(i % levels)});
            } else {
                bus.publish<Topic>(ev16{i, i});
            }
        }
        bus.drain();
    };
    publish_all(n / 8); // grow the queues first
    for (auto _ : state) {
        publish_all(n);
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
}

std::uint64_t sink = 0; // one serial subscriber writes it at a time

// Every handler takes the envelope, as a retrying handler usually does (to read
// attempt()), so the rows differ only by the policy.
void fire_and_forget_1to1(benchmark::State& state) {
    run<plain>(state, [](const herald::envelope<ev16>& e) { sink += e.event().a; });
}

void at_least_once_1to1(benchmark::State& state) {
    const auto percent = static_cast<std::uint64_t>(state.range(0));
    run<retried>(state, [percent](const herald::envelope<ev16>& e) {
        if (fails(e.event().a, e.attempt(), percent)) {
            throw std::runtime_error("injected");
        }
        sink += e.event().a;
    });
}

void priority_1to1(benchmark::State& state) {
    run<ranked>(
        state, [](const ev16& e) { sink += e.a; }, 3);
}

} // namespace

BENCHMARK(fire_and_forget_1to1)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
BENCHMARK(at_least_once_1to1)->Arg(0)->Arg(10)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
BENCHMARK(priority_1to1)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
