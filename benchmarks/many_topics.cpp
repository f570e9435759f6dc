// Publish cost on one topic as the bus holds more topics (1, 10, 100 and the most the linked chunks register).
#include "support/many_topics.hpp"

#include <herald/herald.hpp>

#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <set>
#include <string>

namespace {

using herald_bench::ev16;
using measured_topic = herald_bench::many_topic<0>;

// One inline subscriber on topic 0; topics 1..N-1 exist (registered, no subscribers).
void herald_topics(benchmark::State& state) {
    const auto topics = static_cast<std::size_t>(state.range(0));
    herald::bus bus{{.workers = 1}};
    std::uint64_t sink = 0;
    auto sub =
        bus.subscribe<measured_topic>([&sink](const ev16& e) { sink += e.a; }, {.mode = herald::inline_delivery});
    herald_bench::register_topics(bus, topics);
    if (bus.stats().topics != topics) {
        state.SkipWithError(
            ("registered " + std::to_string(bus.stats().topics) + " topics, wanted " + std::to_string(topics)).c_str());
        return;
    }
    std::uint64_t i = 0;
    for (auto _ : state) {
        bus.publish<measured_topic>(ev16{i, i});
        ++i;
    }
    benchmark::DoNotOptimize(sink);
    state.counters["topics"] = static_cast<double>(topics);
}

} // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
        return 1;
    }
    // The chunks registered themselves during static initialisation; only now is the
    // largest topic count known.
    const std::size_t most = herald_bench::max_topics();
    std::set<std::size_t> counts{most};
    for (const std::size_t n : {1, 10, 100, 1000, 10000}) {
        if (n <= most) {
            counts.insert(n);
        }
    }
    auto* b = benchmark::RegisterBenchmark("topics/herald", herald_topics);
    for (const std::size_t n : counts) {
        b->Arg(static_cast<std::int64_t>(n));
    }
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
