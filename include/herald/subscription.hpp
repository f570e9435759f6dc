// The RAII handle of a subscription: destroying it (or unsubscribe()) ends delivery.
#pragma once

#include <herald/detail/subscriber.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

namespace herald {

/// What one subscription has done so far, and its mailbox now.
///
/// Every event the subscription accepted (its filter let it through) ends in exactly one
/// of `delivered`, `failed`, `dropped`, `rejected`, `conflated`, `dead_lettered`,
/// `discarded` or `expired`, or still waits (`waiting`, or a retry on its timer): on a
/// fire-and-forget topic, once the bus is drained, `accepted` is their sum. On an
/// at-least-once topic `failed` counts failed attempts, and an event that finally fails
/// ends in `dead_lettered`.
struct subscription_stats {
    std::uint64_t accepted = 0;  ///< events its filter let through (all of them without a filter)
    std::uint64_t delivered = 0; ///< handler calls that returned normally
    std::uint64_t failed = 0;    ///< handler (or filter) calls that threw or returned a failure
    std::uint64_t discarded = 0; ///< queued events dropped because it had unsubscribed
    /// Events dropped by `shutdown(herald::discard)`, or by a full mailbox
    /// (`overflow::drop_oldest`, `drop_newest`, or a new key of a full conflating one).
    std::uint64_t dropped = 0;
    /// Events a full mailbox refused (`overflow::reject`, or `block` that timed out or
    /// was called from inside a handler).
    std::uint64_t rejected = 0;
    std::uint64_t conflated = 0;     ///< waiting events replaced by a newer one of the same key
    std::uint64_t retried = 0;       ///< retries scheduled after failures (at-least-once topics)
    std::uint64_t dead_lettered = 0; ///< events that ended as dead letters (failures, expiry, overflow)
    std::uint64_t expired = 0;       ///< queued events whose time-to-live ran out (priority topics)
    /// Events waiting in its mailbox now (async subscribers; 0 once it is disconnected).
    std::size_t waiting = 0;
    /// Its mailbox's capacity (`herald::unbounded` without a bound; 0 for inline ones).
    std::size_t capacity = 0;
    /// The most events that waited at once (exact for bounded mailboxes; for unbounded
    /// ones, the largest backlog the subscriber found when it started a batch).
    std::size_t high_water = 0;
    /// Time publishers spent blocked on its full mailbox (`overflow::block`), all together.
    std::chrono::nanoseconds blocked{0};
};

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
        const auto c = counters_->read();
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
        if (auto s = subscriber_.lock()) {
            const auto g = s->gauges();
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
