// Executors for tests: nothing runs until the test says so, or everything runs at once.
#pragma once

#include <herald/executor.hpp>

#include <cstddef>
#include <deque>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>

namespace herald::testing {

/// An executor with no threads: posted work waits in a FIFO until the test runs it on
/// its own thread with `run_one()`, `run_all()` or `run_until_idle()`. One task is one
/// subscriber's turn: up to `batch_size` events for a serial subscriber, one event for a
/// concurrent one. `bus.drain()` and `shutdown()` run it too (`drive()`), so code under
/// test that drains does not hang.
///
/// Thread safety: `post` may be called from any thread; the `run_*` members from one
/// thread at a time (normally the test's).
class manual_executor final : public executor {
public:
    void post(detail::task_ptr work) override {
        std::lock_guard lock(mutex_);
        if (!stopped_) {
            queue_.push_back(std::move(work));
        }
    }

    [[nodiscard]] std::size_t concurrency() const noexcept override { return 1; }
    /// "manual".
    [[nodiscard]] std::string label() const override { return "manual"; }

    /// Releases the queued tasks without running them; later posts are ignored.
    void stop() override {
        std::deque<detail::task_ptr> dropped;
        {
            std::lock_guard lock(mutex_);
            stopped_ = true;
            dropped.swap(queue_);
        }
    }

    bool drive() override { return run_until_idle() != 0; }

    /// Runs the oldest queued task; false when there was none.
    bool run_one() {
        detail::task_ptr next;
        {
            std::lock_guard lock(mutex_);
            if (queue_.empty()) {
                return false;
            }
            next = std::move(queue_.front());
            queue_.pop_front();
        }
        next->run();
        return true;
    }

    /// Runs the tasks queued now, not those they post; returns how many ran.
    std::size_t run_all() {
        std::size_t count = 0;
        {
            std::lock_guard lock(mutex_);
            count = queue_.size();
        }
        std::size_t ran = 0;
        while (ran < count && run_one()) {
            ++ran;
        }
        return ran;
    }

    /// Runs tasks, including those posted meanwhile, until none is left; returns how many
    /// ran. Throws `std::runtime_error` after `limit` tasks (a handler that keeps
    /// publishing to itself would otherwise never let it return).
    std::size_t run_until_idle(std::size_t limit = 10'000'000) {
        std::size_t ran = 0;
        while (run_one()) {
            if (++ran >= limit) {
                throw std::runtime_error("herald::testing::manual_executor: still busy after the task limit");
            }
        }
        return ran;
    }

    /// Tasks waiting to run.
    [[nodiscard]] std::size_t pending() const {
        std::lock_guard lock(mutex_);
        return queue_.size();
    }

private:
    mutable std::mutex mutex_;
    std::deque<detail::task_ptr> queue_;
    bool stopped_ = false;
};

/// An executor that runs each task at once, on the thread that posts it: every async
/// subscriber then handles an event inside `publish`, as if it were inline, while the
/// code under test keeps its async subscriptions. A handler that publishes runs the
/// subscribers of that publish nested in its own call.
class synchronous_executor final : public executor {
public:
    void post(detail::task_ptr work) override { work->run(); }
    [[nodiscard]] std::size_t concurrency() const noexcept override { return 1; }
    /// "synchronous".
    [[nodiscard]] std::string label() const override { return "synchronous"; }
    void stop() override {}
};

} // namespace herald::testing
