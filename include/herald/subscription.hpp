// The RAII handle of a subscription: destroying it (or unsubscribe()) ends delivery.
#pragma once

#include <herald/detail/chrono.hpp>
#include <herald/detail/subscriber.hpp>
#include <herald/metrics.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

namespace herald {

/// Owns one subscription. Move-only; destroying it unsubscribes.
///
/// Guarantee: once `unsubscribe()` (or the destructor) returns, the handler is not
/// running and will never be entered again, on any thread. Called from inside the
/// handler itself, it returns without waiting for that running call (and, from inside
/// any handler, filter or error handler of the bus, it stops waiting rather than
/// deadlock when another thread waits for this thread's running call). A subscription
/// may outlive its bus: it is then simply disconnected. Thread safety: distinct
/// subscription objects may be used concurrently; one object is not synchronised (like
/// `std::thread`), except that `unsubscribe()` may be called on it concurrently.
class [[nodiscard]] subscription {
public:
    /// A subscription that is not connected to anything.
    subscription() noexcept = default;

    /// Wraps a subscriber the bus created (used by `basic_bus::subscribe`).
    explicit subscription(const std::shared_ptr<detail::subscriber_base>& subscriber)
        : subscriber_(subscriber), counters_(subscriber->counter_handle()), name_(subscriber->name) {}

    subscription(subscription&& other) noexcept = default;
    subscription& operator=(subscription&& other) noexcept {
        if (this != &other) {
            unsubscribe();
            subscriber_ = std::move(other.subscriber_);
            counters_ = std::move(other.counters_);
            name_ = std::move(other.name_);
        }
        return *this;
    }
    subscription(const subscription&) = delete;
    subscription& operator=(const subscription&) = delete;

    ~subscription() { unsubscribe(); }

    /// Ends delivery (see the class comment for the guarantee). Idempotent; a no-op on an
    /// empty or already-disconnected subscription, or after the bus is gone. Unlike the
    /// other members, it may be called on one object from several threads at once (the
    /// running calls of a concurrent handler unsubscribing their own subscription).
    void unsubscribe() noexcept {
        // Only reads the handle (no reset), so concurrent calls on one object are safe.
        if (auto s = subscriber_.lock()) {
            s->unsubscribe();
        }
    }

    /// Gives up ownership: the subscription stays active until the bus shuts down (or a
    /// tracked object dies). Returns its name.
    std::string release() noexcept {
        subscriber_.reset();
        counters_.reset();
        return std::move(name_);
    }

    /// True while events can still reach the handler: false once unsubscribed, once the
    /// bus shut down, and as soon as a tracked object has died (which disconnects it).
    [[nodiscard]] bool is_connected() const noexcept {
        auto s = subscriber_.lock();
        return s && s->is_live();
    }

    /// The subscription's name (given in the options or generated).
    [[nodiscard]] const std::string& name() const noexcept { return name_; }

    /// What the handler has done so far; still readable after unsubscribing or after the
    /// bus is gone (zeros for an empty subscription).
    [[nodiscard]] subscription_stats stats() const noexcept {
        if (!counters_) {
            return {};
        }
        const auto s = subscriber_.lock();
        return stats_of(counters_->read(), s.get());
    }

    /// The stats of a subscriber from its counters and, while it exists, its gauges.
    [[nodiscard]] static subscription_stats stats_of(const detail::subscriber_counters& c,
                                                     detail::subscriber_base* subscriber) noexcept {
        subscription_stats out;
        out.accepted = c.accepted;
        out.delivered = c.delivered;
        out.failed = c.failed;
        out.discarded = c.discarded;
        out.dropped = c.dropped;
        out.rejected = c.rejected;
        out.conflated = c.conflated;
        out.retried = c.retried;
        out.dead_lettered = c.dead_lettered;
        out.expired = c.expired;
        if (subscriber != nullptr) {
            const auto g = subscriber->gauges();
            out.waiting = g.waiting;
            out.capacity = g.capacity;
            out.high_water = g.high_water;
            out.blocked = std::chrono::nanoseconds(static_cast<std::int64_t>(g.blocked_ns));
        }
        return out;
    }

private:
    std::weak_ptr<detail::subscriber_base> subscriber_;
    std::shared_ptr<const detail::counter_block> counters_;
    std::string name_;
};

} // namespace herald
