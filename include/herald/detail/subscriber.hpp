// An async subscriber's two halves: what a publisher does with it (offer, put, wake) and
// its strand (batches, going idle, giving a burst's memory back); and the handler type.
//
// Everything here except `subscriber_impl` is compiled once, whatever the topic: the
// event type is reached through `envelope_ops`, the policy through `policy_info`, and the
// queue through `mailbox_base` (see erased.hpp). Only `subscriber_impl<Event, Handler>`,
// which calls the handler and the filter, is instantiated per subscription type. The
// layers below: subscriber_core.hpp (gate, calls), subscriber_delivery.hpp (outcomes,
// retries, dead letters).
#pragma once

#include <herald/clock.hpp>
#include <herald/detail/chrono.hpp>
#include <herald/detail/core.hpp>
#include <herald/detail/erased.hpp>
#include <herald/detail/flow_gate.hpp>
#include <herald/detail/keyed_mailbox.hpp>
#include <herald/detail/ring_mailbox.hpp>
#include <herald/detail/stream_mailbox.hpp>
#include <herald/detail/subscriber_delivery.hpp>
#include <herald/detail/subscriber_strand.hpp>
#include <herald/detail/thread_slots.hpp>
#include <herald/envelope.hpp>
#include <herald/executor.hpp>
#include <herald/outcome.hpp>
#include <herald/subscribe_options.hpp>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace herald::detail {

/// A subscriber of any topic: identity, lifetime gate and counters
/// (`subscriber_core`), outcomes and retries (`subscriber_delivery`), its mailbox and
/// strand (`subscriber_strand`), and here what a publisher does with it: offer, the
/// bound's overflow rule, the put into whichever mailbox it has, the wake-up.
class subscriber_base : public subscriber_strand, public key_queue::handler {
public:
    explicit subscriber_base(subscriber_setup&& setup) : subscriber_strand(setup) {}

    // Not inlined into each `subscriber_impl`'s destructor: this one is compiled once,
    // instead of once per handler type (it tears down the queue, strings and counters).
    [[gnu::noinline]] ~subscriber_base() override {}

    subscriber_base(const subscriber_base&) = delete;
    subscriber_base& operator=(const subscriber_base&) = delete;

    /// What `offer` did with an event.
    enum class offered : std::uint8_t {
        declined,      ///< closed, a tracked object died, or the filter said no (or threw)
        queued,        ///< this subscriber's copy waits in its queue
        failed,        ///< the copy could not be made: a failed delivery, counted and reported
        refused,       ///< the mailbox was full (`reject`, or `block` that could not wait): counted
        dropped,       ///< the mailbox was full and dropped the new event (`drop_newest`): counted
        dead_lettered, ///< the mailbox was full and the event became a dead letter: counted
    };

    /// The async publish path for this subscriber, on the publisher's thread: decides
    /// whether it takes `env` (it is open, its tracked objects are alive and locked
    /// while the filter runs, its filter accepts), then queues its own copy (a move when
    /// `move`) at priority `level` (0 without priorities) and schedules it. Everything
    /// happens registered as a call (see `with_entry`), so `unsubscribe()` waits for the
    /// filter, and the strand knows when no publisher can still be putting into a queue
    /// it replaced. When `count_in` is given, the delivery is counted there in drain slot
    /// `slot` once it is taken (and released again if the copy fails). A throwing filter
    /// is a failed delivery (counted, reported); so is a copy whose constructor throws.
    /// An executor that refuses the work fails the waiting deliveries instead of
    /// stranding them (see `refused`). A serial subscriber that queued the copy is not
    /// scheduled here: the caller runs one light fence after all the puts of its publish,
    /// then calls `wake_if_idle` on each (one fence per publish, not per subscriber).
    [[gnu::always_inline]] offered offer(envelope_base& env, bool move, std::size_t level, clock_source::time_point now,
                                         topic_core* count_in, std::uint8_t slot) noexcept {
        offered what = offered::declined;
        bool must_wait = false;
        with_entry([&](caller /*who*/, std::uint32_t /*shard*/) __attribute__((always_inline)) {
            if (!passes(env)) {
                return;
            }
            stats_->count_accepted(current_slot);
            if (count_in != nullptr) {
                count_in->add_flight(slot);
            }
            if (flow_ && !flow_->try_reserve()) [[unlikely]] {
                must_wait = flow_->rule() == overflow::block && !inside_handler_of(bus_);
                if (must_wait) {
                    return; // waits below, without holding the registration
                }
                what = overflowed(env);
            } else {
                what = put_reserved(env, move, level, now);
            }
            if (what != offered::queued && count_in != nullptr) {
                count_in->end_flight(slot);
            }
        });
        if (must_wait) [[unlikely]] {
            what = offer_when_room(env, move, level, now, count_in, slot);
        }
        if (what == offered::queued && order_ == ordering::concurrent) {
            reschedule();
        }
        return what;
    }

