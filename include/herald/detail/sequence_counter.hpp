// A topic's sequence numbers: gap-free and in publish order, without a locked
// instruction while one thread does all the publishing.
#pragma once

#include <herald/detail/cpu_pause.hpp>
#include <herald/detail/thread_slots.hpp>

#include <atomic>
#include <cstdint>

namespace herald::detail {

/// Hands out 1, 2, 3... A locked instruction costs a publish more than its own few
/// nanoseconds: it waits until the envelope copies the thread just wrote into queues
/// other cores read have left its store buffer. So the first thread that publishes owns
/// the counter and takes numbers with a plain load and store; the first time another
/// thread publishes, it revokes the ownership (once, for good) and everybody uses an
/// atomic increment from then on.
///
/// Revocation is the asymmetric pattern of `fences`: the owner announces the counter in
/// its slot, runs `fences::light()`, and checks that it still owns it; the revoker marks
/// the counter `revoking`, runs `fences::heavy()`, waits until the owner's announcement
/// is gone, then marks it `shared`. Either the owner sees the mark (and takes the atomic
/// path), or the revoker sees the announcement (and waits for the owner's store). Threads
/// that find it `revoking` wait for `shared`. A thread slot reused by a new thread after
/// its owner ended keeps the ownership: one thread at a time writes through it.
class sequence_counter {
public:
    /// The next number, for the thread whose slot is `me`. Never throws.
    [[gnu::always_inline]] std::uint64_t next(thread_slot& me) noexcept {
        const auto mine = reinterpret_cast<std::uintptr_t>(&me);
        const std::uintptr_t owner = owner_.load(std::memory_order_acquire);
        if (owner == mine) [[likely]] {
            if (const std::uint64_t taken = take_owned(me, mine); taken != 0) [[likely]] {
                return taken;
            }
        } else if (owner == shared) {
            return value_.fetch_add(1, std::memory_order_acq_rel) + 1;
        }
        return next_slow(me, mine);
    }

    /// Numbers handed out so far.
    [[nodiscard]] std::uint64_t last() const noexcept { return value_.load(std::memory_order_acquire); }

    /// True once more than one thread has published (the atomic path is in use).
    [[nodiscard]] bool is_shared() const noexcept { return owner_.load(std::memory_order_acquire) == shared; }

private:
    static constexpr std::uintptr_t nobody = 0;
    static constexpr std::uintptr_t revoking = 1;
    static constexpr std::uintptr_t shared = 2;

    /// The owner's path: the next number, or 0 when the counter was revoked meanwhile.
    [[gnu::always_inline]] std::uint64_t take_owned(thread_slot& me, std::uintptr_t mine) noexcept {
        me.sequencing.store(this, std::memory_order_relaxed);
        fences::light();
        std::uint64_t taken = 0;
        if (owner_.load(std::memory_order_relaxed) == mine) [[likely]] {
            taken = value_.load(std::memory_order_relaxed) + 1;
            value_.store(taken, std::memory_order_relaxed);
        }
        me.sequencing.store(nullptr, std::memory_order_release);
        return taken;
    }

    [[gnu::noinline]] std::uint64_t next_slow(thread_slot& me, std::uintptr_t mine) noexcept {
        std::uintptr_t seen = owner_.load(std::memory_order_acquire);
        for (;;) {
            if (seen == mine) {
                if (const std::uint64_t taken = take_owned(me, mine); taken != 0) {
                    return taken;
                }
                seen = owner_.load(std::memory_order_acquire);
            } else if (seen == nobody) {
                // The first publisher takes the counter (its first number atomically).
                if (owner_.compare_exchange_strong(seen, mine, std::memory_order_acq_rel)) {
                    return value_.fetch_add(1, std::memory_order_acq_rel) + 1;
                }
            } else if (seen == revoking) {
                cpu_pause();
                seen = owner_.load(std::memory_order_acquire);
            } else if (seen == shared) {
                return value_.fetch_add(1, std::memory_order_acq_rel) + 1;
            } else if (owner_.compare_exchange_strong(seen, revoking, std::memory_order_acq_rel)) {
                revoke(reinterpret_cast<const thread_slot*>(seen));
                return value_.fetch_add(1, std::memory_order_acq_rel) + 1;
            }
        }
    }

    /// Waits until `owner` can no longer take a number on its own, then shares the counter.
    [[gnu::cold, gnu::noinline]] void revoke(const thread_slot* owner) noexcept {
        fences::heavy();
        while (owner->sequencing.load(std::memory_order_acquire) == this) {
            cpu_pause();
        }
        owner_.store(shared, std::memory_order_release);
    }

    alignas(64) std::atomic<std::uint64_t> value_{0};
    /// The owning thread slot's address, or `nobody`, `revoking`, `shared`.
    std::atomic<std::uintptr_t> owner_{nobody};
};

} // namespace herald::detail
