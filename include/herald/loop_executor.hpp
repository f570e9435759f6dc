// An executor the application drives from its own thread: deliver on a UI or game loop,
// or in one batch at a frame boundary.
#pragma once

#include <herald/detail/chrono.hpp>
#include <herald/executor.hpp>

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

namespace herald {

/// Runs the bus's work on whichever thread calls `run_pending()` or `run_for()`, and
/// nowhere else: subscribers on it are delivered on the application's own loop thread,
/// with the same guarantees as on a pool of one worker (serial subscribers one call at a
/// time, each publisher's order kept, unsubscribe waiting for a running call).
///
///     auto ui = std::make_shared<herald::loop_executor>();
///     auto sub = bus.subscribe<prices>(repaint, {.pool = ui});
///     while (running) { ui->run_pending(); render(); }      // once per frame
///
/// Thread safety: `post` from any thread; `run_pending`/`run_for` from one loop thread
/// at a time. `bus.drain()` waits for the loop to run what was queued; called on the
/// loop's own thread, it runs it there instead. A subscriber that runs dry waits a few
/// microseconds for more before it gives the loop back (see docs/flow-control.md).
class loop_executor final : public executor {
public:
    loop_executor() = default;
    loop_executor(const loop_executor&) = delete;
    loop_executor& operator=(const loop_executor&) = delete;

    /// Releases what is still queued without running it.
    ~loop_executor() override { stop(); }

    /// Queues `work` for the loop. After `stop()` the task is released without running.
    void post(detail::task_ptr work) override {
        {
            const std::lock_guard lock(mutex_);
            if (stopped_) {
                return;
            }
            queue_.push_back(std::move(work));
            waiting_.store(queue_.size(), std::memory_order_release);
        }
        ready_.notify_one();
    }

    /// One: the loop is one thread.
    [[nodiscard]] std::size_t concurrency() const noexcept override { return 1; }
    /// "loop".
    [[nodiscard]] std::string label() const override { return "loop"; }

    /// Releases queued tasks without running them; later posts are released too.
    /// Idempotent. Tasks running on the loop thread at that moment finish.
    void stop() override {
        std::deque<detail::task_ptr> dropped;
        {
            const std::lock_guard lock(mutex_);
            stopped_ = true;
            dropped.swap(queue_);
            waiting_.store(0, std::memory_order_release);
        }
        ready_.notify_all();
    }

    /// Runs the tasks queued when it is called (not those they post meanwhile: a
    /// subscriber with more to do comes back on the next call) on this thread. Returns how
    /// many ran.
    std::size_t run_pending() {
        mark_loop_thread();
        std::deque<detail::task_ptr> now;
        {
            const std::lock_guard lock(mutex_);
            now.swap(queue_);
            waiting_.store(0, std::memory_order_release);
        }
        for (auto& task : now) {
            task->run();
            task.reset();
        }
        return now.size();
    }

    /// Runs tasks on this thread as they come until `budget` has passed (sleeping while
    /// none is queued). Returns how many ran.
    std::size_t run_for(std::chrono::nanoseconds budget) {
        const auto deadline = std::chrono::steady_clock::now() + budget;
        std::size_t ran = 0;
        for (;;) {
            ran += run_pending();
            std::unique_lock lock(mutex_);
            if (!ready_.wait_until(lock, deadline, [&] { return !queue_.empty() || stopped_; }) || stopped_) {
                return ran;
            }
        }
    }

    /// True when tasks are queued.
    [[nodiscard]] bool has_waiting_tasks() const noexcept override {
        return waiting_.load(std::memory_order_acquire) != 0;
    }

    /// `bus.drain()` calls this: on the loop's own thread it runs what is queued (the
    /// loop cannot run while it waits); on any other thread it does nothing, and drain
    /// waits for the loop.
    bool drive() override {
        if (loop_thread_.load(std::memory_order_acquire) != std::this_thread::get_id()) {
            return false;
        }
        return run_pending() != 0;
    }

private:
    void mark_loop_thread() noexcept { loop_thread_.store(std::this_thread::get_id(), std::memory_order_release); }

    mutable std::mutex mutex_;
    std::condition_variable ready_;
    std::deque<detail::task_ptr> queue_;
    std::atomic<std::size_t> waiting_{0};
    std::atomic<std::thread::id> loop_thread_{};
    bool stopped_ = false;
};

} // namespace herald