    /// True when a queued copy must be followed by a fence and `wake_if_idle` (serial).
    [[nodiscard]] bool wakes_after_fence() const noexcept { return order_ == ordering::serial; }

protected:
    bool requeue(envelope_base& env) noexcept override {
        const std::size_t level = env.priority();
        bool copied = false;
        const bool open = with_entry([&](caller /*who*/, std::uint32_t /*shard*/) {
            if (flow_) {
                flow_->readmit(); // given back when the retry is taken out, like any event
            }
            copied = put_reserved(env, true, level, bus_->clock->now()) == offered::queued;
        });
        if (!open) {
            count_discarded(env); // unsubscribed while the retry waited
            return false;
        }
        if (!copied) {
            return false; // the copy failed: counted and reported as a failure
        }
        after_put();
        return true;
    }

private:
    /// Puts this subscriber's copy into the queue publishers use now; called inside an
    /// entry. Returns false when the copy could not be made (a failure, counted and
    /// reported here).
    [[gnu::always_inline]] bool put(envelope_base& env, bool move, std::size_t level,
                                    clock_source::time_point now) noexcept {
        mailbox_base& box = *live_.load(std::memory_order_acquire);
        try {
            if (box.what == mailbox_base::kind::stream) {
                static_cast<stream_mailbox&>(box).put_here(env, move, now);
            } else if (box.what == mailbox_base::kind::ring) {
                push_ring(static_cast<ring_mailbox&>(box), env, move);
            } else if (box.what == mailbox_base::kind::keyed) {
                push_keyed(static_cast<keyed_mailbox&>(box), env, move);
            } else {
                box.put(env, move, level, now);
            }
        } catch (...) {
            // The envelope's metadata is intact even when moving its event threw.
            fail(meta_of(env), call_failure{std::current_exception(), std::nullopt});
            return false;
        }
        return true;
    }

    /// Puts an event whose place (if bounded) is taken; gives the place back on failure.
    [[gnu::always_inline]] offered put_reserved(envelope_base& env, bool move, std::size_t level,
                                                clock_source::time_point now) noexcept {
        if (put(env, move, level, now)) [[likely]] {
            return offered::queued;
        }
        if (flow_) {
            flow_->release(1);
        }
        return offered::failed;
    }

    /// `overflow::block` on a full mailbox: waits for a place without holding the
    /// publisher's registration (so `unsubscribe()` does not wait for a blocked
    /// publisher), then registers again to put. Refused when the time runs out; discarded
    /// when the subscriber closed meanwhile. The accepted count and the drain count
    /// (`count_in`) were taken before.
    [[gnu::cold, gnu::noinline]] offered offer_when_room(envelope_base& env, bool move, std::size_t level,
                                                         clock_source::time_point now, topic_core* count_in,
                                                         std::uint8_t slot) noexcept {
        offered what = offered::refused;
        if (flow_->wait_for_room()) {
            what = offered::declined;
            const bool open = with_entry(
                [&](caller /*who*/, std::uint32_t /*shard*/) { what = put_reserved(env, move, level, now); });
            if (!open) {
                flow_->release(1);
                count_discarded(env);
            }
        } else {
            stats_->rejected.fetch_add(1, std::memory_order_relaxed);
            observe_drop(env, drop_reason::refused);
        }
        if (what != offered::queued && count_in != nullptr) {
            count_in->end_flight(slot);
        }
        return what;
    }

