// The spin-wait hint, shared by the strands and the thread pool.
#pragma once

namespace herald::detail {

/// Tells the CPU this thread is spin-waiting (x86 `pause`, ARM `yield`).
inline void cpu_pause() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

} // namespace herald::detail
