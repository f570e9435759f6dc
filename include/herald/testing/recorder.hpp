// A recorder: subscribes to a topic and keeps every envelope published on it, for assertions.
#pragma once

#include <herald/bus.hpp>
#include <herald/detail/chrono.hpp>
#include <herald/envelope.hpp>
#include <herald/subscribe_options.hpp>
#include <herald/subscription.hpp>
#include <herald/testing/expectation.hpp>
#include <herald/topic.hpp>

#include <concepts>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace herald::testing {

namespace detail {
template <class T>
concept printable = requires(std::ostream& out, const T& value) {
    out << value;
};

/// One line per envelope: sequence, attempt if retried, and the event if it can be printed.
template <class Event>
void describe(std::ostream& out, const envelope<Event>& env) {
    out << "  #" << env.sequence();
    if (env.attempt() > 1) {
        out << " (attempt " << env.attempt() << ")";
    }
    if constexpr (printable<Event>) {
        out << ": " << env.event();
    } else {
        out << ": <give the event an operator<< to see it here>";
    }
    out << "\n";
}

template <class Pred, class Event>
bool test(const Pred& pred, const envelope<Event>& env) {
    if constexpr (std::predicate<const Pred&, const envelope<Event>&>) {
        return pred(env);
    } else {
        return pred(env.event());
    }
}
} // namespace detail

/// A predicate on an event or its envelope (for `matching`, `published_exactly`...).
template <class P, class Event>
concept event_predicate = std::predicate<const P&, const Event&> || std::predicate < const P&,
        const envelope<Event>
& > ;

/// Subscribes to topic `T` inline, so an event is recorded inside the `publish` that
/// carries it whatever the bus's executors do, and keeps a copy of every envelope. Every
/// member is thread-safe, so a recorder also serves tests with real threads
/// (`wait_for`). Unsubscribes when destroyed.
template <topic_type T>
class recorder {
public:
    using event_type = typename T::event_type;

    /// Starts recording what is published on `T` from now on.
    template <class Traits>
    explicit recorder(basic_bus<Traits>& bus, std::string name = "herald::testing::recorder")
        : state_(std::make_shared<state>()) {
        subscription_ = bus.template subscribe<T>(
            [s = state_](const envelope<event_type>& env) {
                {
                    std::lock_guard lock(s->mutex);
                    s->seen.push_back(env);
                }
                s->grew.notify_all();
            },
            {.name = std::move(name), .mode = inline_delivery});
    }

    /// Events recorded.
    [[nodiscard]] std::size_t count() const {
        std::lock_guard lock(state_->mutex);
        return state_->seen.size();
    }
    /// True when nothing was recorded.
    [[nodiscard]] bool empty() const { return count() == 0; }

    /// The last envelope recorded; throws `std::logic_error` when there is none.
    [[nodiscard]] envelope<event_type> last() const {
        std::lock_guard lock(state_->mutex);
        if (state_->seen.empty()) {
            throw std::logic_error("herald::testing::recorder::last(): nothing was published on '" +
                                   std::string(topic_name_v<T>) + "'");
        }
        return state_->seen.back();
    }

    /// Every envelope recorded, in publish order (per publishing thread).
    [[nodiscard]] std::vector<envelope<event_type>> all() const {
        std::lock_guard lock(state_->mutex);
        return state_->seen;
    }

    /// The events alone.
    [[nodiscard]] std::vector<event_type> events() const {
        std::vector<event_type> out;
        for (const auto& env : all()) {
            out.push_back(env.event());
        }
        return out;
    }

    /// The envelopes whose event (or envelope) satisfies `pred`.
    template <event_predicate<event_type> Pred>
    [[nodiscard]] std::vector<envelope<event_type>> matching(Pred pred) const {
        std::vector<envelope<event_type>> out;
        for (const auto& env : all()) {
            if (detail::test(pred, env)) {
                out.push_back(env);
            }
        }
        return out;
    }

    /// How many recorded events satisfy `pred`.
    template <event_predicate<event_type> Pred>
    [[nodiscard]] std::size_t count_if(Pred pred) const {
        return matching(std::move(pred)).size();
    }

