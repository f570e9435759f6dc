// The mailbox for `overflow::drop_oldest` and `overflow::conflate`: a bounded FIFO under
// a short lock, so that a publisher can take the oldest event out, or replace the
// waiting event of its key.
#pragma once

#include <herald/clock.hpp>
#include <herald/detail/erased.hpp>
#include <herald/envelope.hpp>
#include <herald/flow_control.hpp>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <new>
#include <unordered_map>
#include <utility>

namespace herald::detail {

/// Envelopes up to this size whose move cannot throw wait in place in a ring mailbox;
/// others wait behind a pointer (one allocation per event). A put holds two such
/// envelopes on the publisher's stack (the new one, and the one it pushes out).
inline constexpr std::size_t max_in_ring = 2048;

/// Room for one envelope of a ring mailbox outside it: the publisher's copy on its way
/// in, or the event a put pushed out. Destroys what it holds.
class ring_item {
public:
    ring_item() noexcept = default;
    ring_item(const ring_item&) = delete;
    ring_item& operator=(const ring_item&) = delete;
    ~ring_item() { reset(); }

    [[nodiscard]] explicit operator bool() const noexcept { return ops_ != nullptr; }
    [[nodiscard]] envelope_base& envelope() const noexcept {
        return in_place_ ? *ops_->at(const_cast<unsigned char*>(storage_)) : *boxed_;
    }

    void reset() noexcept {
        if (ops_ != nullptr) {
            if (in_place_) {
                ops_->destroy(storage_);
            } else {
                ops_->free(boxed_);
            }
            ops_ = nullptr;
        }
    }

private:
    friend class ring_mailbox;
    const envelope_ops* ops_ = nullptr; // null: empty
    bool in_place_ = true;
    envelope_base* boxed_ = nullptr;
    alignas(std::max_align_t) unsigned char storage_[max_in_ring];
};

/// A bounded FIFO under a mutex, for the overflow rules that take events out from the
/// publisher's side. Events wait in place in blocks of slots (no allocation per event
/// once the blocks hold the backlog; at most `capacity` slots plus two partly used
/// blocks); the publisher copies its event before it takes the lock and relocates it in
/// under it, and whatever its put pushes out (the oldest event, or the waiting event of
/// its key when conflating) is relocated out and destroyed after the lock. The strand
/// relocates up to a chunk out under the lock and handles it without. No user code runs
/// under the lock except the key's `==` and hash, and the event's move constructor
/// (which cannot throw) when it is not trivially copyable.
class ring_mailbox final : public mailbox_base {
public:
    ring_mailbox(const envelope_ops& ops, std::size_t capacity, bool conflating)
        : mailbox_base(kind::ring),
          ops_(ops),
          capacity_(std::max<std::size_t>(1, capacity)),
          conflating_(conflating),
          in_place_(ops.nothrow_move && ops.size <= max_in_ring && ops.align <= alignof(std::max_align_t)),
          slot_size_(in_place_ ? (ops.size + ops.align - 1) / ops.align * ops.align : sizeof(envelope_base*)),
          block_slots_(std::clamp<std::size_t>(block_bytes / slot_size_, 1, capacity_)),
          chunk_room_(std::clamp<std::size_t>(block_bytes / slot_size_, 1, max_chunk)) {}

    ~ring_mailbox() override {
        release_chunk(chunk_count_ - chunk_first_);
        while (front_ != end_) {
            destroy(slot(front_));
            pop_front_slot();
        }
        for (unsigned char* b : blocks_) {
            free_block(b);
        }
        free_block(spare_);
        if (chunk_ != nullptr) {
            ::operator delete (chunk_, std::align_val_t{alignof(std::max_align_t)});
        }
    }

    /// What a put pushed out: the oldest event, or the one the new event replaced
    /// (`conflated`). The caller counts it and ends its drain count; it is destroyed
    /// with `displaced`.
    struct displaced {
        ring_item env;
        bool conflated = false;
    };

    /// `push` without a key or a displaced event (what the generic put path may call).
    void put(envelope_base& env, bool move, std::size_t /*level*/, clock_source::time_point /*now*/) override {
        displaced out;
        push(env, move, nullptr, out);
    }

