// A fresh bus for one test: manual (or synchronous) execution, virtual time, recorded errors.
#pragma once

#include <herald/bus.hpp>
#include <herald/clock.hpp>
#include <herald/detail/chrono.hpp>
#include <herald/errors.hpp>
#include <herald/testing/manual_executor.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace herald::testing {

/// How a harness runs async subscribers.
enum class execution : std::uint8_t {
    /// Nothing runs until the test calls `run_one()` / `run_until_idle()` / `settle()`.
    manual,
    /// Every async subscriber runs inside `publish`, on the publisher's thread.
    synchronous,
};

/// A handler failure, copied out of the `delivery_error` so a test can look at it later.
struct recorded_error {
    std::string topic;
    std::string subscriber;
    event_id id;
    std::uint32_t attempt = 1;
    std::string message;
};

/// Settings of a harness.
struct harness_options {
    execution mode = execution::manual;
    std::string source = "test";
    std::size_t dead_letter_capacity = 1000;
    /// Seed of the bus's event ids: fixed, so every run of a test sees the same ids (and
    /// fault plans keyed on ids fail the same events).
    std::uint64_t id_seed = 1;
};

/// Everything a unit test of a bus-using component needs, fresh per test: a real
/// `herald::bus` (pass `bus()` to the component; it needs no test-only code path) whose
/// pools are all one manual (or synchronous) executor and whose timers follow a
/// `manual_clock`. Handler failures are recorded instead of printed. No global state: two
/// harnesses never share anything, and running a test twice gives the same result.
///
/// Thread safety: meant to be driven by one test thread; the bus itself stays thread-safe.
template <class Traits = default_bus_traits>
class basic_harness {
public:
    explicit basic_harness(harness_options options = {})
        : clock_(std::make_shared<manual_clock>()), executor_(make_executor(options.mode)), mode_(options.mode) {
        bus_options settings;
        settings.source = std::move(options.source);
        settings.default_executor = executor_;
        settings.pool_factory = [exec = executor_](std::size_t, const std::string&) { return exec; };
        settings.on_error = [this](const delivery_error& e) {
            std::lock_guard lock(errors_mutex_);
            errors_.push_back({std::string(e.topic), std::string(e.subscriber), e.id, e.attempt, e.message()});
        };
        settings.clock = clock_;
        settings.dead_letter_capacity = options.dead_letter_capacity;
        settings.id_seed = options.id_seed;
        bus_ = std::make_unique<basic_bus<Traits>>(std::move(settings));
    }

    basic_harness(const basic_harness&) = delete;
    basic_harness& operator=(const basic_harness&) = delete;

    /// Shuts the bus down (delivering what is queued) before the executor and clock go.
    ~basic_harness() { bus_.reset(); }

    /// The bus to hand to the code under test.
    [[nodiscard]] basic_bus<Traits>& bus() noexcept { return *bus_; }
    /// The virtual clock behind retries, backoff, aging and expiry.
    [[nodiscard]] manual_clock& clock() noexcept { return *clock_; }
    /// The clock as a shared pointer (for `idempotence_window::clock`).
    [[nodiscard]] std::shared_ptr<manual_clock> clock_ptr() const noexcept { return clock_; }

    /// Runs one queued task (one subscriber's turn); false when nothing was queued.
    bool run_one() { return manual() != nullptr && manual()->run_one(); }
    /// Runs the tasks queued now, not those they post; returns how many ran.
    std::size_t run_all() { return manual() != nullptr ? manual()->run_all() : 0; }
    /// Runs until nothing is queued; returns how many tasks ran.
    std::size_t run_until_idle() { return manual() != nullptr ? manual()->run_until_idle() : 0; }
    /// Tasks waiting to run.
    [[nodiscard]] std::size_t pending() const { return manual() != nullptr ? manual()->pending() : 0; }

    /// Moves virtual time forward by `step`, firing the timers that became due, and runs
    /// everything that became runnable (retries, and what their handlers publish).
    void advance(std::chrono::nanoseconds step) {
        clock_->advance(step);
        run_until_idle();
    }

    /// Runs until idle, then keeps advancing virtual time to the next waiting retry until
    /// none is left or `horizon` has passed; every retry schedule thus plays out in
    /// microseconds. Returns the virtual time that passed.
    std::chrono::nanoseconds settle(std::chrono::nanoseconds horizon = std::chrono::hours(24)) {
        const auto start = clock_->now();
        run_until_idle();
        while (auto due = next_due()) {
            if (*due - start > horizon) {
                break;
            }
            clock_->advance_to(*due);
            run_until_idle();
        }
        return clock_->now() - start;
    }

    /// Failures reported so far (a copy).
    [[nodiscard]] std::vector<recorded_error> errors() const {
        std::lock_guard lock(errors_mutex_);
        return errors_;
    }

    /// Forgets the recorded failures.
    void clear_errors() {
        std::lock_guard lock(errors_mutex_);
        errors_.clear();
    }

private:
    static std::shared_ptr<executor> make_executor(execution mode) {
        if (mode == execution::synchronous) {
            return std::make_shared<synchronous_executor>();
        }
        return std::make_shared<manual_executor>();
    }

    [[nodiscard]] manual_executor* manual() const noexcept {
        return mode_ == execution::manual ? static_cast<manual_executor*>(executor_.get()) : nullptr;
    }

    /// The due time of the earliest waiting timer, if any.
    [[nodiscard]] std::optional<clock_source::time_point> next_due() const {
        return herald::detail::bus_access::next_due(*bus_);
    }

    std::shared_ptr<manual_clock> clock_;
    std::shared_ptr<executor> executor_;
    execution mode_;
    mutable std::mutex errors_mutex_;
    std::vector<recorded_error> errors_;
    std::unique_ptr<basic_bus<Traits>> bus_;
};

/// The harness for `herald::bus`.
using harness = basic_harness<>;

} // namespace herald::testing
