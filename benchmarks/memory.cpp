// Heap cost of async delivery: bytes per queued event (16 B and 256 B payloads), allocations
// per publish, the heap a topic keeps after subscribe/unsubscribe churn, and the heap a bus
// keeps after a large burst has drained.
//
// This binary replaces the global allocation functions to count them, so it is kept
// apart from the timing benchmarks. moodycamel's queues allocate their blocks with
// std::malloc, not operator new, so on glibc malloc and friends are counted too (they
// forward to glibc's __libc_* entry points); operator new/delete forward to them.
#include "support/bench_support.hpp"

#include <herald/herald.hpp>

#include <benchmark/benchmark.h>
#include <boost/signals2/signal.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <thread>

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
        bus.publish<payload_topic<Size>>(event{});
        entered.wait(false);
        const std::int64_t before = live();
        for (std::size_t i = 0; i < n; ++i) {
            bus.publish<payload_topic<Size>>(event{i, i});
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
        bursts(n, target, handled, [&bus](std::uint64_t i) { bus.publish<payload_topic<Size>>(event{i, i}); });
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

// --- subscribe/unsubscribe churn -----------------------------------------------------------
//
// N subscribe + unsubscribe pairs on one topic that keeps one steady subscriber throughout.
// Reported per run: ns per pair, and the live heap bytes the bus still holds after the
// churn (against the level before it). bench_report.py compares the largest N with the
// smallest: time per pair should stay flat and the bytes held should not grow with N.

/// The pair counts: 10k and 1M (100k in quick mode).
void churn_sizes(benchmark::internal::Benchmark* b) {
    b->Arg(10'000);
    b->Arg(herald_bench::scaled<std::int64_t>(1'000'000, 100'000));
}

struct churn_topic : herald::topic<herald_bench::ev16> {};

void report_churn(benchmark::State& state, std::chrono::steady_clock::duration took, std::int64_t held,
                  std::int64_t pairs) {
    const auto n = static_cast<double>(pairs);
    state.counters["pairs"] = n;
    state.counters["ns_per_pair"] = static_cast<double>(std::chrono::nanoseconds(took).count()) / n;
    state.counters["held_bytes"] = static_cast<double>(held);
    state.counters["held_bytes_per_pair"] = static_cast<double>(held) / n;
}

void herald_churn(benchmark::State& state) {
    if (!can_count(state)) {
        return;
    }
    const std::int64_t pairs = state.range(0);
    for (auto _ : state) {
        herald::bus bus{{.workers = 1}};
        std::uint64_t sink = 0;
        auto handler = [&sink](const herald_bench::ev16& e) { sink += e.a; };
        auto steady = bus.subscribe<churn_topic>(handler);
        {
            // Warm-up: the first pairs create what any topic with churn has (its state,
            // its lists' first capacity), which is not what this run measures.
            for (int i = 0; i < 16; ++i) {
                auto s = bus.subscribe<churn_topic>(handler);
                s.unsubscribe();
            }
        }
        const std::int64_t before = live();
        const auto start = std::chrono::steady_clock::now();
        for (std::int64_t i = 0; i < pairs; ++i) {
            auto s = bus.subscribe<churn_topic>(handler);
            s.unsubscribe();
        }
        const auto took = std::chrono::steady_clock::now() - start;
        const std::int64_t held = live() - before;
        report_churn(state, took, held, pairs);
        bus.publish<churn_topic>(herald_bench::ev16{1, 1}); // the topic still works
        bus.drain();
        benchmark::DoNotOptimize(sink);
    }
}

// Baseline: a boost::signals2 signal with one steady slot; connect + disconnect pairs.
void signals2_churn(benchmark::State& state) {
    if (!can_count(state)) {
        return;
    }
    const std::int64_t pairs = state.range(0);
    for (auto _ : state) {
        std::uint64_t sink = 0;
        auto handler = [&sink](const herald_bench::ev16& e) { sink += e.a; };
        boost::signals2::signal<void(const herald_bench::ev16&)> signal;
        auto steady = signal.connect(handler);
        for (int i = 0; i < 16; ++i) {
            signal.connect(handler).disconnect();
        }
        const std::int64_t before = live();
        const auto start = std::chrono::steady_clock::now();
        for (std::int64_t i = 0; i < pairs; ++i) {
            auto c = signal.connect(handler);
            c.disconnect();
        }
        const auto took = std::chrono::steady_clock::now() - start;
        const std::int64_t held = live() - before;
        report_churn(state, took, held, pairs);
        signal(herald_bench::ev16{1, 1});
        benchmark::DoNotOptimize(sink);
    }
}

// --- memory after a burst --------------------------------------------------------------------
//
// One async subscriber (on its own one-thread pool) is held inside a call while M events of
// 1 KB are published (500k: about 0.5 GB of backlog; 50k in quick mode). Then it is released,
// the backlog drains, and after a fixed wait of 200 ms the live heap is compared with the
// level before the burst (measured after a small warm-up, so the bus's steady-state
// structures are already counted in it).

using burst_event = payload<1024>;
struct burst_topic : herald::topic<burst_event> {};

std::size_t burst_events() { return herald_bench::scaled<std::size_t>(500'000, 50'000); }
constexpr auto burst_settle = std::chrono::milliseconds(200);

void report_burst(benchmark::State& state, std::int64_t before, std::int64_t peak, std::int64_t after,
                  std::size_t events) {
    state.counters["events"] = static_cast<double>(events);
    state.counters["before_bytes"] = static_cast<double>(before);
    state.counters["peak_growth_bytes"] = static_cast<double>(peak - before);
    state.counters["held_bytes"] = static_cast<double>(after - before);
}

void herald_burst(benchmark::State& state) {
    if (!can_count(state)) {
        return;
    }
    const std::size_t n = burst_events();
    for (auto _ : state) {
        herald::bus bus{{.workers = 1}};
        std::atomic<bool> armed{false};
        std::atomic<bool> entered{false};
        std::atomic<bool> release{false};
        std::atomic<std::uint64_t> handled{0};
        std::uint64_t sink = 0;
        auto handler = [&](const burst_event& e) {
            if (armed.exchange(false)) {
                entered.store(true);
                entered.notify_all();
                release.wait(false);
            }
            sink += e.a;
            herald_bench::bump(handled); // serial subscriber: one call at a time
        };
        auto sub = bus.subscribe<burst_topic>(handler, {.pool = bus.make_pool(1)});
        // Warm-up: a few small rounds, so the level before the burst is a bus in use.
        std::uint64_t target = 0;
        for (int round = 0; round < 4; ++round) {
            for (std::uint64_t i = 0; i < 256; ++i) {
                bus.publish<burst_topic>(burst_event{i, i});
            }
            target += 256;
            herald_bench::wait_until(handled, target);
        }
        bus.drain();
        const std::int64_t before = live();

        armed.store(true);
        bus.publish<burst_topic>(burst_event{});
        entered.wait(false);
        for (std::size_t i = 1; i < n; ++i) {
            bus.publish<burst_topic>(burst_event{i, i});
        }
        const std::int64_t peak = live();
        release.store(true);
        release.notify_all();
        bus.drain();
        std::this_thread::sleep_for(burst_settle);
        const std::int64_t after = live();
        report_burst(state, before, peak, after, n);
        benchmark::DoNotOptimize(sink);
    }
}

// Baseline: a raw moodycamel ConcurrentQueue of the same events filled with M and emptied.
void moodycamel_burst(benchmark::State& state) {
    if (!can_count(state)) {
        return;
    }
    const std::size_t n = burst_events();
    for (auto _ : state) {
        moodycamel::ConcurrentQueue<burst_event> queue;
        moodycamel::ProducerToken producer(queue);
        moodycamel::ConsumerToken consumer(queue);
        burst_event item{};
        for (std::uint64_t i = 0; i < 1024; ++i) {
            queue.enqueue(producer, burst_event{i, i});
            (void)queue.try_dequeue(consumer, item);
        }
        const std::int64_t before = live();
        for (std::size_t i = 0; i < n; ++i) {
            queue.enqueue(producer, burst_event{i, i});
        }
        const std::int64_t peak = live();
        std::uint64_t sink = 0;
        while (queue.try_dequeue(consumer, item)) {
            sink += item.a;
        }
        std::this_thread::sleep_for(burst_settle);
        const std::int64_t after = live();
        report_burst(state, before, peak, after, n);
        benchmark::DoNotOptimize(sink);
    }
}

// --- a bounded backlog ---------------------------------------------------------------------
//
// A subscriber with a capacity of C is held inside its first call while 3C events of
// 1 KB are published: C of them wait (the rest are dropped by its overflow rule). The
// growth of live heap bytes, divided by C, is what one place of a full mailbox holds:
// the flow-control issue's bound is C x (event + 64 B) plus a constant.

std::size_t bounded_capacity() { return herald_bench::scaled<std::size_t>(10'000, 2'000); }

void herald_bounded(benchmark::State& state, herald::overflow rule) {
    if (!can_count(state)) {
        return;
    }
    const std::size_t capacity = bounded_capacity();
    for (auto _ : state) {
        herald::bus bus{{.workers = 1}};
        std::atomic<bool> entered{false};
        std::atomic<bool> release{false};
        auto blocker = [&](const burst_event& /*unused*/) {
            if (!entered.exchange(true)) {
                entered.notify_all();
                release.wait(false);
            }
        };
        herald::subscribe_options<burst_event> options{
            .pool = bus.make_pool(1), .capacity = capacity + 1, .overflow = rule};
        if (rule == herald::overflow::conflate) {
            options.key = [](const burst_event& e) { return e.a; }; // every event a key of its own
        }
        auto sub = bus.subscribe<burst_topic>(blocker, std::move(options));
        bus.publish<burst_topic>(burst_event{});
        entered.wait(false);
        const std::int64_t before = live();
        for (std::size_t i = 0; i < 3 * capacity; ++i) {
            bus.publish<burst_topic>(burst_event{i, i});
        }
        const std::int64_t after = live();
        const auto waiting = sub.stats().waiting;
        release.store(true);
        release.notify_all();
        bus.drain();
        const double per_place = static_cast<double>(after - before) / static_cast<double>(capacity);
        state.counters["bytes_per_place"] = per_place;
        state.counters["overhead_bytes"] = per_place - static_cast<double>(sizeof(burst_event));
        state.counters["waiting"] = static_cast<double>(waiting);
    }
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

HERALD_MEMORY(herald_churn, "churn/herald")->Apply(churn_sizes);
HERALD_MEMORY(signals2_churn, "churn/signals2")->Apply(churn_sizes);

HERALD_MEMORY(herald_burst, "burst_1k/herald");
BENCHMARK_CAPTURE(herald_bounded, drop_newest, herald::overflow::drop_newest)
    ->Name("bounded_backlog/drop_newest")
    ->Iterations(1)
    ->UseRealTime();
BENCHMARK_CAPTURE(herald_bounded, drop_oldest, herald::overflow::drop_oldest)
    ->Name("bounded_backlog/drop_oldest")
    ->Iterations(1)
    ->UseRealTime();
BENCHMARK_CAPTURE(herald_bounded, conflate, herald::overflow::conflate)
    ->Name("bounded_backlog/conflate")
    ->Iterations(1)
    ->UseRealTime();
HERALD_MEMORY(moodycamel_burst, "burst_1k/moodycamel");

} // namespace
