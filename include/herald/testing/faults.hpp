// Fault injection: make a handler fail on chosen attempts, ids, calls, or at random (seeded).
#pragma once

#include <herald/detail/call_handler.hpp>
#include <herald/envelope.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <vector>

namespace herald::testing {

/// What an injected failure throws.
class injected_fault : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// When a faulty handler fails. Decisions depend only on the event id, the attempt and
/// the call count, never on timing, so a test fails the same way on every run.
class fault_plan {
public:
    /// Fail every attempt whose number is listed (1 is the first delivery).
    [[nodiscard]] static fault_plan on_attempts(std::initializer_list<std::uint32_t> attempts) {
        fault_plan p;
        p.attempts_.assign(attempts.begin(), attempts.end());
        return p;
    }
    /// Fail the first `n` calls (whatever the event).
    [[nodiscard]] static fault_plan first_calls(std::uint64_t n) {
        fault_plan p;
        p.first_calls_ = n;
        return p;
    }
    /// Fail every attempt of these events.
    [[nodiscard]] static fault_plan for_ids(std::vector<event_id> ids) {
        fault_plan p;
        p.ids_.insert(ids.begin(), ids.end());
        return p;
    }
    /// Fail each attempt with probability `p` (0..1), decided by a hash of `seed`, the
    /// event id and the attempt: reproducible, and independent of thread interleaving.
    [[nodiscard]] static fault_plan with_probability(double p, std::uint64_t seed) {
        if (!(p >= 0.0 && p <= 1.0)) {
            throw std::invalid_argument("herald::testing::fault_plan::with_probability: p must be in [0, 1]");
        }
        fault_plan plan;
        plan.probability_ = p;
        plan.seed_ = seed;
        return plan;
    }
    /// Fail every call (a poison subscriber).
    [[nodiscard]] static fault_plan always() { return with_probability(1.0, 0); }

    /// Run the handler first and fail afterwards: the side effect happened but the
    /// delivery counts as failed (a lost acknowledgement), so at-least-once redelivers.
    [[nodiscard]] fault_plan after_handler() && {
        after_ = true;
        return std::move(*this);
    }

    /// Whether call number `call` (0-based), carrying attempt `attempt` of `id`, fails.
    [[nodiscard]] bool fails(event_id id, std::uint32_t attempt, std::uint64_t call) const noexcept {
        for (const auto a : attempts_) {
            if (a == attempt) {
                return true;
            }
        }
        if (call < first_calls_ || ids_.contains(id)) {
            return true;
        }
        if (probability_ > 0.0) {
            std::uint64_t x = seed_ ^ id.high ^ (id.low * 0x9e3779b97f4a7c15ULL) ^ (std::uint64_t{attempt} << 48U);
            x = (x ^ (x >> 30U)) * 0xbf58476d1ce4e5b9ULL;
            x = (x ^ (x >> 27U)) * 0x94d049bb133111ebULL;
            x ^= x >> 31U;
            return static_cast<double>(x >> 11U) * 0x1.0p-53 < probability_;
        }
        return false;
    }

    [[nodiscard]] bool fails_after_handler() const noexcept { return after_; }

private:
    std::vector<std::uint32_t> attempts_;
    std::uint64_t first_calls_ = 0;
    std::unordered_set<event_id> ids_;
    double probability_ = 0.0;
    std::uint64_t seed_ = 0;
    bool after_ = false;
};

/// A handler wrapper that throws `injected_fault` when its plan says so (before the
/// handler runs, or after it with `after_handler()`). Copies share their counters, so a
/// copy kept by the test reads `calls()` and `injected()`. Thread-safe if the wrapped
/// handler is.
template <class Handler>
class faulty_handler {
public:
    faulty_handler(Handler handler, fault_plan plan)
        : handler_(std::make_shared<Handler>(std::move(handler))),
          plan_(std::make_shared<const fault_plan>(std::move(plan))),
          counts_(std::make_shared<counts>()) {}

    template <class Event>
        requires std::invocable < Handler&, const envelope<Event>
    & > || std::invocable<Handler&, const Event&> auto operator()(const envelope<Event>& env) const {
        const std::uint64_t call = counts_->calls.fetch_add(1, std::memory_order_relaxed);
        const bool fail = plan_->fails(env.id(), env.attempt(), call);
        if (fail && !plan_->fails_after_handler()) {
            throw_fault(env);
        }
        if constexpr (std::is_void_v<decltype(invoke(env))>) {
            invoke(env);
            if (fail) {
                throw_fault(env);
            }
        } else {
            auto result = invoke(env);
            if (fail) {
                throw_fault(env);
            }
            return result;
        }
    }

    /// Calls so far (all copies together).
    [[nodiscard]] std::uint64_t calls() const noexcept { return counts_->calls.load(std::memory_order_relaxed); }
    /// Failures injected so far.
    [[nodiscard]] std::uint64_t injected() const noexcept { return counts_->injected.load(std::memory_order_relaxed); }

private:
    struct counts {
        std::atomic<std::uint64_t> calls{0};
        std::atomic<std::uint64_t> injected{0};
    };

    template <class Event>
    decltype(auto) invoke(const envelope<Event>& env) const {
        return herald::detail::call_handler(*handler_, env);
    }

    template <class Event>
    [[noreturn]] void throw_fault(const envelope<Event>& env) const {
        counts_->injected.fetch_add(1, std::memory_order_relaxed);
        throw injected_fault("herald::testing: injected fault (attempt " + std::to_string(env.attempt()) + ")");
    }

    std::shared_ptr<Handler> handler_;
    std::shared_ptr<const fault_plan> plan_;
    std::shared_ptr<counts> counts_;
};

/// Wraps `handler` so it fails according to `plan`:
///
///     bus.subscribe<payments>(herald::testing::inject_faults(gateway_handler,
///                                                             herald::testing::fault_plan::on_attempts({1, 2})));
template <class Handler>
[[nodiscard]] faulty_handler<std::decay_t<Handler>> inject_faults(Handler&& handler, fault_plan plan) {
    return faulty_handler<std::decay_t<Handler>>(std::forward<Handler>(handler), std::move(plan));
}

} // namespace herald::testing
