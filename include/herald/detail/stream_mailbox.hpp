// The mailbox of a serial subscriber: one single-producer queue per publishing thread,
// read in place by the subscriber's strand.
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
    /// Bytes per slot: the queue time if `timed`, then the envelope (or a pointer to it).
    std::size_t slot_size = 0;
    /// Where the envelope (or the pointer) starts in the slot.
    std::size_t offset = 0;
    /// The envelope lives in the slot (otherwise the slot holds a pointer to a heap copy).
    bool in_place = true;
    /// Nothing to destroy when the slot is released.
    bool trivial = false;
    /// Each slot starts with the time the event was queued (priority aging and expiry).
    bool timed = false;
};

/// Envelopes up to this size wait in place in a stream mailbox (larger or over-aligned
/// ones behind a pointer). Larger than moodycamel's `max_in_place`: a stream never moves
/// an envelope once it is queued, so big slots cost nothing but their size.
inline constexpr std::size_t max_in_stream = 4096;

/// Envelopes wait in place unless they are larger than `max_in_stream` or over-aligned;
/// they are never moved once queued (so an event whose move may throw waits in place
/// too). `timed` slots keep their queue time in front of the envelope.
template <class Event>
constexpr stream_layout stream_layout_of(bool timed) noexcept {
    using env = envelope<Event>;
    constexpr bool fits = sizeof(env) <= max_in_stream && alignof(env) <= alignof(std::max_align_t);
    constexpr std::size_t align = fits ? alignof(env) : alignof(envelope_base*);
    constexpr std::size_t size = fits ? sizeof(env) : sizeof(envelope_base*);
    // The time stamp takes 8 bytes, rounded up to the envelope's alignment.
    const std::size_t offset = timed ? (sizeof(clock_source::time_point) + align - 1) / align * align : 0;
    return {offset + size, offset, fits, fits && std::is_trivially_copyable_v<env>, timed};
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
        for (queue* q = queues_.load(std::memory_order_acquire); q != nullptr;) {
            queue* next = q->next_queue;
            q->destroy_all(*this);
            delete q;
            q = next;
        }
        delete[] more_.load(std::memory_order_acquire);
    }

    /// Any thread: queues a copy (or a move) of `env` in the calling thread's queue.
    /// Throws (and queues nothing) when the copy throws or memory runs out; a thread's
    /// first put into this mailbox allocates its queue.
    void put(envelope_base& env, bool move, std::size_t /*level*/, clock_source::time_point now) override {
        put_here(env, move, now);
    }

    /// `put`, inlined into the publish path (which knows the mailbox is a stream).
    [[gnu::always_inline]] void put_here(envelope_base& env, bool move, clock_source::time_point now) {
        const thread_slot& me = this_thread_slot();
        if (std::atomic<queue*>* entry = entry_for(me.index)) [[likely]] {
            queue* q = entry->load(std::memory_order_acquire);
            put_into(q != nullptr ? *q : add_queue(*entry), env, move, now);
        } else {
            const std::lock_guard lock(overflow_mutex_);
            queue* q = overflow_.load(std::memory_order_relaxed);
            put_into(q != nullptr ? *q : add_queue(overflow_), env, move, now);
        }
    }

    std::size_t take_chunk(std::size_t want, clock_source::time_point /*now*/) noexcept override {
        queue* const first = queues_.load(std::memory_order_acquire);
        if (first == nullptr) {
            return 0;
        }
        queue* q = cursor_ != nullptr ? cursor_ : first;
        const queue* const start = q;
        do {
            const std::uint64_t waiting = q->published.load(std::memory_order_acquire) - q->taken;
            if (waiting != 0) {
                if (q->head_pos == q->head->capacity) {
                    q->next_block();
                }
                const std::size_t run =
                    std::min<std::size_t>({want, static_cast<std::size_t>(waiting), q->head->capacity - q->head_pos});
                chunk_queue_ = q;
                chunk_ = q->head->slot(q->head_pos, layout_.slot_size);
                // Next time, the next queue first (round robin between publishers).
                cursor_ = q->next_queue;
                return run;
            }
            q = q->next_queue != nullptr ? q->next_queue : first;
        } while (q != start);
        return 0;
    }

    envelope_base& at(std::size_t i) noexcept override { return envelope_in(chunk_ + i * layout_.slot_size); }

    [[nodiscard]] clock_source::time_point enqueued(std::size_t i) const noexcept override {
        clock_source::time_point when{};
        if (layout_.timed) {
            std::memcpy(&when, chunk_ + i * layout_.slot_size, sizeof when);
        }
        return when;
    }

    void release_chunk(std::size_t count) noexcept override {
        if (count == 0) {
            return;
        }
        if (!layout_.trivial) {
            for (std::size_t i = 0; i < count; ++i) {
                destroy(chunk_ + i * layout_.slot_size);
            }
        }
        queue& q = *chunk_queue_;
        q.head_pos += static_cast<std::uint32_t>(count);
        q.taken += count;
        q.consumed.store(q.taken, std::memory_order_release);
    }

    bool take_shared(taken_item& /*out*/) noexcept override { return false; }

    [[nodiscard]] bool has_puts() const noexcept override {
        for (const queue* q = queues_.load(std::memory_order_acquire); q != nullptr; q = q->next_queue) {
            if (q->published.load(std::memory_order_acquire) != q->consumed.load(std::memory_order_relaxed)) {
                return true;
            }
        }
        return false;
    }

    [[nodiscard]] std::size_t size_approx() const noexcept override {
        std::uint64_t total = 0;
        for (const queue* q = queues_.load(std::memory_order_acquire); q != nullptr; q = q->next_queue) {
            // Read `consumed` first: a later `published` is never behind it.
            const std::uint64_t consumed = q->consumed.load(std::memory_order_acquire);
            total += q->published.load(std::memory_order_acquire) - consumed;
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
            void* memory = ::operator new (header + slots * size, std::align_val_t{64});
            auto* b = ::new (memory) block;
            b->capacity = slots;
            return b;
        }

        static void free(block* b) noexcept {
            b->~block();
            ::operator delete (static_cast<void*>(b), std::align_val_t{64});
        }
    };
    static_assert(sizeof(block) <= block::header);

    /// One publisher's queue. The publisher's half and the strand's half sit on
    /// separate cache lines.
    struct queue {
        explicit queue(block* start) noexcept : tail(start), head(start) { start->next.store(start); }

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
        queue* next_queue = nullptr;

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

    /// Puts into `q`, whose publisher side the caller owns.
    [[gnu::always_inline]] void put_into(queue& q, envelope_base& env, bool move, clock_source::time_point now) {
        if (q.tail_pos == q.tail->capacity) {
            advance(q);
        }
        unsigned char* const slot = q.tail->slot(q.tail_pos, layout_.slot_size);
        unsigned char* const at = slot + layout_.offset;
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
        if (layout_.timed) {
            std::memcpy(slot, &now, sizeof now);
        }
        ++q.tail_pos;
        q.published.store(q.published.load(std::memory_order_relaxed) + 1, std::memory_order_release);
    }

    /// The publisher's tail block is full: moves on to the next block of the circle if
    /// the strand has finished it, or inserts a new one. Throws std::bad_alloc (and
    /// changes nothing).
    void advance(queue& q) {
        block* next = q.tail->next.load(std::memory_order_relaxed);
        if (next != q.tail && next->done.load(std::memory_order_acquire)) {
            next->done.store(false, std::memory_order_relaxed);
            q.tail = next;
            q.tail_pos = 0;
            return;
        }
        const std::size_t most = std::max<std::size_t>(first_block, max_block_bytes / layout_.slot_size);
        block* fresh = block::make(q.grow_to, layout_.slot_size);
        q.grow_to = static_cast<std::uint32_t>(std::min<std::size_t>(most, std::size_t{q.grow_to} * 2));
        fresh->next.store(next, std::memory_order_relaxed);
        // Release: a strand that follows the link sees the new block's header.
        q.tail->next.store(fresh, std::memory_order_release);
        q.tail = fresh;
        q.tail_pos = 0;
    }

    /// The entry of the thread whose slot index is `index`, or null past the table
    /// (such threads share `overflow_`). May allocate the indirect table (and throw).
    std::atomic<queue*>* entry_for(std::uint32_t index) {
        if (index < direct) {
            return &first_[index];
        }
        if (index - direct >= indirect) {
            return nullptr;
        }
        std::atomic<queue*>* table = more_.load(std::memory_order_acquire);
        if (table == nullptr) {
            auto* made = new std::atomic<queue*>[indirect]();
            if (more_.compare_exchange_strong(table, made, std::memory_order_acq_rel)) {
                table = made;
            } else {
                delete[] made;
            }
        }
        return &table[index - direct];
    }

    /// Makes the calling thread's queue, stores it in `entry` and lists it for the strand.
    [[gnu::noinline]] queue& add_queue(std::atomic<queue*>& entry) {
        block* start = block::make(first_block, layout_.slot_size);
        queue* q = nullptr;
        try {
            q = new queue(start);
        } catch (...) {
            block::free(start);
            throw;
        }
        entry.store(q, std::memory_order_release);
        q->next_queue = queues_.load(std::memory_order_relaxed);
        while (!queues_.compare_exchange_weak(q->next_queue, q, std::memory_order_release, std::memory_order_relaxed)) {
        }
        return *q;
    }

    envelope_base& envelope_in(unsigned char* slot) const noexcept {
        unsigned char* const at = slot + layout_.offset;
        if (layout_.in_place) {
            return *ops_.at(at);
        }
        envelope_base* boxed = nullptr;
        std::memcpy(&boxed, at, sizeof boxed);
        return *boxed;
    }

    void destroy(unsigned char* slot) const noexcept {
        unsigned char* const at = slot + layout_.offset;
        if (layout_.in_place) {
            ops_.destroy(at);
        } else {
            envelope_base* boxed = nullptr;
            std::memcpy(&boxed, at, sizeof boxed);
            ops_.free(boxed);
        }
    }

    const envelope_ops& ops_;
    const stream_layout layout_;
    /// Every queue, newest first (the strand walks it).
    std::atomic<queue*> queues_{nullptr};
    std::atomic<queue*> first_[direct]{};
    std::atomic<std::atomic<queue*>*> more_{nullptr};
    std::atomic<queue*> overflow_{nullptr};
    std::mutex overflow_mutex_;
    // Strand only.
    queue* cursor_ = nullptr;
    queue* chunk_queue_ = nullptr;
    unsigned char* chunk_ = nullptr;
};

} // namespace herald::detail