    /// A full bounded mailbox met one more event: applies the overflow rule (counted).
    [[gnu::cold, gnu::noinline]] offered overflowed(envelope_base& env) noexcept {
        switch (flow_->rule()) {
        case overflow::drop_newest:
        case overflow::drop_oldest: // a mailbox that can drop its oldest never gets here
        case overflow::conflate:
            stats_->dropped.fetch_add(1, std::memory_order_relaxed);
            observe_drop(env, drop_reason::dropped);
            return offered::dropped;
        case overflow::dead_letter: {
            call_failure why;
            why.told.emplace(nack("the subscriber's mailbox was full"));
            to_dead_letters(env, why, dead_letter_reason::overflow, 0);
            return offered::dead_lettered;
        }
        case overflow::block:
        case overflow::reject:
            break;
        }
        stats_->rejected.fetch_add(1, std::memory_order_relaxed);
        observe_drop(env, drop_reason::refused);
        return offered::refused;
    }

    /// Puts into a ring mailbox (drop-oldest or conflating); what it pushed out is counted
    /// and its drain count ended here, outside the ring's lock. Throws like a put.
    void push_ring(ring_mailbox& ring, envelope_base& env, bool move) {
        std::unique_ptr<stored_key> key;
        if (keys_) {
            key = keys_->extract(env);
        }
        ring_mailbox::displaced out;
        ring.push(env, move, std::move(key), out);
        if (out.env) {
            (out.conflated ? stats_->conflated : stats_->dropped).fetch_add(1, std::memory_order_relaxed);
            observe_drop(out.env.envelope(), out.conflated ? drop_reason::conflated : drop_reason::dropped);
            topic_->end_flight(envelope_access::epoch(out.env.envelope()));
        }
    }

    /// Puts into a keyed mailbox; a key that was idle gets its queue posted. Throws like
    /// a put (the key's extraction too). The key is looked up without allocating.
    void push_keyed(keyed_mailbox& keyed, envelope_base& env, bool move) {
        extracted_key key;
        keys_->extract_into(env, key);
        keyed.push(
            env, move, key.get(), [this] { return std::static_pointer_cast<subscriber_base>(shared_from_this()); },
            [this](const std::shared_ptr<key_queue>& idle) { reschedule_keyed(idle); });
    }

    /// One turn of a key's queue on a worker. Like a strand's batch, the turn passes the
    /// gate once and settles the in-flight counters once (a pass per event would trade
    /// the gate's cache line with the publishers' check of it every event); once the
    /// gate closes, the rest of the turn is discarded.
    void run_keyed(key_queue& queue) noexcept override {
        const bool open = enter();
        std::int64_t ended[2] = {0, 0};
        bool full = false;
        {
            const frame_scope holder(this, bus_, open);
            full = queue.run_batch(
                [&](envelope_base& env) {
                    const std::uint8_t slot = envelope_access::epoch(env);
                    if (process_entered(env, {}, true, open, false)) {
                        ++ended[slot];
                    }
                },
                [&] { return await_keyed(queue); }, [&](std::size_t count) { left_keyed(count); });
        }
        if (open) {
            leave();
        }
        topic_->end_flights(0, ended[0]);
        topic_->end_flights(1, ended[1]);
        if (full) {
            // A full batch: the worker goes to other keys, this one comes back later.
            reschedule_keyed(queue.shared_from_this());
        }
    }

    /// Posts a key queue; when the executor refuses, fails every event waiting for that
    /// key (reported with the executor's exception, like a refused strand) and tries to
    /// post again for what arrived meanwhile.
    void reschedule_keyed(const std::shared_ptr<key_queue>& queue) noexcept {
        try {
            exec_->post(queue);
        } catch (...) {
            refused_key(queue, std::current_exception());
        }
    }