    /// Queues a copy (or move) of `env`; `key` is its key when conflating. Throws,
    /// changing nothing, when the copy or memory fails.
    void push(envelope_base& env, bool move, std::unique_ptr<stored_key> key, displaced& out) {
        ring_item copy;
        hold_copy(copy, env, move); // user code: before the lock
        const std::lock_guard lock(mutex_);
        if (conflating_ && key) {
            if (const std::uint64_t* at = find(*key)) {
                // The new event takes the old one's place in the queue.
                unsigned char* s = slot(*at);
                move_out(s, out.env);
                move_in(copy, s);
                out.conflated = true;
                return;
            }
        }
        // Everything that may throw comes before the event moves in.
        if (end_ / block_slots_ - base_ == blocks_.size()) {
            add_block();
        }
        if (conflating_) {
            keys_.push_back(std::move(key));
            if (keys_.back()) {
                try {
                    index_.emplace(keys_.back()->hash(), end_);
                } catch (...) {
                    keys_.pop_back();
                    throw;
                }
            }
        }
        move_in(copy, slot(end_));
        ++end_;
        if (end_ - front_ > capacity_) {
            move_out(slot(front_), out.env);
            pop_front_slot();
        }
        count_.store(static_cast<std::size_t>(end_ - front_), std::memory_order_release);
    }

    std::size_t take_chunk(std::size_t want, clock_source::time_point /*now*/) noexcept override {
        release_chunk(chunk_count_ - chunk_first_);
        const std::lock_guard lock(mutex_);
        const std::size_t n = std::min({want, static_cast<std::size_t>(end_ - front_), chunk_room_});
        if (n != 0 && chunk_ == nullptr) {
            chunk_ = static_cast<unsigned char*>(
                ::operator new (chunk_room_* slot_size_, std::align_val_t{alignof(std::max_align_t)}, std::nothrow));
            if (chunk_ == nullptr) {
                return 0; // no memory for the chunk: the events keep waiting
            }
        }
        for (std::size_t i = 0; i < n; ++i) {
            relocate(chunk_ + i * slot_size_, slot(front_));
            pop_front_slot();
        }
        chunk_first_ = 0;
        chunk_count_ = n;
        count_.store(static_cast<std::size_t>(end_ - front_), std::memory_order_release);
        return n;
    }

    envelope_base& at(std::size_t i) noexcept override { return envelope_in(chunk_ + (chunk_first_ + i) * slot_size_); }

    void release_chunk(std::size_t count) noexcept override {
        count = std::min(count, chunk_count_ - chunk_first_);
        for (std::size_t i = 0; i < count; ++i) {
            destroy(chunk_ + (chunk_first_ + i) * slot_size_);
        }
        chunk_first_ += count;
    }

    bool take_shared(taken_item& /*out*/) noexcept override { return false; }

    [[nodiscard]] bool has_puts() const noexcept override { return count_.load(std::memory_order_acquire) != 0; }

    [[nodiscard]] std::size_t size_approx() const noexcept override { return count_.load(std::memory_order_acquire); }

    [[nodiscard]] std::unique_ptr<mailbox_base> fresh() const override {
        return std::make_unique<ring_mailbox>(ops_, capacity_, conflating_);
    }

    /// The most events that may wait.
    [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }

private:
    /// Bytes per block of slots (fewer slots when the capacity is smaller), and per chunk.
    static constexpr std::size_t block_bytes = 16 * 1024;
    static constexpr std::size_t max_chunk = 64;

    /// Copies (or moves) `env` into `item`: in place, or on the heap.
    void hold_copy(ring_item& item, envelope_base& env, bool move) const {
        if (in_place_) {
            if (move) {
                ops_.move_to(item.storage_, env);
            } else {
                ops_.copy_to(item.storage_, env);
            }
        } else {
            item.boxed_ = move ? ops_.move_new(env) : ops_.clone(env);
        }
        item.in_place_ = in_place_;
        item.ops_ = &ops_;
    }

    /// Moves `item`'s envelope into the empty slot `to`.
    void move_in(ring_item& item, unsigned char* to) const noexcept {
        if (in_place_) {
            relocate(to, item.storage_);
        } else {
            std::memcpy(to, &item.boxed_, sizeof item.boxed_);
        }
        item.ops_ = nullptr;
    }

    /// Moves the envelope of slot `from` (left empty) into the empty `item`.
    void move_out(unsigned char* from, ring_item& item) const noexcept {
        if (in_place_) {
            relocate(item.storage_, from);
        } else {
            std::memcpy(&item.boxed_, from, sizeof item.boxed_);
        }
        item.in_place_ = in_place_;
        item.ops_ = &ops_;
    }

