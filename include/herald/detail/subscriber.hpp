// A subscriber: a handler, its filter, its queue, and the gate that makes unsubscribe safe.
#pragma once

#include <herald/config.hpp>
#include <herald/detail/concurrentqueue.hpp>
#include <herald/detail/core.hpp>
#include <herald/detail/tracking.hpp>
#include <herald/envelope.hpp>
#include <herald/errors.hpp>
#include <herald/executor.hpp>
#include <herald/publish_result.hpp>
#include <herald/subscribe_options.hpp>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

namespace herald::detail {

/// The metadata of an envelope that an error report needs, independent of the event type.
struct envelope_meta {
    event_id id;
    std::uint64_t sequence = 0;
    std::uint32_t attempt = 1;
};

/// Counters of one subscriber, readable while it runs.
struct subscriber_counters {
    std::uint64_t delivered = 0;
    std::uint64_t failed = 0;
    std::uint64_t discarded = 0;
};

/// A subscriber's live counters, in their own block so the subscription handle can read
/// them after the subscriber itself is gone.
struct counter_block {
    std::atomic<std::uint64_t> delivered{0};
    std::atomic<std::uint64_t> failed{0};
    std::atomic<std::uint64_t> discarded{0};

    [[nodiscard]] subscriber_counters read() const noexcept {
        return {delivered.load(std::memory_order_relaxed), failed.load(std::memory_order_relaxed),
                discarded.load(std::memory_order_relaxed)};
    }
};

/// The untyped part of a subscriber: identity, lifetime gate and counters.
class subscriber_base : public task, public std::enable_shared_from_this<subscriber_base> {
public:
    subscriber_base(std::string subscriber_name, delivery how, ordering order, tracked_objects tracking,
                    executor* runs_on, const std::shared_ptr<topic_core>& on_topic)
        : name(std::move(subscriber_name)),
          mode(how),
          order_(order),
          track_(std::move(tracking)),
          exec_(runs_on),
          topic_(on_topic.get()),
          topic_weak_(on_topic),
          bus_(on_topic->bus) {}

    ~subscriber_base() override {
        if (auto t = topic_weak_.lock()) {
            const auto c = stats_->read();
            t->retired_delivered.fetch_add(c.delivered, std::memory_order_relaxed);
            t->retired_failed.fetch_add(c.failed, std::memory_order_relaxed);
            t->retired_discarded.fetch_add(c.discarded, std::memory_order_relaxed);
        }
    }

    subscriber_base(const subscriber_base&) = delete;
    subscriber_base& operator=(const subscriber_base&) = delete;

    /// Stops delivery: after it returns no call of the handler is running or will start,
    /// except calls that are running on this very thread (unsubscribe from inside the
    /// handler). Queued events are discarded (and counted) by the executor later.
    void unsubscribe() noexcept {
        expire();
        wait_idle();
    }

    /// Stops delivery without waiting for running calls.
    void close() noexcept { gate_.fetch_or(closed_bit, std::memory_order_acq_rel); }

    [[nodiscard]] bool is_closed() const noexcept { return (gate_.load(std::memory_order_acquire) & closed_bit) != 0; }

    [[nodiscard]] subscriber_counters counters() const noexcept { return stats_->read(); }

    /// The counters, shared with the subscription handle.
    [[nodiscard]] std::shared_ptr<const counter_block> counter_handle() const noexcept { return stats_; }

    const std::string name;
    const delivery mode;

protected:
    enum class outcome { handled, failed, skipped };

    /// Runs `call` inside the gate, with tracked objects locked and failures reported.
    template <class Call>
    outcome guarded(const envelope_meta& meta, Call&& call) noexcept {
        if (!enter()) {
            return outcome::skipped;
        }
        const outcome result = call_entered(meta, call, false);
        leave();
        return result;
    }

