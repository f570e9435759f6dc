// Time for timers (retry backoff, priority aging and expiry): real or driven by a test.
#pragma once

#include <herald/detail/chrono.hpp>

#include <cstdint>
#include <functional>
#include <limits>
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

namespace detail {
/// `from + by`, clamped to `[time_point::min(), time_point::max()]` instead of
/// overflowing: a wait of `nanoseconds::max()` ends at `time_point::max()`, "never" for
/// every real clock. Constant-time, no UB for any inputs.
[[nodiscard]] constexpr clock_source::time_point saturating_add(clock_source::time_point from,
                                                                clock_source::duration by) noexcept {
    using rep = clock_source::duration::rep;
    const rep start = from.time_since_epoch().count();
    const rep step = by.count();
    if (step > 0 && start > std::numeric_limits<rep>::max() - step) {
        return clock_source::time_point::max();
    }
    if (step < 0 && start < std::numeric_limits<rep>::min() - step) {
        return clock_source::time_point::min();
    }
    return from + by;
}
} // namespace detail

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
    /// and fires the timers that became due. Time saturates: a step past the end of the
    /// clock leaves `now()` at `time_point::max()` (firing every timer due by then, those
    /// due at `max()` included), and later steps keep it there. It never wraps around.
    void advance(duration step) {
        if (step < duration::zero()) {
            throw std::invalid_argument("herald::manual_clock::advance: time cannot go backwards");
        }
        move([step](time_point from) { return detail::saturating_add(from, step); }, true);
    }

    /// Moves the time to `when` if it is later than now (otherwise does nothing).
    void advance_to(time_point when) {
        move([when](time_point from) { return when > from ? when : from; }, false);
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
    /// Sets the time to `target(now)` and tells the watchers, all under `advance_mutex_`
    /// (so concurrent moves are serialised and never undo each other). With `always`
    /// false, a target that is not later than now changes nothing and tells nobody.
    template <class Target>
    void move(Target target, bool always) {
        std::lock_guard advancing(advance_mutex_);
        time_point now;
        std::vector<std::shared_ptr<watcher>> targets;
        {
            std::lock_guard lock(mutex_);
            const time_point next = target(now_);
            if (!always && next <= now_) {
                return;
            }
            now_ = next;
            now = now_;
            targets = watchers_;
        }
        for (const auto& w : targets) {
            w->on_advance(now);
        }
    }

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
