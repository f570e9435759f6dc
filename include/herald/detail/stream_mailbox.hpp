// The mailbox of a serial FIFO subscriber: one single-producer queue per publishing
// thread, read by the subscriber's strand.
#pragma once

#include <herald/clock.hpp>
#include <herald/detail/erased.hpp>
#include <herald/detail/thread_slots.hpp>
#include <herald/envelope.hpp>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <type_traits>

namespace herald::detail {

/// Where the envelopes of one event type wait in a stream mailbox.
struct stream_layout {
    /// Bytes per slot (the envelope, or a pointer to it).
    std::size_t slot_size = 0;
    /// The envelope lives in the slot (otherwise the slot holds a pointer to a heap copy).
    bool in_place = true;
    /// Nothing to destroy when the slot is released.
    bool trivial = false;
};

/// Envelopes wait in place unless they are larger than `max_in_place` or over-aligned;
/// they are never moved once queued (so an event whose move may throw waits in place
/// too).
template <class Event>
constexpr stream_layout stream_layout_of() noexcept {
    using env = envelope<Event>;
    constexpr bool fits = sizeof(env) <= max_in_place && alignof(env) <= alignof(std::max_align_t);
    return {fits ? sizeof(env) : sizeof(envelope_base*), fits, fits && std::is_trivially_copyable_v<env>};
}

/// A FIFO mailbox for one strand: every publishing thread puts into a queue of its own
/// (found by its thread slot's index), so a put is a copy into memory only that thread
/// writes plus one release store, with no locked instruction and no cache line that
/// other publishers write. The strand takes runs of one queue at a time, round robin
/// over the queues, and handles them in place. Each publisher's events come out in the
/// order it put them; events of different publishers interleave.
///
/// A queue is a circle of blocks: the publisher writes into the next free slot, moves to
/// the next block of the circle once the strand has finished it, and inserts a new block
/// (twice as large, up to `max_block_bytes`) when the strand is still reading it. Once
/// the blocks hold a burst, steady state allocates nothing. Blocks are freed with the
/// mailbox (the strand replaces a mailbox that held a large burst, see `maybe_shrink`).
class stream_mailbox final : public mailbox_base {
public:
    stream_mailbox(const envelope_ops& ops, const stream_layout& layout)
        : mailbox_base(kind::stream), ops_(ops), layout_(layout) {}

    ~stream_mailbox() override {
        for (lane* l = lanes_.load(std::memory_order_acquire); l != nullptr;) {
            lane* next = l->next_lane;
            l->destroy_all(*this);
            delete l;
            l = next;
        }
        delete[] more_.load(std::memory_order_acquire);
    }

    /// Any thread: queues a copy (or a move) of `env` in the calling thread's queue.
    /// Throws (and queues nothing) when the copy throws or memory runs out; a thread's
    /// first put into this mailbox allocates its queue.
    void put(envelope_base& env, bool move, std::size_t /*level*/, clock_source::time_point /*now*/) override {
        put_here(env, move);
    }

    /// `put`, inlined into the publish path (which knows the mailbox is a stream).
    [[gnu::always_inline]] void put_here(envelope_base& env, bool move) {
        const thread_slot& me = this_thread_slot();
        if (std::atomic<lane*>* entry = entry_for(me.index)) [[likely]] {
            lane* l = entry->load(std::memory_order_acquire);
            put_into(l != nullptr ? *l : add_lane(*entry), env, move);
        } else {
            const std::lock_guard lock(overflow_mutex_);
            put_into(overflow_.load(std::memory_order_relaxed) != nullptr ? *overflow_.load(std::memory_order_relaxed)
                                                                           : add_lane(overflow_),
                     env, move);
        }
    }

    std::size_t take_chunk(std::size_t want, clock_source::time_point /*now*/) noexcept override {
        lane* const first = lanes_.load(std::memory_order_acquire);
        if (first == nullptr) {
            return 0;
        }
        lane* l = cursor_ != nullptr ? cursor_ : first;
        const lane* const start = l;
        do {
            const std::uint64_t waiting = l->published.load(std::memory_order_acquire) - l->taken;
            if (waiting != 0) {
                if (l->head_pos == l->head->capacity) {
                    l->next_block();
                }
                const std::size_t run = std::min<std::size_t>(
                    {want, static_cast<std::size_t>(waiting), l->head->capacity - l->head_pos});
                chunk_lane_ = l;
                chunk_ = l->head->slot(l->head_pos, layout_.slot_size);
                // Next time, the next queue first (round robin between publishers).
                cursor_ = l->next_lane;
                return run;
            }
            l = l->next_lane != nullptr ? l->next_lane : first;
        } while (l != start);
        return 0;
    }

    envelope_base& at(std::size_t i) noexcept override { return envelope_in(chunk_ + i * layout_.slot_size); }

