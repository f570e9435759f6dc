// Idempotent consumers: a handler wrapper that handles each event id once.
#pragma once

#include <herald/clock.hpp>
#include <herald/detail/call_handler.hpp>
#include <herald/detail/chrono.hpp>
#include <herald/envelope.hpp>
#include <herald/outcome.hpp>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <type_traits>
#include <unordered_set>
#include <utility>

namespace herald {

/// How much an idempotent consumer remembers. An id is forgotten when more than
/// `max_ids` newer ids have been handled, or (if `max_age` is non-zero) once it was
/// handled longer than `max_age` ago by `clock`; a duplicate arriving after that is
/// handled again. Memory: about 40 bytes per remembered id.
struct idempotence_window {
    std::size_t max_ids = 100000;
    std::chrono::nanoseconds max_age{0};
    /// Time for `max_age` (empty: steady_clock); pass the bus's manual clock in tests.
    std::shared_ptr<clock_source> clock{};
};

/// Wraps a handler so that it runs at most once per event id, which turns at-least-once
/// delivery into effectively-exactly-once for that handler (within the window).
///
/// An id counts as handled only when the handler succeeded (returned, or returned
/// `ack()`); if it throws or returns a failure the id is not remembered, so the retry
/// runs it again. A duplicate that arrives while the first delivery of the id is still
/// running is skipped (reported as success): should the first fail, its own retry
/// redelivers. Thread-safe: copies share one memory, so it may serve a concurrent
/// subscriber, and a copy kept by the caller reads `skipped()`.
template <class Handler>
class idempotent_handler {
public:
    idempotent_handler(Handler handler, idempotence_window window)
        : handler_(std::make_shared<Handler>(std::move(handler))),
          memory_(std::make_shared<memory>(std::move(window))) {}

    /// Handles `env` unless its id was handled already. Returns what the handler returns
    /// (`herald::outcome` or nothing).
    template <class Event>
        requires std::invocable < Handler&, const envelope<Event>
    & > || std::invocable<Handler&, const Event&> auto operator()(const envelope<Event>& env) const {
        using result = decltype(call(env));
        if (!memory_->begin(env.id())) {
            if constexpr (std::is_void_v<result>) {
                return;
            } else {
                return ack();
            }
        }
        struct on_exit {
            memory* m;
            event_id id;
            bool handled = false;
            ~on_exit() { m->end(id, handled); }
        } settle{memory_.get(), env.id()};
        if constexpr (std::is_void_v<result>) {
            call(env);
            settle.handled = true;
        } else {
            outcome out = call(env);
            settle.handled = out.is_ack();
            return out;
        }
    }

    /// Duplicates skipped so far (all copies together).
    [[nodiscard]] std::uint64_t skipped() const {
        std::lock_guard lock(memory_->mutex);
        return memory_->skipped;
    }

    /// Ids remembered now.
    [[nodiscard]] std::size_t remembered() const {
        std::lock_guard lock(memory_->mutex);
        return memory_->order.size();
    }

private:
    template <class Event>
    decltype(auto) call(const envelope<Event>& env) const {
        return detail::call_handler(*handler_, env);
    }

    struct memory {
        explicit memory(idempotence_window w)
            : window(std::move(w)), clock(window.clock ? window.clock : std::make_shared<steady_clock_source>()) {}

        /// True when the caller should handle `id` (and it is now marked as running).
        bool begin(event_id id) {
            std::lock_guard lock(mutex);
            forget_old();
            if (done.contains(id) || running.contains(id)) {
                ++skipped;
                return false;
            }
            running.insert(id);
            return true;
        }

        void end(event_id id, bool handled) noexcept {
            std::lock_guard lock(mutex);
            running.erase(id);
            if (!handled || window.max_ids == 0) {
                return;
            }
            try {
                done.insert(id);
                order.push_back({id, clock->now()});
            } catch (...) {
                done.erase(id); // out of memory: forget it, a duplicate is handled again
                return;
            }
            forget_old();
        }

        void forget_old() noexcept {
            const bool aged = window.max_age.count() > 0;
            const auto now = aged ? clock->now() : clock_source::time_point{};
            while (!order.empty() &&
                   (order.size() > window.max_ids || (aged && now - order.front().when > window.max_age))) {
                done.erase(order.front().id);
                order.pop_front();
            }
        }

        struct entry {
            event_id id;
            clock_source::time_point when;
        };

        idempotence_window window;
        std::shared_ptr<clock_source> clock;
        mutable std::mutex mutex;
        std::unordered_set<event_id> done;
        std::unordered_set<event_id> running;
        std::deque<entry> order;
        std::uint64_t skipped = 0;
    };

    std::shared_ptr<Handler> handler_;
    std::shared_ptr<memory> memory_;
};

/// Makes `handler` idempotent: see `idempotent_handler`.
///
///     bus.subscribe<payments>(herald::idempotent([&](const payment& p) { charge(p); }));
template <class Handler>
[[nodiscard]] idempotent_handler<std::decay_t<Handler>> idempotent(Handler&& handler, idempotence_window window = {}) {
    return idempotent_handler<std::decay_t<Handler>>(std::forward<Handler>(handler), std::move(window));
}

} // namespace herald
