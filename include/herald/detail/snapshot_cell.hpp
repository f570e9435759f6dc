// Holds an immutable, shared snapshot that readers copy and writers replace.
#pragma once

#include <atomic>
#include <memory>
#include <thread>
#include <utility>

namespace herald::detail {

/// A `shared_ptr<const T>` that many threads load and a few replace. The critical section
/// is a pointer copy plus one reference-count increment, guarded by a spin flag with
/// acquire/release ordering. (libstdc++ 12's `std::atomic<std::shared_ptr>` does the same
/// but releases its lock with relaxed ordering after a load, which ThreadSanitizer rightly
/// reports as a race with the next store.) The one class to change when the publish path
/// gets a different reclamation scheme.
template <class T>
class snapshot_cell {
public:
    explicit snapshot_cell(std::shared_ptr<const T> initial) noexcept : value_(std::move(initial)) {}

    /// A reference to the current snapshot; it stays valid and unchanged while held.
    [[nodiscard]] std::shared_ptr<const T> load() const noexcept {
        lock();
        std::shared_ptr<const T> copy = value_;
        unlock();
        return copy;
    }

    /// Publishes `next`; the previous snapshot dies when its last reader lets go (here,
    /// outside the critical section, if nobody holds it).
    void store(std::shared_ptr<const T> next) noexcept {
        lock();
        value_.swap(next);
        unlock();
    }

private:
    void lock() const noexcept {
        for (int spins = 0; busy_.exchange(true, std::memory_order_acquire); ++spins) {
            while (busy_.load(std::memory_order_relaxed)) {
                if (++spins > 64) {
                    std::this_thread::yield(); // the holder was preempted
                }
            }
        }
    }
    void unlock() const noexcept { busy_.store(false, std::memory_order_release); }

    mutable std::atomic<bool> busy_{false};
    std::shared_ptr<const T> value_;
};

} // namespace herald::detail
