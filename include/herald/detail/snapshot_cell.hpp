// Holds an immutable snapshot that publishers read without a locked instruction and that
// subscribe/unsubscribe replace.
#pragma once

#include <herald/detail/thread_slots.hpp>

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace herald::detail {

/// A `shared_ptr<const T>` that many threads read and a few replace. Readers announce the
/// snapshot they read in their thread's slot (a hazard pointer): two plain stores and a
/// compiler barrier, no reference count. A replaced snapshot is freed by the writer once
/// no slot announces it; one still being read waits in a retired list until a later
/// replacement (or the cell's destruction) finds it free.
template <class T>
class snapshot_cell {
public:
    explicit snapshot_cell(std::shared_ptr<const T> initial) noexcept
        : owner_(std::move(initial)), current_(owner_.get()) {}

    snapshot_cell(const snapshot_cell&) = delete;
    snapshot_cell& operator=(const snapshot_cell&) = delete;

    /// Reads the current snapshot for the guard's lifetime: it stays valid and unchanged
    /// until the guard is destroyed. Guards nest (a handler publishing); past the slot's
    /// depth the guard holds a reference count instead. Constructing the first guard of a
    /// thread may throw std::bad_alloc (the thread's slot).
    class reader {
    public:
        /// Reads `cell` announced in this thread's slot (claimed first if need be, which
        /// may throw `std::bad_alloc`).
        explicit reader(const snapshot_cell& cell) : reader(cell, this_thread_slot()) {}

        /// Reads `cell` announced in `me`, the calling thread's slot. Never throws.
        reader(const snapshot_cell& cell, thread_slot& me) noexcept {
            if (me.reads == thread_slot::depth) {
                pinned_ = cell.copy();
                value_ = pinned_.get();
                return;
            }
            owner_ = &me;
            entry_ = &me.reading[me.reads++];
            const T* seen = cell.current_.load(std::memory_order_acquire);
            for (;;) {
                entry_->store(seen, std::memory_order_relaxed);
                fences::light();
                const T* now = cell.current_.load(std::memory_order_acquire);
                if (now == seen) {
                    break;
                }
                seen = now;
            }
            value_ = seen;
        }

        ~reader() {
            if (entry_ != nullptr) {
                entry_->store(nullptr, std::memory_order_release);
                --owner_->reads;
            }
        }

        reader(const reader&) = delete;
        reader& operator=(const reader&) = delete;

        [[nodiscard]] const T& operator*() const noexcept { return *value_; }
        [[nodiscard]] const T* operator->() const noexcept { return value_; }

    private:
        const T* value_ = nullptr;
        thread_slot* owner_ = nullptr;
        std::atomic<const void*>* entry_ = nullptr;
        std::shared_ptr<const T> pinned_;
    };

    /// A counted reference to the current snapshot (cold paths).
    [[nodiscard]] std::shared_ptr<const T> copy() const {
        std::lock_guard lock(mutex_);
        return owner_;
    }

    /// Publishes `next`. The previous snapshot is freed here when no reader announces
    /// it, else by a later store or the destructor. Snapshots freed here die outside the
    /// lock. May throw std::bad_alloc (nothing changes then).
    void store(std::shared_ptr<const T> next) {
        std::vector<std::shared_ptr<const T>> free;
        {
            std::lock_guard lock(mutex_);
            retired_.reserve(retired_.size() + 1);
            free.reserve(retired_.size() + 1);
            current_.store(next.get(), std::memory_order_seq_cst);
            retired_.push_back(std::exchange(owner_, std::move(next)));
            fences::heavy();
            const auto still_read = std::stable_partition(retired_.begin(), retired_.end(),
                                                          [](const auto& old) { return someone_reads(old.get()); });
            free.assign(std::make_move_iterator(still_read), std::make_move_iterator(retired_.end()));
            retired_.erase(still_read, retired_.end());
        }
    }

private:
    mutable std::mutex mutex_;
    std::shared_ptr<const T> owner_;
    std::atomic<const T*> current_;
    /// Replaced snapshots that a reader still announced when last checked.
    std::vector<std::shared_ptr<const T>> retired_;
};

} // namespace herald::detail