    /// Waits until at least `n` events were recorded; false if `timeout` passed first.
    /// For tests with real threads; deterministic tests need no waiting.
    bool wait_for(std::size_t n, std::chrono::milliseconds timeout = std::chrono::seconds(5)) const {
        std::unique_lock lock(state_->mutex);
        return state_->grew.wait_for(lock, timeout, [&] { return state_->seen.size() >= n; });
    }

    /// Forgets what was recorded (to check what one call publishes).
    void clear() {
        std::lock_guard lock(state_->mutex);
        state_->seen.clear();
    }

    /// Nothing was published.
    [[nodiscard]] expectation published_nothing() const { return published_exactly(0); }

    /// Exactly `n` events were published.
    [[nodiscard]] expectation published_exactly(std::size_t n) const {
        const auto seen = all();
        if (seen.size() == n) {
            return expectation::pass();
        }
        std::ostringstream why;
        why << "expected " << n << " event(s) on topic '" << topic_name_v<T> << "', but " << seen.size()
            << (seen.size() == 1 ? " was" : " were") << " published" << listing(seen);
        return expectation::fail(why.str());
    }

    /// Exactly `n` of the events published satisfy `pred` (`what` describes it in the
    /// message, e.g. "with total 9.5").
    template <event_predicate<event_type> Pred>
    [[nodiscard]] expectation published_exactly(std::size_t n, Pred pred,
                                                std::string_view what = "matching the predicate") const {
        const auto seen = all();
        std::size_t matched = 0;
        for (const auto& env : seen) {
            matched += detail::test(pred, env) ? 1U : 0U;
        }
        if (matched == n) {
            return expectation::pass();
        }
        std::ostringstream why;
        why << "expected " << n << " event(s) " << what << " on topic '" << topic_name_v<T> << "', but " << matched
            << " of the " << seen.size() << " published matched" << listing(seen);
        return expectation::fail(why.str());
    }

    /// Exactly these events were published, in this order (compared with `==`).
    [[nodiscard]] expectation
    published_in_order(const std::vector<event_type>& expected) const requires std::equality_comparable<event_type> {
        const auto seen = all();
        bool same = seen.size() == expected.size();
        for (std::size_t i = 0; same && i < seen.size(); ++i) {
            same = seen[i].event() == expected[i];
        }
        if (same) {
            return expectation::pass();
        }
        std::ostringstream why;
        why << "expected these " << expected.size() << " event(s) in order on topic '" << topic_name_v<T> << "':\n";
        for (const auto& e : expected) {
            if constexpr (detail::printable<event_type>) {
                why << "  " << e << "\n";
            } else {
                why << "  <event>\n";
            }
        }
        why << "but " << seen.size() << " were published" << listing(seen);
        return expectation::fail(why.str());
    }

    /// One event per predicate was published, the i-th satisfying the i-th predicate.
    template <event_predicate<event_type>... Preds>
    [[nodiscard]] expectation published_matching_in_order(Preds... preds) const {
        const auto seen = all();
        const bool sized = seen.size() == sizeof...(Preds);
        bool same = sized;
        std::size_t i = 0;
        std::size_t first_bad = 0;
        auto check = [&](const auto& pred) {
            if (same && !detail::test(pred, seen[i])) {
                same = false;
                first_bad = i;
            }
            ++i;
        };
        if (sized) {
            (check(preds), ...);
        }
        if (same) {
            return expectation::pass();
        }
        std::ostringstream why;
        why << "expected " << sizeof...(Preds) << " event(s) on topic '"
            << topic_name_v<T> << "', each matching its predicate in order, but " << seen.size() << " were published"
            << (sized ? " and the event at position " + std::to_string(first_bad + 1) + " did not match its predicate"
                      : std::string())
            << listing(seen);
        return expectation::fail(why.str());
    }

private:
    struct state {
        std::mutex mutex;
        std::condition_variable grew;
        std::vector<envelope<event_type>> seen;
    };

    static std::string listing(const std::vector<envelope<event_type>>& seen) {
        if (seen.empty()) {
            return ".";
        }
        std::ostringstream out;
        out << ":\n";
        for (const auto& env : seen) {
            detail::describe(out, env);
        }
        return out.str();
    }

    std::shared_ptr<state> state_;
    subscription subscription_;
};

} // namespace herald::testing