    /// Runs `call` for a caller that already holds the gate. `sole_caller` says no other
    /// thread can be counting for this subscriber now (a serial strand), so the delivery
    /// counter can be bumped without a locked instruction.
    template <class Call>
    outcome call_entered(const envelope_meta& meta, Call& call, bool sole_caller) noexcept {
        std::optional<tracking_guard> pins;
        if (!track_.is_empty()) {
            pins.emplace(track_.slot());
            if (pins->is_expired()) {
                expire();
                return outcome::skipped;
            }
        }
        frame_scope frame(this, bus_);
        try {
            call();
        } catch (...) {
            stats_->failed.fetch_add(1, std::memory_order_relaxed);
            report(meta, std::current_exception());
            return outcome::failed;
        }
        if (sole_caller) {
            stats_->delivered.store(stats_->delivered.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        } else {
            stats_->delivered.fetch_add(1, std::memory_order_relaxed);
        }
        return outcome::handled;
    }

    void report(const envelope_meta& meta, std::exception_ptr error) noexcept {
        bus_->report(delivery_error{topic_->where.topic, name, meta.id, meta.sequence, meta.attempt, std::move(error)});
    }

    void count_discarded() noexcept { stats_->discarded.fetch_add(1, std::memory_order_relaxed); }

    /// Registers a caller with the gate; false (and nothing to undo) once closed.
    bool enter() noexcept {
        if ((gate_.fetch_add(1, std::memory_order_acq_rel) & closed_bit) != 0) {
            leave();
            return false;
        }
        return true;
    }

    void leave() noexcept {
        if ((gate_.fetch_sub(1, std::memory_order_acq_rel) & closed_bit) != 0) {
            gate_.notify_all();
        }
    }

    /// Posts this subscriber to its executor.
    void schedule() { exec_->post(shared_from_this()); }

    const ordering order_;
    tracked_objects track_;
    executor* const exec_;
    topic_core* const topic_;
    std::weak_ptr<topic_core> topic_weak_;
    bus_core* const bus_;
    /// Items queued but not yet taken by a worker (serial: decides who schedules).
    alignas(64) std::atomic<std::int64_t> pending_{0};

private:
    static constexpr std::uint32_t closed_bit = 1U << 31U;
    static constexpr std::uint32_t count_mask = closed_bit - 1U;

    void wait_idle() const noexcept {
        const std::uint32_t own = frames_of(this);
        for (auto v = gate_.load(std::memory_order_acquire); (v & count_mask) > own;
             v = gate_.load(std::memory_order_acquire)) {
            gate_.wait(v, std::memory_order_acquire);
        }
    }

    /// Closes the gate and leaves the topic's list, without waiting (a tracked object
    /// died during a call, or the first half of unsubscribe).
    void expire() noexcept {
        close();
        if (auto t = topic_weak_.lock()) {
            try {
                t->remove(*this);
            } catch (...) {
                // Removal only allocates a smaller list; if that fails the closed gate
                // still keeps the handler from running.
            }
        }
    }

    alignas(64) std::atomic<std::uint32_t> gate_{0};
    const std::shared_ptr<counter_block> stats_ = std::make_shared<counter_block>();
};

/// A subscriber of topics carrying `Event`.
template <class Event, class Traits>
class subscriber : public subscriber_base {
public:
    subscriber(subscribe_options<Event>&& options, std::string resolved_name, executor* runs_on,
               const std::shared_ptr<topic_core>& on_topic, bool handler_takes_envelope)
        : subscriber_base(std::move(resolved_name), options.mode, options.order, std::move(options.track), runs_on,
                          on_topic),
          needs_envelope(handler_takes_envelope || options.filter.reads_envelope()),
          filter_(std::move(options.filter)) {
        if (mode == delivery::async) {
            queue_.emplace(Traits::initial_queue_capacity);
            if (order_ == ordering::serial) {
                // A strand has one consumer at a time, so it may keep moodycamel's
                // consumer token; without it every dequeue re-scans the producers.
                consumer_.emplace(*queue_);
            }
        }
    }

    /// Applies the filter on the publisher's thread. A throwing filter is reported as a
    /// failure of this subscriber and the event is not delivered to it.
    [[nodiscard]] bool accepts(const envelope<Event>& env) noexcept {
        if (filter_.is_empty()) {
            return true;
        }
        try {
            return filter_(env);
        } catch (...) {
            report(meta_of(env), std::current_exception());
            return false;
        }
    }

    /// Inline delivery on the publisher's thread; the envelope is shared with other
    /// subscribers, so by-value handlers get a copy.
    void deliver_inline(envelope<Event>& env, publish_result& result) noexcept {
        switch (guarded(meta_of(env), [&] { invoke(env, false); })) {
        case outcome::handled:
            ++result.handled_inline;
            break;
        case outcome::failed:
            ++result.failed_inline;
            break;
        case outcome::skipped:
            break;
        }
    }

    /// Queues this subscriber's own copy; the caller has counted it in the drain epoch
    /// stamped on the envelope.
    template <class Env>
    void enqueue(Env&& env) {
        queue_->enqueue(std::forward<Env>(env));
        if (order_ == ordering::concurrent || pending_.fetch_add(1, std::memory_order_acq_rel) == 0) {
            schedule();
        }
    }

