// Heap cost of async delivery: bytes per queued event (16 B and 256 B payloads) and allocations per publish.
//
// This binary replaces the global allocation functions to count them, so it is kept
// apart from the timing benchmarks. moodycamel's queues allocate their blocks with
// std::malloc, not operator new, so on glibc malloc and friends are counted too (they
// forward to glibc's __libc_* entry points); operator new/delete forward to them.
#include "support/bench_support.hpp"

#include <herald/herald.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

// --- counting allocator ------------------------------------------------------------------

namespace counting {

std::atomic<std::uint64_t> allocations{0};
std::atomic<std::int64_t> live_bytes{0};

/// Counting needs glibc (malloc interposition); elsewhere the scenarios are skipped.
#if defined(__GLIBC__)
constexpr bool available = true;
#else
constexpr bool available = false;
#endif

inline void on_alloc(std::size_t bytes) noexcept {
    allocations.fetch_add(1, std::memory_order_relaxed);
    live_bytes.fetch_add(static_cast<std::int64_t>(bytes), std::memory_order_relaxed);
}
inline void on_free(std::size_t bytes) noexcept {
    live_bytes.fetch_sub(static_cast<std::int64_t>(bytes), std::memory_order_relaxed);
}

} // namespace counting

#if defined(__GLIBC__)
// glibc's own implementations, which its public malloc symbols alias.
extern "C" {
void* __libc_malloc(std::size_t size);
void* __libc_calloc(std::size_t count, std::size_t size);
void* __libc_realloc(void* p, std::size_t size);
void __libc_free(void* p);
void* __libc_memalign(std::size_t alignment, std::size_t size);
void* __libc_valloc(std::size_t size);
void* __libc_pvalloc(std::size_t size);
}

namespace counting {
// Bytes are what the allocator really handed out (malloc_usable_size), so a free can
// subtract exactly what its allocation added.
inline void* noted(void* p) noexcept {
    if (p != nullptr) {
        on_alloc(malloc_usable_size(p));
    }
    return p;
}
} // namespace counting

extern "C" {
void* malloc(std::size_t size) noexcept { return counting::noted(__libc_malloc(size)); }
void* calloc(std::size_t count, std::size_t size) noexcept { return counting::noted(__libc_calloc(count, size)); }
void free(void* p) noexcept {
    if (p != nullptr) {
        counting::on_free(malloc_usable_size(p));
    }
    __libc_free(p);
}
void* realloc(void* p, std::size_t size) noexcept {
    const std::size_t old = p != nullptr ? malloc_usable_size(p) : 0;
    void* q = __libc_realloc(p, size);
    if (q != nullptr || size == 0) {
        counting::on_free(old);
        if (q != nullptr) {
            counting::on_alloc(malloc_usable_size(q));
        }
    }
    return q;
}
void* memalign(std::size_t alignment, std::size_t size) noexcept {
    return counting::noted(__libc_memalign(alignment, size));
}
void* aligned_alloc(std::size_t alignment, std::size_t size) noexcept {
    return counting::noted(__libc_memalign(alignment, size));
}
int posix_memalign(void** out, std::size_t alignment, std::size_t size) noexcept {
    void* p = counting::noted(__libc_memalign(alignment, size));
    if (p == nullptr) {
        return ENOMEM;
    }
    *out = p;
    return 0;
}
void* valloc(std::size_t size) noexcept { return counting::noted(__libc_valloc(size)); }
void* pvalloc(std::size_t size) noexcept { return counting::noted(__libc_pvalloc(size)); }
}
#endif

namespace counting {
inline void* new_block(std::size_t size) {
    void* p = std::malloc(size == 0 ? 1 : size);
    if (p == nullptr) {
        throw std::bad_alloc();
    }
    return p;
}
inline void* new_aligned(std::size_t size, std::align_val_t alignment) {
    const auto align = std::max(static_cast<std::size_t>(alignment), sizeof(void*));
    void* p = std::aligned_alloc(align, (std::max<std::size_t>(size, 1) + align - 1) / align * align);
    if (p == nullptr) {
        throw std::bad_alloc();
    }
    return p;
}
inline void delete_block(void* p) noexcept { std::free(p); }
} // namespace counting

