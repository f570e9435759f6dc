// Shared pieces of herald's benchmarks: event types, run sizes, baseline queues, percentiles.
#pragma once

#include <herald/detail/concurrentqueue.hpp>
#include <herald/herald.hpp>

// The blocking baseline's queue, beside the ConcurrentQueue herald found.
#if __has_include(<concurrentqueue/blockingconcurrentqueue.h>)
#include <concurrentqueue/blockingconcurrentqueue.h>
#elif __has_include(<moodycamel/blockingconcurrentqueue.h>)
#include <moodycamel/blockingconcurrentqueue.h>
#else
#include <blockingconcurrentqueue.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace herald_bench {

/// The 16-byte event most scenarios publish: two words the handlers read.
struct ev16 {
    std::uint64_t a = 0;
    std::uint64_t b = 0;
};
static_assert(sizeof(ev16) == 16);

/// A trivially copyable event of exactly `Size` bytes (the first 16 are `a` and `b`).
template <std::size_t Size>
struct payload {
    static_assert(Size >= 16 && Size % 8 == 0);
    std::uint64_t a = 0;
    std::uint64_t b = 0;
    std::uint64_t pad[(Size - 16) / 8]{};
};
template <>
struct payload<16> {
    std::uint64_t a = 0;
    std::uint64_t b = 0;
};

/// True when `HERALD_BENCH_QUICK` is set to something other than "" or "0" (set by
/// `scripts/bench.sh --quick`): smaller event counts and shorter windows, for smoke tests.
inline bool quick() {
    static const bool value = [] {
        const char* v = std::getenv("HERALD_BENCH_QUICK");
        return v != nullptr && *v != '\0' && std::string_view(v) != "0";
    }();
    return value;
}

/// `full` normally, `smoke` in quick mode.
template <class T>
T scaled(T full, T smoke) {
    return quick() ? smoke : full;
}

/// Nanoseconds on the steady clock (what the latency scenarios stamp and compare).
inline std::int64_t now_ns() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

/// A hint to the core that this thread is spinning.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

/// Waits (yielding the core) until a consumer's progress counter reaches `target`.
inline void wait_until(const std::atomic<std::uint64_t>& counter, std::uint64_t target) noexcept {
    while (counter.load(std::memory_order_acquire) < target) {
        std::this_thread::yield();
    }
}

/// Counts items on the single consumer thread without a locked instruction.
inline void bump(std::atomic<std::uint64_t>& counter) noexcept {
    counter.store(counter.load(std::memory_order_relaxed) + 1, std::memory_order_release);
}

// --- baseline queues -----------------------------------------------------------------
//
// Each owns one consumer thread that calls `OnItem` for every item, in order, and joins
// it in its destructor. Producers take a token per thread (`make_token()`) and `push`.

/// Floor for a cross-thread hand-off: moodycamel `ConcurrentQueue` with producer and
/// consumer tokens, and a consumer that spins (never sleeps).
template <class T, class OnItem>
class spin_queue {
public:
    using token = moodycamel::ProducerToken;

    explicit spin_queue(OnItem on_item) : on_item_(std::move(on_item)), worker_([this] { consume(); }) {}
    spin_queue(const spin_queue&) = delete;
    spin_queue& operator=(const spin_queue&) = delete;
    ~spin_queue() {
        stop_.store(true, std::memory_order_release);
        worker_.join();
    }

    token make_token() { return token(queue_); }
    void push(token& t, const T& item) { queue_.enqueue(t, item); }

private:
    void consume() {
        moodycamel::ConsumerToken consumer(queue_);
        T item;
        for (;;) {
            if (queue_.try_dequeue(consumer, item)) {
                on_item_(item);
            } else if (stop_.load(std::memory_order_acquire)) {
                return;
            } else {
                cpu_relax();
            }
        }
    }

    moodycamel::ConcurrentQueue<T> queue_;
    OnItem on_item_;
    std::atomic<bool> stop_{false};
    std::thread worker_; // last: starts once the rest exists
};

/// moodycamel `BlockingConcurrentQueue`: the consumer spins briefly, then sleeps on a
/// semaphore (as herald's thread pool does). Stopped by a flag plus one wake-up item.
template <class T, class OnItem>
class blocking_queue {
public:
    using token = moodycamel::ProducerToken;