    void release_chunk(std::size_t count) noexcept override {
        if (count == 0) {
            return;
        }
        if (!layout_.trivial) {
            for (std::size_t i = 0; i < count; ++i) {
                destroy(chunk_ + i * layout_.slot_size);
            }
        }
        lane& l = *chunk_lane_;
        l.head_pos += static_cast<std::uint32_t>(count);
        l.taken += count;
        l.consumed.store(l.taken, std::memory_order_release);
    }

    bool take_shared(taken_item& /*out*/) noexcept override { return false; }

    [[nodiscard]] bool looks_empty() const noexcept override { return size_approx() == 0; }

    [[nodiscard]] bool has_puts() const noexcept override { return has_more(); }

    [[nodiscard]] bool has_more() const noexcept override {
        for (const lane* l = lanes_.load(std::memory_order_acquire); l != nullptr; l = l->next_lane) {
            if (l->published.load(std::memory_order_acquire) != l->consumed.load(std::memory_order_relaxed)) {
                return true;
            }
        }
        return false;
    }

    [[nodiscard]] std::size_t size_approx() const noexcept override {
        std::uint64_t total = 0;
        for (const lane* l = lanes_.load(std::memory_order_acquire); l != nullptr; l = l->next_lane) {
            // Read `consumed` first: a later `published` is never behind it.
            const std::uint64_t consumed = l->consumed.load(std::memory_order_acquire);
            total += l->published.load(std::memory_order_acquire) - consumed;
        }
        return static_cast<std::size_t>(total);
    }

    [[nodiscard]] std::unique_ptr<mailbox_base> fresh() const override {
        return std::make_unique<stream_mailbox>(ops_, layout_);
    }

private:
    /// The first block of a queue holds `first_block` slots; each new one twice as many
    /// as the last, up to `max_block_bytes` (at least `first_block` slots).
    static constexpr std::uint32_t first_block = 8;
    static constexpr std::size_t max_block_bytes = 64 * 1024;
    /// Thread slot indexes below `direct` find their queue in the mailbox itself; others
    /// in an array allocated on first need, up to `direct + indirect`; threads beyond that
    /// (more than a thousand publishing at once) share one queue under a mutex.
    static constexpr std::size_t direct = 8;
    static constexpr std::size_t indirect = 1024;

public:
    /// Publishing threads (alive at once) that get a queue of their own.
    static constexpr std::size_t own_queues = direct + indirect;

private:

    struct block {
        std::atomic<block*> next{nullptr};
        /// Set by the strand once it has left the block: the publisher may refill it.
        std::atomic<bool> done{false};
        std::uint32_t capacity = 0;

        static constexpr std::size_t header = 64;

        unsigned char* slot(std::size_t i, std::size_t size) noexcept {
            return reinterpret_cast<unsigned char*>(this) + header + i * size;
        }

        static block* make(std::uint32_t slots, std::size_t size) {
            void* memory = ::operator new(header + slots * size, std::align_val_t{64});
            auto* b = ::new (memory) block;
            b->capacity = slots;
            return b;
        }

        static void free(block* b) noexcept {
            b->~block();
            ::operator delete(static_cast<void*>(b), std::align_val_t{64});
        }
    };
    static_assert(sizeof(block) <= block::header);

    /// One publisher's queue. The publisher's half and the strand's half sit on
    /// separate cache lines.
    struct lane {
        explicit lane(block* start) noexcept : tail(start), head(start) { start->next.store(start); }

        // Publisher side.
        alignas(64) block* tail;
        std::uint32_t tail_pos = 0;
        std::uint32_t grow_to = first_block;
        /// Items ever put (release: the slots are written before).
        std::atomic<std::uint64_t> published{0};

        // Strand side.
        alignas(64) block* head;
        std::uint32_t head_pos = 0;
        std::uint64_t taken = 0;
        /// `taken`, for readers on other threads.
        std::atomic<std::uint64_t> consumed{0};
        /// The next queue of the mailbox's list; fixed once the queue is listed.
        lane* next_lane = nullptr;

        /// The strand moves to the next block (it holds the next item) and hands the
        /// finished one back to the publisher.
        void next_block() noexcept {
            block* finished = head;
            head = finished->next.load(std::memory_order_acquire);
            head_pos = 0;
            finished->done.store(true, std::memory_order_release);
        }

        /// Destroys what still waits and frees the blocks (the mailbox is going away).
        void destroy_all(stream_mailbox& box) noexcept {
            const std::uint64_t waiting = published.load(std::memory_order_acquire) - taken;
            for (std::uint64_t i = 0; i < waiting; ++i) {
                if (head_pos == head->capacity) {
                    next_block();
                }
                box.destroy(head->slot(head_pos++, box.layout_.slot_size));
            }
            block* b = head;
            do {
                block* next = b->next.load(std::memory_order_relaxed);
                block::free(b);
                b = next;
            } while (b != head);
        }
    };