    /// Like a strand that ran dry while events stream (see `more_soon`): looks at the
    /// key's queue once per `dry_nap` (each look pulls the line the publisher writes),
    /// for the executor's spin budget or `idle_poll` without one, and stops early when
    /// other tasks wait for the worker.
    bool await_keyed(const key_queue& queue) noexcept {
        const auto start = std::chrono::steady_clock::now();
        const auto until = start + std::max(exec_->spin(), idle_poll);
        auto look = start + dry_nap;
        for (auto now = start; now < until; now = std::chrono::steady_clock::now()) {
            if (now >= look) {
                if (queue.has_waiting()) {
                    return true;
                }
                if (exec_->has_waiting_tasks()) {
                    return false;
                }
                look = now + dry_nap;
            }
            for (int i = 0; i < 16; ++i) {
                cpu_pause();
            }
        }
        return queue.has_waiting();
    }

    void left_keyed(std::size_t count) noexcept {
        if (flow_) {
            flow_->release(count);
        }
    }

    [[gnu::cold, gnu::noinline]] void refused_key(const std::shared_ptr<key_queue>& queue,
                                                  std::exception_ptr error) noexcept {
        left_keyed(queue->drain_each([&](envelope_base& env) {
            const std::uint8_t slot = envelope_access::epoch(env);
            if (fail_item(env, error)) {
                topic_->end_flight(slot);
            }
        }));
    }

    /// After a put: schedules the subscriber if nobody else will. A serial subscriber
    /// is scheduled by the put that finds its strand idle; while the strand is
    /// scheduled or running, a put only reads `scheduled_`, so publisher and worker do
    /// not trade a cache line per event. The put and that read are ordered by
    /// `fences::light()` on this side and `fences::heavy()` in the strand's
    /// `keeps_strand`, between its release of the strand and its last look at the queue,
    /// so one of the two always sees the other (no event is left without a strand), and
    /// the publisher runs no full fence.
    void after_put() noexcept {
        if (order_ == ordering::by_key) {
            return; // the put posted the key's queue if it was idle
        }
        if (order_ == ordering::concurrent) {
            reschedule();
            return;
        }
        fences::light();
        wake_if_idle();
    }
};

/// Calls a user's handler and filter on the envelopes of `Event`: the only part of a
/// subscriber compiled per subscription type.
template <class Event, class Handler>
class subscriber_impl final : public subscriber_base {
public:
    template <class H>
    subscriber_impl(H&& handler, herald::filter<Event>&& filter, subscriber_setup&& setup)
        : subscriber_base(std::move(setup)), filter_(std::move(filter)), handler_(std::forward<H>(handler)) {}

private:
    using env_type = envelope<Event>;

    bool invoke(envelope_base& base, bool owned, std::optional<outcome>& told) override {
        auto& env = static_cast<env_type&>(base);
        if constexpr (std::is_invocable_v<Handler&, const env_type&>) {
            return settle(told, [&]() -> decltype(auto) { return handler_(std::as_const(env)); });
        } else if constexpr (std::is_invocable_v<Handler&, Event&&>) {
            // An async subscriber owns its copy, so a handler taking the event by value
            // or by rvalue reference may have it moved in; inline ones share the
            // publisher's, and retried events must survive the call.
            if (owned) {
                return settle(told, [&]() -> decltype(auto) { return handler_(std::move(env).event()); });
            }
            if constexpr (std::is_invocable_v<Handler&, const Event&>) {
                return settle(told, [&]() -> decltype(auto) { return handler_(std::as_const(env).event()); });
            } else {
                return settle(told, [&]() -> decltype(auto) { return handler_(Event(std::as_const(env).event())); });
            }
        } else {
            (void)owned;
            return settle(told, [&]() -> decltype(auto) { return handler_(std::as_const(env).event()); });
        }
    }

    bool test(const envelope_base& base) override { return filter_(static_cast<const env_type&>(base)); }

    template <class Call>
    static bool settle(std::optional<outcome>& told, Call&& call) {
        if constexpr (std::is_void_v<decltype(call())>) {
            call();
            return true;
        } else {
            outcome result = call();
            if (result.is_ack()) {
                return true;
            }
            told.emplace(std::move(result));
            return false;
        }
    }

    herald::filter<Event> filter_;
    Handler handler_;
};

} // namespace herald::detail
