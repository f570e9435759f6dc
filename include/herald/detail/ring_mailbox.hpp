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
#include <deque>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

namespace herald::detail {

/// A bounded FIFO under a mutex, for the overflow rules that take events out from the
/// publisher's side. Each waiting event is a heap copy of its envelope (one allocation
/// per event); the lock is held only to move pointers. A publisher puts under the lock;
/// when `capacity` events wait it first takes the oldest out (`drop_oldest`), or,
/// conflating, the new event replaces the waiting one with the same key in its place.
/// The strand moves up to a chunk out under the lock and handles it without. No user
/// code runs under the lock except the key's `==` and hash (the key itself is
/// extracted before, by the caller).
class ring_mailbox final : public mailbox_base {
public:
    ring_mailbox(const envelope_ops& ops, std::size_t capacity, bool conflating)
        : mailbox_base(kind::ring), ops_(ops), capacity_(std::max<std::size_t>(1, capacity)), conflating_(conflating) {
        taken_.reserve(chunk_room); // so that taking a chunk never allocates
    }

    ~ring_mailbox() override {
        release_chunk(taken_.size());
        for (auto& e : waiting_) {
            ops_.free(e.env);
        }
    }

    /// What a put pushed out: the oldest event, or the one the new event replaced
    /// (`conflated`). The caller counts it and ends its drain count, then frees it.
    struct displaced {
        boxed_envelope env;
        bool conflated = false;
    };

    /// `push` without a key or a displaced event (what the generic put path may call).
    void put(envelope_base& env, bool move, std::size_t /*level*/, clock_source::time_point /*now*/) override {
        displaced out;
        push(env, move, nullptr, out);
    }

    /// Queues a heap copy (or move) of `env`; `key` is its key when conflating. Throws,
    /// changing nothing, when the copy or memory fails.
    void push(envelope_base& env, bool move, std::unique_ptr<stored_key> key, displaced& out) {
        envelope_base* copy = move ? ops_.move_new(env) : ops_.clone(env);
        try {
            const std::lock_guard lock(mutex_);
            if (conflating_ && key) {
                if (entry* same = find(*key)) {
                    out.env = boxed_envelope(ops_, std::exchange(same->env, copy));
                    out.conflated = true;
                    return;
                }
            }
            waiting_.push_back(entry{copy, std::move(key)});
            if (conflating_ && waiting_.back().key) {
                try {
                    index_.emplace(waiting_.back().key->hash(), front_ + waiting_.size() - 1);
                } catch (...) {
                    waiting_.pop_back();
                    throw;
                }
            }
            if (waiting_.size() > capacity_) {
                entry& oldest = waiting_.front();
                unindex(oldest);
                out.env = boxed_envelope(ops_, oldest.env);
                waiting_.pop_front();
                ++front_;
            }
            count_.store(waiting_.size(), std::memory_order_release);
        } catch (...) {
            ops_.free(copy);
            throw;
        }
    }

    std::size_t take_chunk(std::size_t want, clock_source::time_point /*now*/) noexcept override {
        release_chunk(taken_.size());
        const std::lock_guard lock(mutex_);
        const std::size_t n = std::min({want, waiting_.size(), chunk_room});
        for (std::size_t i = 0; i < n; ++i) {
            entry& e = waiting_.front();
            unindex(e);
            taken_.push_back(e.env);
            waiting_.pop_front();
            ++front_;
        }
        count_.store(waiting_.size(), std::memory_order_release);
        return n;
    }

    envelope_base& at(std::size_t i) noexcept override { return *taken_[i]; }

    void release_chunk(std::size_t count) noexcept override {
        count = std::min(count, taken_.size());
        for (std::size_t i = 0; i < count; ++i) {
            ops_.free(taken_[i]);
        }
        taken_.erase(taken_.begin(), taken_.begin() + static_cast<std::ptrdiff_t>(count));
    }

    bool take_shared(taken_item& /*out*/) noexcept override { return false; }

    [[nodiscard]] bool has_puts() const noexcept override { return count_.load(std::memory_order_acquire) != 0; }

    [[nodiscard]] std::size_t size_approx() const noexcept override { return count_.load(std::memory_order_acquire); }

    [[nodiscard]] std::unique_ptr<mailbox_base> fresh() const override {
        return std::make_unique<ring_mailbox>(ops_, capacity_, conflating_);
    }

    /// The most events that may wait.
    [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }

    /// The most events one chunk moves out.
    static constexpr std::size_t chunk_room = 64;

private:
    struct entry {
        envelope_base* env;
        std::unique_ptr<stored_key> key;
    };

    /// The waiting entry with the same key as `key`, or null.
    entry* find(const stored_key& key) noexcept {
        const auto [first, last] = index_.equal_range(key.hash());
        for (auto it = first; it != last; ++it) {
            entry& e = waiting_[static_cast<std::size_t>(it->second - front_)];
            if (e.key && e.key->same(key)) {
                return &e;
            }
        }
        return nullptr;
    }

    /// Forgets the key of `e`, which is leaving the front of the queue.
    void unindex(const entry& e) noexcept {
        if (!conflating_ || !e.key) {
            return;
        }
        const auto [first, last] = index_.equal_range(e.key->hash());
        for (auto it = first; it != last; ++it) {
            if (it->second == front_) {
                index_.erase(it);
                return;
            }
        }
    }

    const envelope_ops& ops_;
    const std::size_t capacity_;
    const bool conflating_;
    std::mutex mutex_;
    std::deque<entry> waiting_;
    /// Position (counted since the mailbox was made) of `waiting_.front()`.
    std::uint64_t front_ = 0;
    /// Conflating: key hash -> position of the waiting event with that key.
    std::unordered_multimap<std::size_t, std::uint64_t> index_;
    std::atomic<std::size_t> count_{0};
    // Strand only: the chunk moved out.
    std::vector<envelope_base*> taken_;
};

} // namespace herald::detail
