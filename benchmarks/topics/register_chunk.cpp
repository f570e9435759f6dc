// One chunk of bench_many_topics: registers 50 topic types on a bus (chunk number: HERALD_BENCH_CHUNK).
#include "../support/many_topics.hpp"

#include <herald/herald.hpp>

#include <cstddef>
#include <utility>

#ifndef HERALD_BENCH_CHUNK
#error "compile with -DHERALD_BENCH_CHUNK=<chunk index>"
#endif

namespace {

constexpr std::size_t first_topic = 1 + std::size_t{HERALD_BENCH_CHUNK} * herald_bench::topics_per_chunk;

// The cheapest use that makes the bus register a topic: publish with no subscriber.
template <std::size_t... I>
void touch(herald::bus& bus, std::size_t count, std::index_sequence<I...> /*unused*/) {
    ((I < count ? (void)bus.publish<herald_bench::many_topic<first_topic + I>>(herald_bench::ev16{}) : void()), ...);
}

void register_chunk(herald::bus& bus, std::size_t count) {
    touch(bus, count, std::make_index_sequence<herald_bench::topics_per_chunk>{});
}

[[maybe_unused]] const bool registered = herald_bench::add_chunk(HERALD_BENCH_CHUNK, &register_chunk);

} // namespace
