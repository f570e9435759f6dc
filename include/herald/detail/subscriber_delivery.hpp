// What happens to a delivery after its call: success, failure, retry on a timer, dead
// letter, expiry. Compiled once, steered by the topic's `policy_info`.
#pragma once

#include <herald/clock.hpp>
#include <herald/dead_letter.hpp>
#include <herald/detail/chrono.hpp>
#include <herald/detail/core.hpp>
#include <herald/detail/erased.hpp>
#include <herald/detail/subscriber_core.hpp>
#include <herald/detail/timer_service.hpp>
#include <herald/envelope.hpp>
#include <herald/executor.hpp>
#include <herald/outcome.hpp>
#include <herald/publish_result.hpp>

#include <atomic>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <utility>

namespace herald::detail {

/// A subscriber's deliveries from the call on: inline deliveries, queued ones handed
/// over by the strand (`process`), and, on retrying topics, the retries (timed tasks that
/// put the event back into the subscriber's own queue, see `requeue`) and dead letters.
class subscriber_delivery : public subscriber_core, public std::enable_shared_from_this<subscriber_delivery> {
public:
    explicit subscriber_delivery(subscriber_setup& setup) : subscriber_core(setup) {}

    /// Inline delivery on the publisher's thread; the envelope is shared with other
    /// subscribers, so by-value handlers get a copy. The filter and the handler run in
    /// one registration (and under one lock of the tracked objects). A failure on a
    /// retrying topic schedules the retry (counted in the publish's drain slot) or
    /// dead-letters.
    [[gnu::always_inline]] void deliver_inline(envelope_base& env, publish_result& result) noexcept {
        call_failure why;
        outcome_kind got = outcome_kind::skipped;
        std::uint32_t counted_in = counter_block::shards;
        // Inlined by force: this is the per-subscriber cost of an inline publish.
        with_entry([&](caller who, std::uint32_t shard) __attribute__((always_inline)) {
            counted_in = who == caller::announced ? shard : counter_block::shards;
            if (!track_.is_empty()) {
                got = inline_tracked(env, who, why, shard);
            } else if (!has_filter_ || run_filter(env)) {
                got = run_call(env, false, who, why, shard);
            }
        });
        // The filter let it through (a filter that throws is a failure, not accepted). A
        // call announced in the thread's shard that succeeded is counted as accepted by
        // its delivery count already (see `counter_block::count_inline`).
        if (got == outcome_kind::failed || (got == outcome_kind::handled && counted_in >= counter_block::shards)) {
            stats_->count_accepted_in(counted_in);
        }
        switch (got) {
        case outcome_kind::handled:
            ++result.handled_inline;
            break;
        case outcome_kind::failed:
            ++result.failed_inline;
            if (policy_.retrying && !settle_failure(env, why, true, false)) {
                ++result.retrying_inline;
            }
            break;
        case outcome_kind::skipped:
            break;
        }
    }

protected:
    /// Puts a retried envelope back into this async subscriber's queue and schedules it
    /// and schedules it; returns false when it was not queued (closed: counted as
    /// discarded; or its copy failed: a reported failure), and the caller ends its drain
    /// count.
    virtual bool requeue(envelope_base& env) noexcept = 0;

    /// Handles (or drops) one item: a queued one (`queued`, which waited since
    /// `enqueued`) or an inline subscriber's retry. `entered` says the caller holds the
    /// gate; `strand` says the caller is the only thread running this subscriber, and
    /// that it keeps the gate (otherwise the gate is left here). The caller owns `env`.
    /// Returns true when the delivery reached its final outcome, false when a retry now
    /// holds it.
    bool process(envelope_base& env, clock_source::time_point enqueued, bool queued, bool entered,
                 bool strand) noexcept {
        if (!entered || strand) {
            return process_entered(env, enqueued, queued, entered, strand); // a strand's frame is its batch's
        }
        bool final = true;
        {
            const frame_scope holder(this, bus_, true);
            final = process_entered(env, enqueued, queued, true, false);
        }
        leave();
        return final;
    }

