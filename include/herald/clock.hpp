// Time for timers (retry backoff, priority aging and expiry): real or driven by a test.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <vector>

namespace herald {

/// Where a bus's timers read the time. Timers (retry backoff, priority aging, expiry)
/// measure intervals, so the time is monotonic; envelope times stay wall-clock.
///
/// `steady_clock_source` is the real one. `manual_clock` only moves when a test calls
/// `advance()`, and fires the timers that became due before `advance()` returns.
class clock_source {
public:
    using duration = std::chrono::nanoseconds;
    using time_point = std::chrono::time_point<std::chrono::steady_clock, duration>;

    virtual ~clock_source() = default;
    /// The current time; thread-safe, monotonic.
    [[nodiscard]] virtual time_point now() const noexcept = 0;
    /// True when time moves only through `advance()`: a bus then runs no timer thread
    /// and fires due timers from `advance()` instead.
    [[nodiscard]] virtual bool is_manual() const noexcept = 0;

    /// Called with the new time whenever a manual clock moves (never for a real clock).
    /// Returns a token for `unwatch`. Thread-safe.
    virtual std::uint64_t watch(std::function<void(time_point)> /*on_advance*/) { return 0; }
    /// Stops the callbacks of `watch`; when it returns, no callback of that token runs.
    virtual void unwatch(std::uint64_t /*token*/) noexcept {}
};

/// `std::chrono::steady_clock`. Stateless; share one instance freely.
class steady_clock_source final : public clock_source {
public:
    [[nodiscard]] time_point now() const noexcept override {
        return std::chrono::time_point_cast<duration>(std::chrono::steady_clock::now());
    }
    [[nodiscard]] bool is_manual() const noexcept override { return false; }
};

/// A clock that a test moves by hand. Starts at an arbitrary fixed time point (the same
/// on every run, so tests are reproducible). `advance(d)` moves it and synchronously fires
/// the timers of every bus using it that became due, in due order; their work is posted
/// to the buses' executors (call `bus.drain()` to wait for it).
///
/// Thread safety: every member may be called from any thread; `advance` calls are
/// serialised. Do not call `advance` from inside a timer callback.
class manual_clock final : public clock_source {
public:
    /// Starts at `start` (default: one hour after the epoch of steady_clock's time points).
    explicit manual_clock(time_point start = time_point{std::chrono::hours(1)}) : now_(start) {}

    [[nodiscard]] time_point now() const noexcept override {
        std::lock_guard lock(mutex_);
        return now_;
    }
    [[nodiscard]] bool is_manual() const noexcept override { return true; }

    /// Moves the time forward by `step` (negative steps throw `std::invalid_argument`)
    /// and fires the timers that became due.
    void advance(duration step) {
        if (step < duration::zero()) {
            throw std::invalid_argument("herald::manual_clock::advance: time cannot go backwards");
        }
        std::lock_guard advancing(advance_mutex_);
        time_point now;
        std::vector<std::shared_ptr<watcher>> targets;
        {
            std::lock_guard lock(mutex_);
            now_ += step;
            now = now_;
            targets = watchers_;
        }
        for (const auto& w : targets) {
            w->on_advance(now);
        }
    }

    /// Moves the time to `when` if it is later than now.
    void advance_to(time_point when) {
        const time_point current = now();
        if (when > current) {
            advance(when - current);
        }
    }

    std::uint64_t watch(std::function<void(time_point)> on_advance) override {
        std::lock_guard lock(mutex_);
        const std::uint64_t token = ++tokens_;
        watchers_.push_back(std::make_shared<watcher>(watcher{token, std::move(on_advance)}));
        return token;
    }

    void unwatch(std::uint64_t token) noexcept override {
        std::lock_guard advancing(advance_mutex_);
        std::lock_guard lock(mutex_);
        std::erase_if(watchers_, [token](const auto& w) { return w->token == token; });
    }

private:
    struct watcher {
        std::uint64_t token;
        std::function<void(time_point)> on_advance;
    };

    mutable std::mutex mutex_;
    std::recursive_mutex advance_mutex_;
    time_point now_;
    std::uint64_t tokens_ = 0;
    std::vector<std::shared_ptr<watcher>> watchers_;
};

} // namespace herald
