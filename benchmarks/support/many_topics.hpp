// The many-topics benchmark's generated topic types, and the registry of the translation units that register them.
#pragma once

#include "bench_support.hpp"

#include <herald/herald.hpp>

#include <algorithm>
#include <cstddef>
#include <utility>
#include <vector>

namespace herald_bench {

/// Topic number N: distinct types sharing one event type. Topic 0 is the measured one.
template <std::size_t N>
struct many_topic : herald::topic<ev16> {};

/// Topics registered by one chunk translation unit (topics/register_chunk.cpp, compiled
/// once per chunk). Every topic type costs g++ about half a second and 10 MB at -O2
/// (herald instantiates its per-topic state for each), so chunks stay small enough to
/// compile in well under a minute, in parallel.
inline constexpr std::size_t topics_per_chunk = 50;

/// Registers the first `count` topics of one chunk on `bus`.
using chunk_fn = void (*)(herald::bus& bus, std::size_t count);

struct chunk_entry {
    std::size_t index;
    chunk_fn fn;
};

/// Chunks add themselves here during static initialisation.
inline std::vector<chunk_entry>& chunk_registry() {
    static std::vector<chunk_entry> chunks;
    return chunks;
}

inline bool add_chunk(std::size_t index, chunk_fn fn) {
    chunk_registry().push_back({index, fn});
    return true;
}

/// The largest topic count a benchmark can ask for: topic 0 plus what the linked chunks
/// register, rounded down to a multiple of the chunk size.
inline std::size_t max_topics() { return chunk_registry().size() * topics_per_chunk; }

/// Registers topics 1 .. count-1 on `bus` (topic 0 is the caller's), chunk by chunk.
inline void register_topics(herald::bus& bus, std::size_t count) {
    auto chunks = chunk_registry();
    std::sort(chunks.begin(), chunks.end(),
              [](const chunk_entry& x, const chunk_entry& y) { return x.index < y.index; });
    std::size_t left = count > 0 ? count - 1 : 0;
    for (const auto& chunk : chunks) {
        const std::size_t here = std::min(left, topics_per_chunk);
        chunk.fn(bus, here);
        left -= here;
    }
}

} // namespace herald_bench