    bool process_entered(envelope_base& env, clock_source::time_point enqueued, bool queued, bool entered,
                         bool strand) noexcept {
        if (bus_->discarding.load(std::memory_order_acquire)) {
            count_dropped(env);
            return true;
        }
        if (!entered || is_closed()) {
            count_discarded(env);
            return true;
        }
        if (queued && expired(enqueued)) {
            return expire_item(env);
        }
        call_failure why;
        const outcome_kind result = call_entered(env, !policy_.retrying, strand ? caller::strand : caller::any, why);
        if (result == outcome_kind::skipped) {
            count_discarded(env);
        } else if (policy_.retrying && result == outcome_kind::failed) {
            return settle_failure(env, why, false, true);
        }
        return true;
    }

    /// One delivery that could not be scheduled: a failure, like a throwing handler.
    bool fail_item(envelope_base& env, const std::exception_ptr& error) noexcept {
        if (bus_->discarding.load(std::memory_order_acquire)) {
            count_dropped(env);
            return true;
        }
        if (is_closed()) {
            count_discarded(env);
            return true;
        }
        const call_failure why{error, std::nullopt};
        fail(meta_of(env), why);
        return settle_failure(env, why, false, true);
    }

    /// Whether a queued item outlived its time-to-live (priority lanes only; a retry of
    /// an inline subscriber carries no queue time and never expires).
    [[nodiscard]] bool expired(clock_source::time_point enqueued) const noexcept {
        return policy_.lanes.ttl_ns > 0 && (bus_->clock->now() - enqueued).count() >= policy_.lanes.ttl_ns;
    }

    /// An event outlived its time-to-live: dropped and counted, or dead-lettered.
    bool expire_item(envelope_base& env) noexcept {
        stats_->expired.fetch_add(1, std::memory_order_relaxed);
        observe_drop(env, drop_reason::expired);
        if (policy_.expired_to_dead_letters) {
            to_dead_letters(env, call_failure{}, dead_letter_reason::expired, env.attempt() - 1);
        }
        return true;
    }

    /// After a failed attempt on a retrying topic: schedules the next attempt, or
    /// dead-letters. `from_inline` says the failure happened on the publisher's thread
    /// (the retry then runs on the bus's default pool); `owned` says the caller owns
    /// `env`, so the retry may move it (otherwise it copies). Returns true when the
    /// delivery is final (dead-lettered), false when a retry was scheduled.
    bool settle_failure(envelope_base& env, const call_failure& why, bool from_inline, bool owned) noexcept {
        if (!policy_.retrying) {
            return true;
        }
        const std::uint32_t attempt = env.attempt();
        const bool rejected =
            (why.told && why.told->what() == outcome::kind::reject) || (why.error && !policy_.should_retry(why.error));
        dead_letter_reason reason = rejected ? dead_letter_reason::rejected : dead_letter_reason::attempts_exhausted;
        boxed_envelope kept;
        if (!rejected && attempt < policy_.attempts) {
            reason = dead_letter_reason::shutdown;
            if (!bus_->stopped.load(std::memory_order_acquire)) {
                const std::uint64_t random = mix64(env.id().low ^ mix64(env.id().high ^ attempt));
                const auto wait = why.told && why.told->what() == outcome::kind::retry_after
                                      ? why.told->wait()
                                      : policy_.backoff(attempt, random);
                if (schedule_retry(env, owned, wait, from_inline, kept)) {
                    return false;
                }
            }
        }
        to_dead_letters(kept ? *kept : env, why, reason, attempt);
        return true;
    }

    void to_dead_letters(const envelope_base& env, const call_failure& why, dead_letter_reason reason,
                         std::uint32_t attempts) noexcept {
        stats_->dead_lettered.fetch_add(1, std::memory_order_relaxed);
        if (bus_->observed) [[unlikely]] {
            bus_->notify([&](observer& o) { o.on_dead_letter(name, env, reason); });
        }
        topic_->dead_letter(env, name, attempts, reason, why);
    }

    /// A retry waiting for its time. With a real clock it keeps the delivery counted for
    /// drain(); with a manual clock it lets go (drain() does not wait for a test to move
    /// time) and counts itself again when it fires.
    class retry_task final : public timed_task {
    public:
        retry_task(std::shared_ptr<subscriber_delivery> target, boxed_envelope&& env, bool holds_flight)
            : target_(std::move(target)), env_(std::move(env)), holds_flight_(holds_flight) {}

        void fire() noexcept override { target_->redeliver(env_, holds_flight_); }
        void cancel() noexcept override { target_->cancel_retry(*env_, holds_flight_); }
        /// Gives the envelope back (the service refused the task).
        boxed_envelope release() noexcept { return std::move(env_); }