// Replaced global operator new/delete (every form forwards to the counted malloc/free).
void* operator new(std::size_t size) { return counting::new_block(size); }
void* operator new[](std::size_t size) { return counting::new_block(size); }
void* operator new(std::size_t size, const std::nothrow_t& /*unused*/) noexcept {
    try {
        return counting::new_block(size);
    } catch (...) {
        return nullptr;
    }
}
void* operator new[](std::size_t size, const std::nothrow_t& /*unused*/) noexcept {
    try {
        return counting::new_block(size);
    } catch (...) {
        return nullptr;
    }
}
void* operator new(std::size_t size, std::align_val_t align) { return counting::new_aligned(size, align); }
void* operator new[](std::size_t size, std::align_val_t align) { return counting::new_aligned(size, align); }
void operator delete(void* p) noexcept { counting::delete_block(p); }
void operator delete[](void* p) noexcept { counting::delete_block(p); }
void operator delete(void* p, std::size_t /*unused*/) noexcept { counting::delete_block(p); }
void operator delete[](void* p, std::size_t /*unused*/) noexcept { counting::delete_block(p); }
void operator delete(void* p, std::align_val_t /*unused*/) noexcept { counting::delete_block(p); }
void operator delete[](void* p, std::align_val_t /*unused*/) noexcept { counting::delete_block(p); }
void operator delete(void* p, std::size_t /*unused*/, std::align_val_t /*unused*/) noexcept {
    counting::delete_block(p);
}
void operator delete[](void* p, std::size_t /*unused*/, std::align_val_t /*unused*/) noexcept {
    counting::delete_block(p);
}

// --- scenarios -----------------------------------------------------------------------------

