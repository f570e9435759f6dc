// Where asynchronous subscribers run: the executor interface the bus posts work to.
#pragma once

#include <herald/detail/chrono.hpp>

#include <cstddef>
#include <memory>
#include <string>

namespace herald {

namespace detail {
/// A unit of work the bus posts: usually "run this subscriber's queued events".
class task {
public:
    virtual ~task() = default;
    /// Runs the work. Never throws: the bus catches handler failures inside.
    virtual void run() noexcept = 0;
};
using task_ptr = std::shared_ptr<task>;
} // namespace detail

/// Runs the bus's work items. `herald::thread_pool` is the production executor; tests
/// may plug in others. Implementations must be thread-safe: `post` is called from any
/// publishing thread and from the executor's own threads.
class executor {
public:
    virtual ~executor() = default;
    /// Schedules `work->run()` to run once, soon, on one of the executor's threads.
    virtual void post(detail::task_ptr work) = 0;
    /// How many tasks may run at the same time (the number of worker threads).
    [[nodiscard]] virtual std::size_t concurrency() const noexcept = 0;
    /// Finishes the tasks already running, runs no new ones, and releases the threads.
    /// Idempotent. The bus calls it during shutdown, after it has drained or discarded
    /// its events.
    virtual void stop() = 0;
    /// How long a worker busy-polls for more work after a task before it sleeps (a
    /// low-latency pool's budget; zero for others). A serial subscriber whose queue ran
    /// dry polls it for as long before it gives its worker back, so that an event
    /// arriving within the budget starts without going through the executor.
    [[nodiscard]] virtual std::chrono::nanoseconds spin() const noexcept { return std::chrono::nanoseconds::zero(); }
    /// True when tasks wait for a worker (a subscriber polling for more gives its worker
    /// up at once then). Approximate; executors that cannot tell return false.
    [[nodiscard]] virtual bool has_waiting_tasks() const noexcept { return false; }
    /// For executors without threads of their own (a test's manual executor): runs every
    /// queued task on the calling thread and returns true if there was any. `drain()`
    /// calls it before waiting. Threaded executors return false.
    virtual bool drive() { return false; }
    /// A short name for reports and diagrams (`basic_bus::report()`, `topology()`).
    [[nodiscard]] virtual std::string label() const { return "executor"; }
};

} // namespace herald
