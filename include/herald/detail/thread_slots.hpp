// Per-thread announcements that let the publish path run without a locked instruction:
// each thread says which subscriber list it is reading and which inline handler it is
// calling, in a slot only it writes. The rare writers (subscribe, unsubscribe) pay
// instead: one process-wide memory barrier, then a scan of the slots.
#pragma once

#include <herald/detail/chrono.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <thread>

#if defined(__linux__)
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace herald::detail {

/// Asymmetric fences. A reader's store of its slot followed by a load of shared state
/// needs a full barrier between the two; `light()` is that barrier for the reader and
/// `heavy()` completes it for the writer. With Linux's membarrier(2) the reader's half
/// is only a compiler barrier and the writer's is a system call that runs a full barrier
/// on every CPU currently executing a thread of this process. Elsewhere (or when the
/// kernel refuses) both halves are ordinary full fences.
class fences {
public:
    /// Whether the membarrier scheme is in use; decided once per process.
    [[nodiscard]] static bool asymmetric() noexcept {
        static const bool registered = register_process();
        return registered;
    }

    /// The reader's half: orders its earlier stores before its later loads.
    [[gnu::always_inline]] static void light() noexcept {
        // A plain flag, not `asymmetric()`, whose guard check would cost every call:
        // until it is set (during static initialisation) the reader uses a full fence,
        // which pairs with either kind of writer.
        if (ready) [[likely]] {
            std::atomic_signal_fence(std::memory_order_seq_cst);
        } else {
            std::atomic_thread_fence(std::memory_order_seq_cst);
        }
    }

    /// The writer's half: after it returns, every reader either has its slot store
    /// visible here or will see every store this thread made before the call.
    static void heavy() noexcept {
        std::atomic_thread_fence(std::memory_order_seq_cst);
#if defined(__linux__)
        if (asymmetric()) {
            // Registration succeeded, so the command is supported; the kernel documents
            // no other failure. Continuing without the barrier would let a publisher use
            // freed memory, so a refusal ends the process.
            if (::syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) != 0) {
                std::terminate();
            }
        }
#endif
    }

private:
    /// `asymmetric()`, once known: set during static initialisation, read by `light()`.
    static inline const bool ready = asymmetric();

    static bool register_process() noexcept {
#if defined(__linux__)
        const long supported = ::syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
        if (supported < 0 || (supported & MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0) {
            return false;
        }
        return ::syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
#else
        return false;
#endif
    }
};

/// One thread's announcements. Only the owning thread writes `reading`, `calling` and the
/// two depths; any thread may read the atomics. Nested publishes (a handler publishing)
/// use the next entry; beyond `depth` the callers fall back to reference counts.
struct alignas(64) thread_slot {
    static constexpr std::size_t depth = 8;

    /// Subscriber lists this thread is reading (hazard pointers).
    std::atomic<const void*> reading[depth]{};
    /// Subscribers whose inline handler this thread is running.
    std::atomic<const void*> calling[depth]{};
    /// The topic whose sequence number this thread is taking as the topic's only
    /// publisher (see `sequence_counter`); null otherwise.
    std::atomic<const void*> sequencing{nullptr};
    /// Entries in use; owner only.
    std::size_t reads = 0;
    std::size_t calls = 0;
    /// Unique among the threads alive now (a slot is reused after its thread ended).
    std::uint32_t index = 0;
    std::atomic<bool> taken{true};
    /// The next slot of the registry; fixed once the slot is published.
    thread_slot* next = nullptr;
};

/// Every slot ever made, newest first. Slots are never freed: an exited thread's slot is
/// reused by the next new thread, so the list is as long as the most threads alive at once.
struct slot_registry {
    std::atomic<thread_slot*> head{nullptr};
    std::atomic<std::uint32_t> made{0};

    thread_slot* claim() {
        for (thread_slot* s = head.load(std::memory_order_acquire); s != nullptr; s = s->next) {
            bool expected = false;
            if (!s->taken.load(std::memory_order_relaxed) &&
                s->taken.compare_exchange_strong(expected, true, std::memory_order_acquire)) {
                return s;
            }
        }
        auto* fresh = new thread_slot; // taken from birth
        fresh->index = made.fetch_add(1, std::memory_order_relaxed);
        fresh->next = head.load(std::memory_order_relaxed);
        while (!head.compare_exchange_weak(fresh->next, fresh, std::memory_order_release, std::memory_order_relaxed)) {
        }
        return fresh;
    }

    template <class F>
    void for_each(F&& visit) const {
        for (thread_slot* s = head.load(std::memory_order_acquire); s != nullptr; s = s->next) {
            visit(*s);
        }
    }
};

inline slot_registry& slots() noexcept {
    static slot_registry registry;
    return registry;
}

inline thread_local thread_slot* current_slot = nullptr;

/// Gives the slot back when its thread ends.
struct slot_lease {
    thread_slot* slot;
    ~slot_lease() {
        current_slot = nullptr;
        slot->taken.store(false, std::memory_order_release);
    }
};

[[gnu::noinline]] inline thread_slot& claim_thread_slot() {
    thread_local slot_lease lease{slots().claim()};
    current_slot = lease.slot;
    return *lease.slot;
}

/// This thread's slot (claimed by its first publish). May throw std::bad_alloc once.
inline thread_slot& this_thread_slot() {
    thread_slot* s = current_slot;
    if (s != nullptr) [[likely]] {
        return *s;
    }
    return claim_thread_slot();
}

/// The slot of this thread if it has one, else null; never allocates.
inline const thread_slot* this_thread_slot_if_any() noexcept { return current_slot; }

/// True when some thread's entry in `entries` (`&thread_slot::reading` or
/// `&thread_slot::calling`) holds `value`.
template <class Entries>
bool someone_announces(Entries thread_slot::*entries, const void* value) noexcept {
    bool found = false;
    slots().for_each([&](const thread_slot& s) {
        for (const auto& entry : s.*entries) {
            found = found || entry.load(std::memory_order_acquire) == value;
        }
    });
    return found;
}

/// True when some thread is reading the snapshot `list`.
inline bool someone_reads(const void* list) noexcept { return someone_announces(&thread_slot::reading, list); }

/// True when some thread runs an announced call (a filter, an inline call, a put) of `subscriber`.
inline bool someone_calls(const void* subscriber) noexcept {
    return someone_announces(&thread_slot::calling, subscriber);
}

/// One step of a polling wait: spin, then yield, then sleep (a long handler).
inline void patience(int spins) noexcept {
    if (spins > 1000) {
        std::this_thread::sleep_for(std::chrono::microseconds(50));
    } else if (spins > 64) {
        std::this_thread::yield();
    }
}

/// Waits until no thread other than this one is running an announced call of
/// `subscriber` (an inline handler, a filter), or until `give_up()` says waiting longer
/// could deadlock. The caller has closed the subscriber's gate; the heavy fence makes
/// every call that starts later see the closed gate (and skip), so only calls already
/// announced remain.
template <class GiveUp>
void wait_for_inline_calls(const void* subscriber, GiveUp&& give_up) noexcept {
    fences::heavy();
    const thread_slot* mine = this_thread_slot_if_any();
    bool stop = false;
    slots().for_each([&](const thread_slot& s) {
        if (&s == mine) {
            return; // calls on this thread's own stack cannot be waited for
        }
        for (const auto& entry : s.calling) {
            for (int spins = 0; !stop && entry.load(std::memory_order_acquire) == subscriber; ++spins) {
                stop = give_up();
                patience(spins);
            }
        }
    });
}

} // namespace herald::detail