    /// Puts into `l`, whose publisher side the caller owns.
    [[gnu::always_inline]] void put_into(lane& l, envelope_base& env, bool move) {
        if (l.tail_pos == l.tail->capacity) {
            advance(l);
        }
        unsigned char* at = l.tail->slot(l.tail_pos, layout_.slot_size);
        if (layout_.in_place) {
            if (move) {
                ops_.move_to(at, env);
            } else {
                ops_.copy_to(at, env);
            }
        } else {
            envelope_base* copy = move ? ops_.move_new(env) : ops_.clone(env);
            std::memcpy(at, &copy, sizeof copy);
        }
        ++l.tail_pos;
        l.published.store(l.published.load(std::memory_order_relaxed) + 1, std::memory_order_release);
    }

    /// The publisher's tail block is full: moves on to the next block of the circle if
    /// the strand has finished it, or inserts a new one. Throws std::bad_alloc (and
    /// changes nothing).
    void advance(lane& l) {
        block* next = l.tail->next.load(std::memory_order_relaxed);
        if (next != l.tail && next->done.load(std::memory_order_acquire)) {
            next->done.store(false, std::memory_order_relaxed);
            l.tail = next;
            l.tail_pos = 0;
            return;
        }
        const std::size_t most = std::max<std::size_t>(first_block, max_block_bytes / layout_.slot_size);
        block* fresh = block::make(l.grow_to, layout_.slot_size);
        l.grow_to = static_cast<std::uint32_t>(std::min<std::size_t>(most, std::size_t{l.grow_to} * 2));
        fresh->next.store(next, std::memory_order_relaxed);
        // Release: a strand that follows the link sees the new block's header.
        l.tail->next.store(fresh, std::memory_order_release);
        l.tail = fresh;
        l.tail_pos = 0;
    }

    /// The entry of the thread whose slot index is `index`, or null past the table
    /// (such threads share `overflow_`). May allocate the indirect table (and throw).
    std::atomic<lane*>* entry_for(std::uint32_t index) {
        if (index < direct) {
            return &first_[index];
        }
        if (index - direct >= indirect) {
            return nullptr;
        }
        std::atomic<lane*>* table = more_.load(std::memory_order_acquire);
        if (table == nullptr) {
            auto* made = new std::atomic<lane*>[indirect]();
            if (more_.compare_exchange_strong(table, made, std::memory_order_acq_rel)) {
                table = made;
            } else {
                delete[] made;
            }
        }
        return &table[index - direct];
    }

    [[gnu::noinline]] lane& add_lane(std::atomic<lane*>& entry) {
        block* start = block::make(first_block, layout_.slot_size);
        lane* l = nullptr;
        try {
            l = new lane(start);
        } catch (...) {
            block::free(start);
            throw;
        }
        entry.store(l, std::memory_order_release);
        l->next_lane = lanes_.load(std::memory_order_relaxed);
        while (!lanes_.compare_exchange_weak(l->next_lane, l, std::memory_order_release, std::memory_order_relaxed)) {
        }
        return *l;
    }

    envelope_base& envelope_in(unsigned char* slot) const noexcept {
        if (layout_.in_place) {
            return *ops_.at(slot);
        }
        envelope_base* boxed = nullptr;
        std::memcpy(&boxed, slot, sizeof boxed);
        return *boxed;
    }

    void destroy(unsigned char* slot) const noexcept {
        if (layout_.in_place) {
            ops_.destroy(slot);
        } else {
            envelope_base* boxed = nullptr;
            std::memcpy(&boxed, slot, sizeof boxed);
            ops_.free(boxed);
        }
    }

    const envelope_ops& ops_;
    const stream_layout layout_;
    /// Every queue, newest first (the strand walks it).
    std::atomic<lane*> lanes_{nullptr};
    std::atomic<lane*> first_[direct]{};
    std::atomic<std::atomic<lane*>*> more_{nullptr};
    std::atomic<lane*> overflow_{nullptr};
    std::mutex overflow_mutex_;
    // Strand only.
    lane* cursor_ = nullptr;
    lane* chunk_lane_ = nullptr;
    unsigned char* chunk_ = nullptr;
};

/// The mailbox for a subscriber of `Event`: a stream mailbox for a strand with one lane
/// (serial FIFO), moodycamel queues otherwise (concurrent subscribers, priority lanes;
/// `Timed` keeps each item's queue time for aging and expiry).
template <class Event, bool Timed>
std::unique_ptr<mailbox_base> make_mailbox(bool strand, const lane_rules& rules, std::size_t capacity) {
    if (strand && rules.levels == 1 && !Timed) {
        return std::make_unique<stream_mailbox>(ops_of<Event>(), stream_layout_of<Event>());
    }
    return std::make_unique<mailbox<typename slot_of<Event, Timed>::type>>(ops_of<Event>(), strand, rules, capacity);
}

} // namespace herald::detail
