// Deliver onto the Boost.Asio executor an application already runs (an io_context, a
// strand, a thread_pool). Optional: includes Boost.Asio.
#pragma once

#include <herald/executor.hpp>

#include <boost/asio/post.hpp>

#include <atomic>
#include <cstddef>
#include <memory>
#include <string>
#include <thread>
#include <utility>

namespace herald {

/// A herald executor that posts the bus's work to an Asio executor: `post` becomes
/// `boost::asio::post(executor, ...)`, so handlers run on the threads that run the
/// `io_context` (or inside the strand). Serial subscribers stay serial and ordered on
/// any Asio executor (herald's strand, not Asio's, guarantees that); concurrent ones run
/// as parallel as the executor allows: give `concurrency` the number of threads running
/// it.
///
///     boost::asio::io_context io;
///     auto on_io = herald::make_asio_executor(io.get_executor(), 2);   // two threads run io
///     auto sub = bus.subscribe<orders>(handle, {.pool = on_io});
///
/// `stop()` (the bus calls it at shutdown) waits for work running on the Asio threads
/// to finish; work still queued in Asio afterwards does nothing when it runs. The Asio
/// executor must outlive the bus's use of it. `bus.drain()` waits for the Asio threads
/// to run the work, so it must not be called from the only thread that runs them.
template <class AsioExecutor>
class asio_executor final : public executor {
public:
    /// Posts to `target`, which `concurrency` threads run (at least 1).
    explicit asio_executor(AsioExecutor target, std::size_t concurrency = 1)
        : target_(std::move(target)), concurrency_(concurrency == 0 ? 1 : concurrency) {}

    asio_executor(const asio_executor&) = delete;
    asio_executor& operator=(const asio_executor&) = delete;
    ~asio_executor() override { stop(); }

    /// Posts `work` to the Asio executor. After `stop()` the task is released without
    /// running. Throws what `boost::asio::post` throws (the bus then fails the
    /// deliveries it carried, as with any executor that refuses work).
    void post(detail::task_ptr work) override {
        if (state_->stopped.load(std::memory_order_acquire)) {
            return;
        }
        boost::asio::post(target_, [state = state_, task = std::move(work)]() mutable {
            state->running.fetch_add(1, std::memory_order_acq_rel);
            if (!state->stopped.load(std::memory_order_acquire)) {
                task->run();
            }
            task.reset();
            state->running.fetch_sub(1, std::memory_order_acq_rel);
        });
    }

    [[nodiscard]] std::size_t concurrency() const noexcept override { return concurrency_; }
    /// "asio".
    [[nodiscard]] std::string label() const override { return "asio"; }

    /// Runs no more work, and waits for herald's work running on the Asio threads now.
    /// Idempotent.
    void stop() override {
        state_->stopped.store(true, std::memory_order_seq_cst);
        while (state_->running.load(std::memory_order_seq_cst) != 0) {
            std::this_thread::yield();
        }
    }

    /// The Asio executor it posts to.
    [[nodiscard]] const AsioExecutor& target() const noexcept { return target_; }

private:
    struct shared_state {
        std::atomic<bool> stopped{false};
        std::atomic<int> running{0};
    };

    AsioExecutor target_;
    const std::size_t concurrency_;
    std::shared_ptr<shared_state> state_ = std::make_shared<shared_state>();
};

/// `asio_executor` for `target` (an `io_context::executor_type`, a strand, ...), which
/// `concurrency` threads run.
template <class AsioExecutor>
std::shared_ptr<asio_executor<AsioExecutor>> make_asio_executor(AsioExecutor target, std::size_t concurrency = 1) {
    return std::make_shared<asio_executor<AsioExecutor>>(std::move(target), concurrency);
}

} // namespace herald
