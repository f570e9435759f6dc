// The spin-wait hint, shared by the strands and the thread pool.
#pragma once

#include <atomic>
#include <thread>

namespace herald::detail {

/// Tells the CPU this thread is spin-waiting (x86 `pause`, ARM `yield`).
inline void cpu_pause() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

/// A lock for critical sections of a few dozen instructions that two threads take at a
/// high rate (a publisher and a worker): a contended `std::mutex` sends both into the
/// kernel; this one spins with `cpu_pause` and yields the CPU after a while (so a holder
/// that was preempted gets to run). BasicLockable (`std::lock_guard`).
class spin_lock {
public:
    void lock() noexcept {
        int spins = 0;
        while (locked_.exchange(true, std::memory_order_acquire)) {
            while (locked_.load(std::memory_order_relaxed)) {
                if (++spins < 64) {
                    cpu_pause();
                } else {
                    std::this_thread::yield();
                }
            }
        }
    }
    void unlock() noexcept { locked_.store(false, std::memory_order_release); }

private:
    std::atomic<bool> locked_{false};
};

} // namespace herald::detail
