// How many deliveries of a topic are still in flight, per drain epoch, counted without a
// locked instruction on the publish path.
#pragma once

#include <herald/detail/thread_slots.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace herald::detail {

/// Deliveries begun and ended, per drain epoch slot (0 or 1). Counts only grow: a slot is
/// quiet when as many deliveries ended as began. A thread whose slot index is below
/// `shards` counts in a shard only it writes (a load and a store, no locked instruction,
/// and no cache line shared with other publishers); other threads use one shared shard
/// with atomic additions.
///
/// Ordering. A delivery's begin happens before its end (the begin precedes the put that
/// the ender took, or the ender is the beginner), so `is_quiet` reads every `ended` count
/// before any `begun` count: each end it sees has its begin visible too, and equal sums
/// mean nothing counted so far is outstanding. The publisher's "begin, then look at the
/// epoch" and drain's "move the epoch, then read the counts" pair up through
/// `fences::light` and `fences::heavy` (see `begin`).
class flight_counts {
public:
    /// Shards for threads with a small slot index; the rest share one.
    static constexpr std::size_t shards = 8;

    /// Counts `count` deliveries begun in `slot` by the thread whose slot is `me` (null:
    /// a thread without one).
    void begin(std::uint8_t slot, std::int64_t count, const thread_slot* me) noexcept {
        if (shard* own = own_shard(me)) {
            add(own->begun[slot], count);
        } else {
            shared_.begun[slot].fetch_add(static_cast<std::uint64_t>(count), std::memory_order_relaxed);
        }
    }

    /// Counts `count` deliveries of `slot` ended by the thread whose slot is `me`. Release:
    /// whoever reads this end also sees what the delivery did.
    void end(std::uint8_t slot, std::int64_t count, const thread_slot* me) noexcept {
        if (shard* own = own_shard(me)) {
            add(own->ended[slot], count);
        } else {
            shared_.ended[slot].fetch_add(static_cast<std::uint64_t>(count), std::memory_order_release);
        }
    }

    /// True when every delivery of `slot` counted so far has ended. Callers that need
    /// begins made on other threads just before to be seen run `fences::heavy()` first.
    [[nodiscard]] bool is_quiet(std::uint8_t slot) const noexcept {
        std::uint64_t ended = shared_.ended[slot].load(std::memory_order_acquire);
        for (const shard& s : shards_) {
            ended += s.ended[slot].load(std::memory_order_acquire);
        }
        std::uint64_t begun = shared_.begun[slot].load(std::memory_order_acquire);
        for (const shard& s : shards_) {
            begun += s.begun[slot].load(std::memory_order_acquire);
        }
        return begun == ended;
    }

private:
    struct alignas(64) shard {
        std::atomic<std::uint64_t> begun[2]{};
        std::atomic<std::uint64_t> ended[2]{};
    };

    shard* own_shard(const thread_slot* me) noexcept {
        return me != nullptr && me->index < shards ? &shards_[me->index] : nullptr;
    }

    /// One writer per shard: a plain load and a release store.
    static void add(std::atomic<std::uint64_t>& cell, std::int64_t count) noexcept {
        cell.store(cell.load(std::memory_order_relaxed) + static_cast<std::uint64_t>(count), std::memory_order_release);
    }

    shard shards_[shards];
    shard shared_;
};

} // namespace herald::detail