namespace {

using herald_bench::payload;

template <std::size_t Size>
struct payload_topic : herald::topic<payload<Size>> {};

/// Events left waiting in the queue: 1M (100k in quick mode).
std::size_t queued_events() { return herald_bench::scaled<std::size_t>(1'000'000, 100'000); }
/// Publishes whose allocations are counted: 1M (100k in quick mode).
std::uint64_t steady_publishes() { return herald_bench::scaled<std::uint64_t>(1'000'000, 100'000); }

/// Skips the benchmark where allocations cannot be counted; true when it may run.
bool can_count(benchmark::State& state) {
    if constexpr (!counting::available) {
        state.SkipWithError("allocation counting needs glibc (malloc interposition)");
    }
    return counting::available;
}

std::int64_t live() { return counting::live_bytes.load(std::memory_order_relaxed); }
std::uint64_t allocated() { return counting::allocations.load(std::memory_order_relaxed); }

void report_queued(benchmark::State& state, std::int64_t grew, std::size_t n, std::size_t payload_bytes) {
    const double per_event = static_cast<double>(grew) / static_cast<double>(n);
    state.counters["bytes_per_event"] = per_event;
    state.counters["overhead_bytes"] = per_event - static_cast<double>(payload_bytes);
    state.counters["payload_bytes"] = static_cast<double>(payload_bytes);
}

// herald: the async subscriber (on its own one-thread pool) blocks inside its first
// call, so everything published afterwards waits in its queue; the growth of live heap
// bytes while N events wait, divided by N, is the cost of one queued event.
template <std::size_t Size>
void herald_queued(benchmark::State& state) {
    if (!can_count(state)) {
        return;
    }
    using event = payload<Size>;
    const std::size_t n = queued_events();
    for (auto _ : state) {
        herald::bus bus{{.workers = 1}};
        std::atomic<bool> entered{false};
        std::atomic<bool> release{false};
        auto blocker = [&](const event& /*unused*/) {
            if (!entered.exchange(true)) {
                entered.notify_all();
                release.wait(false);
            }
        };
        auto sub = bus.subscribe<payload_topic<Size>>(blocker, {.pool = bus.make_pool(1)});
        (void)bus.publish<payload_topic<Size>>(event{});
        entered.wait(false);
        const std::int64_t before = live();
        for (std::size_t i = 0; i < n; ++i) {
            (void)bus.publish<payload_topic<Size>>(event{i, i});
        }
        const std::int64_t after = live();
        release.store(true);
        release.notify_all();
        bus.drain();
        report_queued(state, after - before, n, Size);
    }
}

// Baseline: a raw moodycamel ConcurrentQueue of the payload holding N.
template <std::size_t Size>
void moodycamel_queued(benchmark::State& state) {
    if (!can_count(state)) {
        return;
    }
    using event = payload<Size>;
    const std::size_t n = queued_events();
    for (auto _ : state) {
        moodycamel::ConcurrentQueue<event> queue;
        moodycamel::ProducerToken token(queue);
        const std::int64_t before = live();
        for (std::size_t i = 0; i < n; ++i) {
            queue.enqueue(token, event{i, i});
        }
        const std::int64_t after = live();
        report_queued(state, after - before, n, Size);
    }
}

void report_allocations(benchmark::State& state, std::uint64_t count, std::uint64_t publishes) {
    state.counters["allocs_per_publish"] = static_cast<double>(count) / static_cast<double>(publishes);
    state.counters["allocs"] = static_cast<double>(count);
}

/// Steady state: the publisher sends bursts of this many events and waits until the
/// consumer has handled each burst, so the backlog stays bounded and the queues' block
/// pools, grown during warm-up, suffice. (With an unbounded backlog every queue keeps
/// allocating blocks whenever the backlog reaches a new maximum.)
constexpr std::uint64_t burst = 1024;

/// Publishes `n` events in bursts through `send(i)`, waiting for `handled` to catch up
/// after each; `target` is the running total the consumer must reach.
template <class Send>
void bursts(std::uint64_t n, std::uint64_t& target, const std::atomic<std::uint64_t>& handled, Send&& send) {
    for (std::uint64_t sent = 0; sent < n;) {
        const std::uint64_t count = std::min(burst, n - sent);
        for (std::uint64_t i = 0; i < count; ++i) {
            send(sent + i);
        }
        sent += count;
        target += count;
        herald_bench::wait_until(handled, target);
    }
}

// herald: a live serial subscriber (one worker); two warm-up rounds of N; then the
// allocations on any thread during N more publishes (and their handling) are counted.
template <std::size_t Size>
void herald_allocations(benchmark::State& state) {
    if (!can_count(state)) {
        return;
    }
    using event = payload<Size>;
    const std::uint64_t n = steady_publishes();
    herald::bus bus{{.workers = 1}};
    std::uint64_t sink = 0;
    std::atomic<std::uint64_t> handled{0};
    auto sub = bus.subscribe<payload_topic<Size>>([&sink, &handled](const event& e) {
        sink += e.a;
        herald_bench::bump(handled); // serial subscriber: one call at a time
    });
    std::uint64_t target = 0;
    auto round = [&] {
        bursts(n, target, handled, [&bus](std::uint64_t i) { (void)bus.publish<payload_topic<Size>>(event{i, i}); });
    };
    round();
    round();
    for (auto _ : state) {
        const std::uint64_t start = allocated();
        round();
        report_allocations(state, allocated() - start, n);
    }
    benchmark::DoNotOptimize(sink);
}

template <template <class, class> class Queue>
void queue_allocations(benchmark::State& state) {
    if (!can_count(state)) {
        return;
    }
    using event = payload<16>;
    const std::uint64_t n = steady_publishes();
    std::uint64_t sink = 0;
    std::atomic<std::uint64_t> handled{0};
    auto on_item = [&sink, &handled](const event& e) {
        sink += e.a;
        herald_bench::bump(handled);
    };
    Queue<event, decltype(on_item)> queue(on_item);
    auto token = queue.make_token();
    std::uint64_t target = 0;
    auto round = [&] { bursts(n, target, handled, [&](std::uint64_t i) { queue.push(token, event{i, i}); }); };
    round();
    round();
    for (auto _ : state) {
        const std::uint64_t start = allocated();
        round();
        report_allocations(state, allocated() - start, n);
    }
    benchmark::DoNotOptimize(sink);
}

#define HERALD_MEMORY(fn, name) BENCHMARK(fn)->Name(name)->Iterations(1)->UseRealTime()

HERALD_MEMORY(herald_queued<16>, "queued_bytes/herald/16");
HERALD_MEMORY(moodycamel_queued<16>, "queued_bytes/moodycamel/16");
HERALD_MEMORY(herald_queued<256>, "queued_bytes/herald/256");
HERALD_MEMORY(moodycamel_queued<256>, "queued_bytes/moodycamel/256");

HERALD_MEMORY(herald_allocations<16>, "allocs_per_publish/herald/16");
HERALD_MEMORY(herald_allocations<64>, "allocs_per_publish/herald/64");
HERALD_MEMORY(queue_allocations<herald_bench::spin_queue>, "allocs_per_publish/moodycamel_spin/16");
HERALD_MEMORY(queue_allocations<herald_bench::blocking_queue>, "allocs_per_publish/moodycamel_blocking/16");
HERALD_MEMORY(queue_allocations<herald_bench::mutex_queue>, "allocs_per_publish/mutex_condvar/16");

} // namespace
