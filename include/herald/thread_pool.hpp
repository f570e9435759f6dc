// A fixed-size pool of worker threads fed by a lock-free queue: herald's default executor.
#pragma once

#include <herald/detail/chrono.hpp>
#include <herald/detail/concurrentqueue.hpp>
#include <herald/detail/cpu_pause.hpp>
#include <herald/executor.hpp>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <pthread.h>
#endif

namespace herald {

/// How a `thread_pool` is made. Designated-initializer friendly:
///
///     herald::thread_pool pool{{.threads = 1, .spin = std::chrono::microseconds(50)}};
struct thread_pool_options {
    /// Worker threads (at least one; 0 means `std::thread::hardware_concurrency()`).
    std::size_t threads = 0;
    /// Used in diagnostics.
    std::string name = "herald";
    /// Low-latency mode: after each task a worker keeps polling for the next one for
    /// this long before it goes to sleep, so an event that arrives within the budget
    /// starts without a wake-up (a few microseconds on Linux). The budget restarts
    /// after every task: a stream of events closer together than `spin` keeps one core
    /// per worker busy; once the stream stops, the workers sleep again after `spin`.
    /// Clamped to `max_spin`. Zero (the default): the queue's own short spin only.
    std::chrono::nanoseconds spin{0};

    /// The largest spin budget a pool accepts (longer ones are shortened to it).
    static constexpr std::chrono::nanoseconds max_spin = std::chrono::milliseconds(10);
};

/// A fixed number of worker threads taking tasks from one moodycamel `ConcurrentQueue`,
/// counted by a moodycamel `LightweightSemaphore` (one count per queued task). An idle
/// worker spins briefly, then sleeps on the semaphore, so an idle pool uses no CPU.
/// Tasks posted by one thread start in the order posted; with more than one worker they
/// may run concurrently.
///
/// The workers start with the first `post`, not before: a bus whose subscribers are all
/// inline (or that has none yet) runs no thread of its own. `started()` tells.
///
/// Thread safety: `post` may be called from any thread, including the pool's own.
/// `stop` (and the destructor) must not be called from one of the pool's threads.
class thread_pool final : public executor {
public:
    /// A pool of `threads` workers (at least one; 0 means
    /// `std::thread::hardware_concurrency()`), started by the first `post`.
    explicit thread_pool(std::size_t threads = 0, std::string name = "herald")
        : thread_pool(thread_pool_options{threads, std::move(name), {}}) {}

    /// A pool as `options` say (see `thread_pool_options`), started by the first `post`.
    explicit thread_pool(thread_pool_options options)
        : name_(std::move(options.name)),
          threads_(options.threads != 0 ? options.threads
                                        : std::max<std::size_t>(1, std::thread::hardware_concurrency())),
          spin_(std::clamp(options.spin, std::chrono::nanoseconds::zero(), thread_pool_options::max_spin)) {}

    thread_pool(const thread_pool&) = delete;
    thread_pool& operator=(const thread_pool&) = delete;

    /// Stops and joins the workers; tasks still queued are released without running.
    ~thread_pool() override { stop(); }

    /// Queues `work`, starting the workers if this is the first post. After `stop()` the
    /// task is released without running. Throws `std::system_error` when the first post
    /// cannot start a thread (then the task is not queued, and the next post tries again),
    /// and `std::bad_alloc` when the queue cannot grow (the task is not queued).
    void post(detail::task_ptr work) override {
        if (!started_.load(std::memory_order_acquire)) {
            start();
        }
        if (!stopping_.load(std::memory_order_acquire)) {
            put(std::move(work));
        }
    }

    /// The number of worker threads (started or not).
    [[nodiscard]] std::size_t concurrency() const noexcept override { return threads_; }

    /// True once the workers were started (by the first `post`).
    [[nodiscard]] bool started() const noexcept { return started_.load(std::memory_order_acquire); }

    /// The name given at construction (used in diagnostics).
    [[nodiscard]] const std::string& name() const noexcept { return name_; }
    /// The pool's name.
    [[nodiscard]] std::string label() const override { return name_; }

    /// The spin budget in use (after clamping).
    [[nodiscard]] std::chrono::nanoseconds spin() const noexcept override { return spin_; }

    /// True when posted tasks wait for a worker (approximate).
    [[nodiscard]] bool has_waiting_tasks() const noexcept override { return ready_.availableApprox() > 0; }