    private:
        std::shared_ptr<subscriber_delivery> target_;
        boxed_envelope env_;
        bool holds_flight_;
    };

    /// One retry of an inline subscriber, run on the bus's default pool.
    class inline_retry final : public task {
    public:
        inline_retry(std::shared_ptr<subscriber_delivery> target, boxed_envelope&& env)
            : target_(std::move(target)), env_(std::move(env)) {}
        void run() noexcept override { target_->retry_now(*env_); }
        envelope_base& held() noexcept { return *env_; }

    private:
        std::shared_ptr<subscriber_delivery> target_;
        boxed_envelope env_;
    };

    /// Hands a heap copy of `env` (a move when `owned`) to a timer that redelivers it
    /// after `wait`. Returns false when the timers are closed or memory ran out; the
    /// envelope is then in `kept` (or still in `env`).
    bool schedule_retry(envelope_base& env, bool owned, std::chrono::nanoseconds wait, bool from_inline,
                        boxed_envelope& kept) noexcept {
        const bool manual = bus_->clock->is_manual();
        const std::uint8_t slot = envelope_access::epoch(env);
        // A failure of an async delivery already holds its drain count; an inline one
        // counts the retry in the slot the publish's guard holds.
        if (from_inline && !manual) {
            topic_->add_flight(slot);
        }
        try {
            kept = boxed_envelope::of(ops_, env, owned);
            std::unique_ptr<timed_task> task =
                std::make_unique<retry_task>(shared_from_this(), std::move(kept), !manual);
            if (bus_->observed) [[unlikely]] {
                // Before the timer owns it: once scheduled, the retry may run (and end) at once.
                bus_->notify([&](observer& o) { o.on_retry(name, env, wait); });
            }
            if (bus_->timers.schedule(saturating_add(bus_->clock->now(), wait), task)) {
                stats_->retried.fetch_add(1, std::memory_order_relaxed);
                if (manual && !from_inline) {
                    topic_->end_flight(slot);
                }
                return true;
            }
            kept = static_cast<retry_task&>(*task).release();
        } catch (...) {
            // Out of memory (or the event's copy threw): the retry cannot be kept; the
            // caller dead-letters.
        }
        if (from_inline && !manual) {
            topic_->end_flight(slot);
        }
        return false;
    }

    /// The timer fired: queue the event again (async) or run it on the default pool
    /// (inline subscribers).
    void redeliver(boxed_envelope& held, bool holds_flight) noexcept {
        envelope_base& env = *held;
        envelope_access::set_attempt(env, env.attempt() + 1);
        std::uint8_t slot = envelope_access::epoch(env);
        if (!holds_flight) {
            slot = topic_->begin_flight(1, current_slot);
            envelope_access::set_epoch(env, slot);
        }
        if (mode == delivery::async) {
            if (!requeue(env)) {
                topic_->end_flight(slot);
            }
            return;
        }
        std::shared_ptr<inline_retry> task;
        try {
            task = std::make_shared<inline_retry>(shared_from_this(), std::move(held));
            exec_->post(task);
        } catch (...) {
            // The default pool refused the retry: a failed attempt like any other.
            envelope_base& left = task ? task->held() : env;
            const call_failure why{std::current_exception(), std::nullopt};
            fail(meta_of(left), why);
            if (settle_failure(left, why, false, true)) {
                topic_->end_flight(slot);
            }
        }
    }

    /// An inline subscriber's retry, on a worker of the default pool.
    void retry_now(envelope_base& env) noexcept {
        const std::uint8_t slot = envelope_access::epoch(env);
        if (process(env, {}, false, enter(), false)) {
            topic_->end_flight(slot);
        }
    }

    /// The bus shut down while the retry waited: dead-lettered with reason `shutdown`
    /// (with `herald::drain`), or dropped and counted (with `herald::discard`).
    void cancel_retry(envelope_base& env, bool holds_flight) noexcept {
        if (bus_->discarding.load(std::memory_order_acquire)) {
            count_dropped(env);
        } else {
            call_failure why;
            why.told.emplace(nack("the bus shut down while the retry waited"));
            to_dead_letters(env, why, dead_letter_reason::shutdown, env.attempt());
        }
        if (holds_flight) {
            topic_->end_flight(envelope_access::epoch(env));
        }
    }
};

} // namespace herald::detail
