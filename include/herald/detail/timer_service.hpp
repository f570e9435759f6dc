// A bus's timers: a min-heap of due tasks, fired by one thread or by a manual clock.
#pragma once

#include <herald/clock.hpp>
#include <herald/detail/chrono.hpp>

#include <algorithm>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

namespace herald::detail {

/// Work that waits for a time: a retry after its backoff, for instance.
class timed_task {
public:
    virtual ~timed_task() = default;
    /// The time came. Runs on the timer thread (or inside `manual_clock::advance`), so it
    /// must be short: it hands the real work to an executor.
    virtual void fire() noexcept = 0;
    /// The service closed before the time came (the bus is shutting down).
    virtual void cancel() noexcept = 0;
};

/// Fires timed tasks in due order (ties in scheduling order). With a real clock it owns
/// one thread, started by the first `schedule`, so a bus that never retries pays nothing;
/// with a manual clock it fires from `advance()` and owns no thread.
class timer_service {
public:
    explicit timer_service(std::shared_ptr<clock_source> time) : clock_(std::move(time)) {
        if (clock_->is_manual()) {
            watch_ = clock_->watch([this](clock_source::time_point now) { fire_due(now); });
        }
    }

    timer_service(const timer_service&) = delete;
    timer_service& operator=(const timer_service&) = delete;

    ~timer_service() {
        close();
        if (clock_->is_manual()) {
            clock_->unwatch(watch_);
        }
    }

    /// Runs `task->fire()` at `due` (at once if `due` has passed). Returns false, and
    /// leaves the task with the caller, once the service is closed. Thread-safe.
    /// A task due at `time_point::max()` never comes due on a real clock: it waits until
    /// `close()` cancels it (a manual clock fires it if advanced to its maximum).
    bool schedule(clock_source::time_point due, std::unique_ptr<timed_task>& task) {
        std::unique_lock lock(mutex_);
        if (closed_) {
            return false;
        }
        heap_.push_back(entry{due, next_order_++, std::move(task)});
        std::push_heap(heap_.begin(), heap_.end(), later);
        if (!clock_->is_manual()) {
            if (!thread_.joinable()) {
                thread_ = std::thread([this] { run(); });
            }
            lock.unlock();
            wake_.notify_one();
        }
        return true;
    }

    /// When the earliest waiting task is due, if any task waits.
    [[nodiscard]] std::optional<clock_source::time_point> next_due() const {
        std::lock_guard lock(mutex_);
        if (heap_.empty()) {
            return std::nullopt;
        }
        return heap_.front().due;
    }

    /// Stops the service: later `schedule` calls return false, every waiting task is
    /// cancelled (on this thread), the thread is joined. Idempotent.
    void close() noexcept {
        std::vector<entry> left;
        {
            std::lock_guard lock(mutex_);
            if (closed_) {
                return;
            }
            closed_ = true;
            left.swap(heap_);
        }
        wake_.notify_all();
        if (thread_.joinable()) {
            thread_.join();
        }
        std::sort(left.begin(), left.end(), [](const entry& a, const entry& b) { return later(b, a); });
        for (auto& e : left) {
            e.task->cancel();
        }
    }

private:
    struct entry {
        clock_source::time_point due;
        std::uint64_t order;
        std::unique_ptr<timed_task> task;
    };

    /// The longest single wait of the timer thread; a later task is waited for in steps.
    static constexpr std::chrono::nanoseconds longest_wait = std::chrono::hours(1);

    /// How long to wait for a task due at `due` when it is `now` (`due > now`): the gap,
    /// at most `longest_wait`. Computed without overflow for any two time points (their
    /// difference always fits in 64 unsigned bits).
    static std::chrono::nanoseconds wait_before(clock_source::time_point due, clock_source::time_point now) noexcept {
        const auto gap = static_cast<std::uint64_t>(due.time_since_epoch().count()) -
                         static_cast<std::uint64_t>(now.time_since_epoch().count());
        const auto cap = static_cast<std::uint64_t>(longest_wait.count());
        return std::chrono::nanoseconds(static_cast<std::int64_t>(std::min(gap, cap)));
    }

    /// Heap order: the earliest due (then the first scheduled) on top.
    static bool later(const entry& a, const entry& b) noexcept {
        return a.due != b.due ? a.due > b.due : a.order > b.order;
    }

    /// Pops every task due at `now`, then fires them outside the lock, in due order.
    void fire_due(clock_source::time_point now) {
        for (;;) {
            std::vector<std::unique_ptr<timed_task>> due;
            {
                std::lock_guard lock(mutex_);
                while (!heap_.empty() && heap_.front().due <= now) {
                    std::pop_heap(heap_.begin(), heap_.end(), later);
                    due.push_back(std::move(heap_.back().task));
                    heap_.pop_back();
                }
            }
            if (due.empty()) {
                return;
            }
            for (auto& task : due) {
                task->fire();
            }
            // A fired task may have scheduled another one that is already due.
        }
    }

    void run() noexcept {
        std::unique_lock lock(mutex_);
        while (!closed_) {
            if (heap_.empty()) {
                wake_.wait(lock);
                continue;
            }
            const auto due = heap_.front().due;
            const auto now = clock_->now();
            if (due > now) {
                // steady_clock is the clock of these time points, so wait_for is exact;
                // the wait is capped and looped because a task may be due at (or near)
                // time_point::max(), and wait_for adds its argument to steady_clock::now().
                wake_.wait_for(lock, wait_before(due, now));
                continue;
            }
            lock.unlock();
            fire_due(now);
            lock.lock();
        }
    }

    std::shared_ptr<clock_source> clock_;
    std::uint64_t watch_ = 0;
    mutable std::mutex mutex_;
    std::condition_variable wake_;
    std::vector<entry> heap_;
    std::uint64_t next_order_ = 0;
    bool closed_ = false;
    std::thread thread_;
};

} // namespace herald::detail