    /// Executor entry point: handles a batch (serial) or one event (concurrent).
    void run() noexcept override {
        std::optional<envelope<Event>> item;
        if (order_ == ordering::concurrent) {
            if (queue_->try_dequeue(item)) {
                topic_->end_flights(process(*item), 1);
            } else {
                reschedule();
            }
            return;
        }
        // A serial subscriber passes its gate once per batch, and settles the in-flight
        // counters (shared with publishers) once per batch, not once per event. Once the
        // gate closes, the rest of the batch is discarded: the closed bit is re-read
        // before every call.
        const bool open = enter();
        std::int64_t ended[2] = {0, 0};
        std::int64_t done = 0;
        while (done < static_cast<std::int64_t>(Traits::batch_size) && queue_->try_dequeue(*consumer_, item)) {
            ++ended[process_serial(*item, open)];
            item.reset();
            ++done;
        }
        if (open) {
            leave();
        }
        topic_->end_flights(0, ended[0]);
        topic_->end_flights(1, ended[1]);
        if (pending_.fetch_sub(done, std::memory_order_acq_rel) - done > 0) {
            reschedule();
        }
    }

    /// True when the handler or the filter reads the envelope's metadata.
    const bool needs_envelope;

    /// True when a filter was given.
    [[nodiscard]] bool has_filter() const noexcept { return !filter_.is_empty(); }

protected:
    /// Calls the user's handler; `owned` says the envelope may be moved from.
    virtual void invoke(envelope<Event>& env, bool owned) = 0;

private:
    static envelope_meta meta_of(const envelope<Event>& env) noexcept {
        return {env.id(), env.sequence(), env.attempt()};
    }

    /// `process` for a serial strand that holds the gate (if `open`) for the whole batch.
    std::uint8_t process_serial(envelope<Event>& env, bool open) noexcept {
        if (bus_->discarding.load(std::memory_order_acquire)) {
            bus_->dropped.fetch_add(1, std::memory_order_relaxed);
        } else if (!open || is_closed()) {
            count_discarded();
        } else {
            auto call = [&] { invoke(env, true); };
            if (call_entered(meta_of(env), call, true) == outcome::skipped) {
                count_discarded();
            }
        }
        return envelope_access::epoch(env);
    }

    /// Handles (or drops) one queued event; returns the drain epoch slot it counted in.
    std::uint8_t process(envelope<Event>& env) noexcept {
        if (bus_->discarding.load(std::memory_order_acquire)) {
            bus_->dropped.fetch_add(1, std::memory_order_relaxed);
        } else if (guarded(meta_of(env), [&] { invoke(env, true); }) == outcome::skipped) {
            count_discarded();
        }
        return envelope_access::epoch(env);
    }

    void reschedule() noexcept {
        try {
            schedule();
        } catch (...) {
            // Posting only fails when the executor cannot allocate; the events stay
            // queued and the next publish schedules the subscriber again.
        }
    }

    herald::filter<Event> filter_;
    std::optional<moodycamel::ConcurrentQueue<envelope<Event>>> queue_;
    std::optional<moodycamel::ConsumerToken> consumer_;
};

/// Adapts a user's handler to the envelope the bus delivers.
template <class Event, class Traits, class Handler>
class subscriber_impl final : public subscriber<Event, Traits> {
public:
    template <class H>
    subscriber_impl(H&& handler, subscribe_options<Event>&& options, std::string resolved_name, executor* runs_on,
                    const std::shared_ptr<topic_core>& on_topic)
        : subscriber<Event, Traits>(std::move(options), std::move(resolved_name), runs_on, on_topic,
                                    std::is_invocable_v<Handler&, const envelope<Event>&>),
          handler_(std::forward<H>(handler)) {}

private:
    void invoke(envelope<Event>& env, bool owned) override {
        if constexpr (std::is_invocable_v<Handler&, const envelope<Event>&>) {
            handler_(std::as_const(env));
        } else {
            // An async subscriber owns its copy, so a handler taking the event by value or
            // by rvalue reference may have it moved in; inline ones share the publisher's.
            if constexpr (std::is_invocable_v<Handler&, Event&&>) {
                if (owned) {
                    handler_(std::move(env).event());
                    return;
                }
            }
            if constexpr (std::is_invocable_v<Handler&, const Event&>) {
                handler_(std::as_const(env).event());
            } else {
                handler_(Event(std::as_const(env).event()));
            }
        }
    }

    Handler handler_;
};

} // namespace herald::detail