    /// Moves the envelope (or pointer) at `from` to `to`; `from` is left empty.
    void relocate(unsigned char* to, unsigned char* from) const noexcept {
        if (!in_place_ || ops_.trivial) {
            std::memcpy(to, from, in_place_ ? ops_.size : sizeof(envelope_base*));
        } else {
            ops_.relocate(to, from);
        }
    }

    void destroy(unsigned char* s) const noexcept {
        if (in_place_) {
            ops_.destroy(s);
        } else {
            envelope_base* boxed = nullptr;
            std::memcpy(&boxed, s, sizeof boxed);
            ops_.free(boxed);
        }
    }

    envelope_base& envelope_in(unsigned char* s) const noexcept {
        if (in_place_) {
            return *ops_.at(s);
        }
        envelope_base* boxed = nullptr;
        std::memcpy(&boxed, s, sizeof boxed);
        return *boxed;
    }

    /// The slot of position `p` (counted since the mailbox was made), which waits.
    unsigned char* slot(std::uint64_t p) const noexcept {
        return blocks_[static_cast<std::size_t>(p / block_slots_ - base_)] + (p % block_slots_) * slot_size_;
    }

    /// A block for the positions from `end_` on (the spare one if any). Throws
    /// std::bad_alloc, changing nothing.
    void add_block() {
        unsigned char* b = spare_ != nullptr
                               ? spare_
                               : static_cast<unsigned char*>(::operator new (
                                     block_slots_* slot_size_, std::align_val_t{alignof(std::max_align_t)}));
        try {
            blocks_.push_back(b);
        } catch (...) {
            if (b != spare_) {
                free_block(b);
            }
            throw;
        }
        spare_ = b == spare_ ? nullptr : spare_;
    }

    static void free_block(unsigned char* b) noexcept {
        if (b != nullptr) {
            ::operator delete (b, std::align_val_t{alignof(std::max_align_t)});
        }
    }

    /// The front slot was emptied: forgets its key and moves past it, giving back its
    /// block once the block has no slot left (kept as the spare if there is none).
    void pop_front_slot() noexcept {
        if (conflating_) {
            unindex(front_);
            keys_.pop_front();
        }
        ++front_;
        if (front_ % block_slots_ == 0) {
            unsigned char* done = blocks_.front();
            blocks_.pop_front();
            ++base_;
            if (spare_ == nullptr) {
                spare_ = done;
            } else {
                free_block(done);
            }
        }
    }

    /// The position of the waiting event with the same key as `key`, or null.
    const std::uint64_t* find(const stored_key& key) const noexcept {
        const auto [first, last] = index_.equal_range(key.hash());
        for (auto it = first; it != last; ++it) {
            const auto& waiting = keys_[static_cast<std::size_t>(it->second - front_)];
            if (waiting && waiting->same(key)) {
                return &it->second;
            }
        }
        return nullptr;
    }

    /// Forgets the key of position `p`, which is leaving the front of the queue.
    void unindex(std::uint64_t p) noexcept {
        const auto& key = keys_.front();
        if (!key) {
            return;
        }
        const auto [first, last] = index_.equal_range(key->hash());
        for (auto it = first; it != last; ++it) {
            if (it->second == p) {
                index_.erase(it);
                return;
            }
        }
    }

    const envelope_ops& ops_;
    const std::size_t capacity_;
    const bool conflating_;
    /// Envelopes wait in their slots (otherwise a slot holds a pointer to a heap copy).
    const bool in_place_;
    const std::size_t slot_size_;
    const std::size_t block_slots_;
    const std::size_t chunk_room_;
    std::mutex mutex_;
    /// Under the lock: blocks of `block_slots_` slots; `blocks_[i]` holds the positions
    /// from `(base_ + i) * block_slots_` on. Positions `front_` to `end_` wait.
    std::deque<unsigned char*> blocks_;
    std::uint64_t base_ = 0;
    std::uint64_t front_ = 0;
    std::uint64_t end_ = 0;
    /// One emptied block kept for the next one needed (no allocation in a steady state).
    unsigned char* spare_ = nullptr;
    /// Conflating: the key of each waiting position (`keys_[p - front_]`), and key hash ->
    /// position.
    std::deque<std::unique_ptr<stored_key>> keys_;
    std::unordered_multimap<std::size_t, std::uint64_t> index_;
    std::atomic<std::size_t> count_{0};
    // Strand only: the chunk relocated out, items [chunk_first_, chunk_count_) not yet
    // released.
    unsigned char* chunk_ = nullptr;
    std::size_t chunk_first_ = 0;
    std::size_t chunk_count_ = 0;
};

} // namespace herald::detail