    /// Lets running tasks finish, joins every worker, releases queued tasks. Idempotent.
    /// Throws `std::logic_error` when called from one of this pool's own workers.
    void stop() override {
        std::lock_guard lock(stop_mutex_);
        if (stopped_) {
            return;
        }
        for (const auto& worker : workers_) {
            if (worker.get_id() == std::this_thread::get_id()) {
                throw std::logic_error("herald::thread_pool::stop called from its own worker thread");
            }
        }
        stopping_.store(true, std::memory_order_release);
        started_.store(true, std::memory_order_release); // a later post starts nothing
        wake(workers_.size());
        for (auto& worker : workers_) {
            worker.join();
        }
        detail::task_ptr leftover;
        while (tasks_.try_dequeue(leftover)) {
            leftover.reset();
        }
        stopped_ = true;
    }

private:
    /// Starts every worker, once; a thread that cannot be started undoes the others.
    void start() {
        std::lock_guard lock(stop_mutex_);
        if (started_.load(std::memory_order_relaxed)) {
            return;
        }
        workers_.reserve(threads_);
        try {
            for (std::size_t i = 0; i < threads_; ++i) {
                workers_.emplace_back([this, i] {
                    name_thread(i);
                    work();
                });
            }
        } catch (...) {
            stopping_.store(true, std::memory_order_release);
            wake(workers_.size());
            for (auto& worker : workers_) {
                worker.join();
            }
            workers_.clear();
            stopping_.store(false, std::memory_order_release);
            throw;
        }
        started_.store(true, std::memory_order_release);
    }

    /// Names the calling worker "<pool name>/<index>" (cut to the 15 bytes Linux keeps),
    /// so debuggers, `top -H` and trace recordings show which pool a thread serves.
    void name_thread([[maybe_unused]] std::size_t index) const noexcept {
#if defined(__linux__)
        char digits[20];
        std::size_t count = 0;
        do {
            digits[count++] = static_cast<char>('0' + index % 10);
            index /= 10;
        } while (index != 0 && count < sizeof digits);
        char label[16] = {};
        const std::size_t keep = std::min(name_.size(), sizeof label - 2 - std::min<std::size_t>(count, 13));
        std::size_t at = 0;
        for (; at < keep; ++at) {
            label[at] = name_[at];
        }
        label[at++] = '/';
        while (count != 0 && at + 1 < sizeof label) {
            label[at++] = digits[--count];
        }
        (void)::pthread_setname_np(::pthread_self(), label);
#endif
    }

    /// Queues `item` and counts it in the semaphore, waking a sleeping worker if any.
    /// The enqueue comes first, so a worker that took a count always finds an item.
    void put(detail::task_ptr item) {
        if (!tasks_.enqueue(std::move(item))) {
            throw std::bad_alloc();
        }
        ready_.signal();
    }

    /// Wakes `count` sleeping workers to see `stopping_` (an empty task each). Without
    /// memory for one, a worker still sees it within its 200 ms wait.
    void wake(std::size_t count) noexcept {
        for (std::size_t i = 0; i < count; ++i) {
            if (tasks_.enqueue(nullptr)) {
                ready_.signal();
            }
        }
    }

    /// Takes a count without sleeping, then an item.
    bool try_take(moodycamel::ConsumerToken& token, detail::task_ptr& item) noexcept {
        if (!ready_.tryWait()) {
            return false;
        }
        take_counted(token, item);
        return true;
    }

    /// After taking a count: takes an item. Every count was given after its item was
    /// queued, so one is there; the loop only rides out the queue's view across its
    /// producers' sub-queues settling.
    void take_counted(moodycamel::ConsumerToken& token, detail::task_ptr& item) noexcept {
        while (!tasks_.try_dequeue(token, item)) {
            detail::cpu_pause();
        }
    }

    void work() noexcept {
        moodycamel::ConsumerToken token(tasks_);
        detail::task_ptr item;
        while (!stopping_.load(std::memory_order_acquire)) {
            // The timeout only bounds how long a missed wake-up could delay stopping.
            bool took = spin_.count() != 0 && poll(token, item);
            if (!took && ready_.wait(200'000)) {
                take_counted(token, item);
                took = true;
            }
            if (took && item) {
                item->run();
                item.reset();
            }
        }
    }

    /// Low-latency mode: polls for a task for up to the spin budget (the clock is read
    /// every 64 polls, so the budget costs about one clock read per microsecond).
    bool poll(moodycamel::ConsumerToken& token, detail::task_ptr& item) noexcept {
        const auto deadline = std::chrono::steady_clock::now() + spin_;
        for (;;) {
            for (int i = 0; i < 64; ++i) {
                if (try_take(token, item)) {
                    return true;
                }
                detail::cpu_pause();
            }
            if (stopping_.load(std::memory_order_acquire) || std::chrono::steady_clock::now() >= deadline) {
                return false;
            }
        }
    }

    std::string name_;
    moodycamel::ConcurrentQueue<detail::task_ptr> tasks_;
    moodycamel::LightweightSemaphore ready_;
    const std::size_t threads_;
    const std::chrono::nanoseconds spin_;
    std::vector<std::thread> workers_;
    std::atomic<bool> started_{false};
    std::atomic<bool> stopping_{false};
    std::mutex stop_mutex_;
    bool stopped_ = false;
};

} // namespace herald