    explicit blocking_queue(OnItem on_item) : on_item_(std::move(on_item)), worker_([this] { consume(); }) {}
    blocking_queue(const blocking_queue&) = delete;
    blocking_queue& operator=(const blocking_queue&) = delete;
    ~blocking_queue() {
        stop_.store(true, std::memory_order_release);
        queue_.enqueue(T{});
        worker_.join();
    }

    token make_token() { return token(queue_); }
    void push(token& t, const T& item) { queue_.enqueue(t, item); }

private:
    void consume() {
        moodycamel::ConsumerToken consumer(queue_);
        T item;
        for (;;) {
            queue_.wait_dequeue(consumer, item);
            if (stop_.load(std::memory_order_acquire)) {
                return;
            }
            on_item_(item);
        }
    }

    moodycamel::BlockingConcurrentQueue<T> queue_;
    OnItem on_item_;
    std::atomic<bool> stop_{false};
    std::thread worker_;
};

/// The textbook queue: `std::deque` under a `std::mutex`, `notify_one` per push, the
/// consumer takes one item per lock.
template <class T, class OnItem>
class mutex_queue {
public:
    struct token {};

    explicit mutex_queue(OnItem on_item) : on_item_(std::move(on_item)), worker_([this] { consume(); }) {}
    mutex_queue(const mutex_queue&) = delete;
    mutex_queue& operator=(const mutex_queue&) = delete;
    ~mutex_queue() {
        {
            std::lock_guard lock(mutex_);
            stop_ = true;
        }
        ready_.notify_one();
        worker_.join();
    }

    token make_token() { return {}; }
    void push(token& /*unused*/, const T& item) {
        {
            std::lock_guard lock(mutex_);
            items_.push_back(item);
        }
        ready_.notify_one();
    }

private:
    void consume() {
        for (;;) {
            std::unique_lock lock(mutex_);
            ready_.wait(lock, [this] { return stop_ || !items_.empty(); });
            if (items_.empty()) {
                return; // stopping, and nothing left
            }
            T item = items_.front();
            items_.pop_front();
            lock.unlock();
            on_item_(item);
        }
    }

    std::mutex mutex_;
    std::condition_variable ready_;
    std::deque<T> items_;
    bool stop_ = false;
    OnItem on_item_;
    std::thread worker_;
};

/// The batching queue (what eventpp's `EventQueue` does): a `std::vector` under a
/// `std::mutex`; the consumer takes the whole list at once by swapping it with its own
/// empty one, then handles it without the lock. A push notifies only when the consumer
/// sleeps, so a busy consumer costs the publisher one uncontended lock per item.
template <class T, class OnItem>
class swap_queue {
public:
    struct token {};

    explicit swap_queue(OnItem on_item) : on_item_(std::move(on_item)), worker_([this] { consume(); }) {}
    swap_queue(const swap_queue&) = delete;
    swap_queue& operator=(const swap_queue&) = delete;
    ~swap_queue() {
        {
            std::lock_guard lock(mutex_);
            stop_ = true;
        }
        ready_.notify_one();
        worker_.join();
    }

    token make_token() { return {}; }
    void push(token& /*unused*/, const T& item) {
        bool wake = false;
        {
            std::lock_guard lock(mutex_);
            items_.push_back(item);
            wake = sleeping_;
            sleeping_ = false;
        }
        if (wake) {
            ready_.notify_one();
        }
    }

private:
    void consume() {
        std::vector<T> taken;
        for (;;) {
            {
                std::unique_lock lock(mutex_);
                while (items_.empty() && !stop_) {
                    sleeping_ = true;
                    ready_.wait(lock);
                }
                if (items_.empty()) {
                    return; // stopping, and nothing left
                }
                taken.swap(items_);
            }
            for (const T& item : taken) {
                on_item_(item);
            }
            taken.clear(); // keeps its capacity: the next swap hands it to the publishers
        }
    }

    std::mutex mutex_;
    std::condition_variable ready_;
    std::vector<T> items_;
    bool sleeping_ = false;
    bool stop_ = false;
    OnItem on_item_;
    std::thread worker_;
};

// --- statistics ------------------------------------------------------------------------

/// The `q`-quantile (0..1) of `values`, nearest rank; reorders `values`.
inline double percentile(std::vector<std::int64_t>& values, double q) {
    if (values.empty()) {
        return 0;
    }
    const auto rank = static_cast<std::size_t>(q * static_cast<double>(values.size() - 1) + 0.5);
    std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(rank), values.end());
    return static_cast<double>(values[rank]);
}

} // namespace herald_bench
