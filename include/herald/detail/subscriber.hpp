// A subscriber: a handler, its filter, its queue, and the gate that makes unsubscribe safe.
//
// Everything here except `subscriber_impl` is compiled once, whatever the topic: the
// event type is reached through `envelope_ops`, the policy through `policy_info`, and the
// queue through `mailbox_base` (see erased.hpp). Only `subscriber_impl<Event, Handler>`,
// which calls the handler and the filter, is instantiated per subscription type.
#pragma once

#include <herald/clock.hpp>
#include <herald/config.hpp>
#include <herald/dead_letter.hpp>
#include <herald/detail/core.hpp>
#include <herald/detail/erased.hpp>
#include <herald/detail/stream_mailbox.hpp>
#include <herald/detail/thread_slots.hpp>
#include <herald/detail/timer_service.hpp>
#include <herald/envelope.hpp>
#include <herald/errors.hpp>
#include <herald/executor.hpp>
#include <herald/outcome.hpp>
#include <herald/policy/delivery_policy.hpp>
#include <herald/publish_result.hpp>
#include <herald/subscribe_options.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
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

/// What the delivery code needs to know of a topic's policy, as run-time values (one
/// constant per policy type, see `policy_info_of`).
struct policy_info {
    /// Failed deliveries are retried (`attempts` in all), then dead-lettered.
    bool retrying = false;
    std::uint32_t attempts = 0;
    std::chrono::nanoseconds (*backoff)(std::uint32_t retry, std::uint64_t random) noexcept = nullptr;
    bool (*should_retry)(const std::exception_ptr& error) noexcept = nullptr;
    /// Events wait in one lane per priority level (`lanes.levels`).
    bool prioritised = false;
    lane_rules lanes{};
    bool expired_to_dead_letters = false;
    /// Failed or expired deliveries end up on the dead-letter topic.
    bool has_dead_letters = false;
};

template <class Policy>
struct policy_table {
    static constexpr policy_info make() noexcept {
        policy_info info;
        if constexpr (retrying_policy<Policy>) {
            static_assert(static_cast<std::uint64_t>(Policy::attempts) <= max_attempts_limit,
                          "herald: a retrying policy allows at most 65535 attempts (P::attempts)");
            info.retrying = true;
            info.attempts = static_cast<std::uint32_t>(Policy::attempts);
            info.backoff = [](std::uint32_t retry, std::uint64_t random) noexcept {
                return Policy::backoff(retry, random);
            };
            info.should_retry = [](const std::exception_ptr& error) noexcept {
                return static_cast<bool>(Policy::should_retry(error));
            };
            info.has_dead_letters = true;
        }
        if constexpr (prioritising_policy<Policy>) {
            info.prioritised = true;
            info.lanes.levels = static_cast<std::size_t>(Policy::levels);
            info.lanes.aging_ns = Policy::aging_ns;
            info.lanes.ttl_ns = Policy::ttl_ns;
            info.expired_to_dead_letters = Policy::expired_to_dead_letters;
            info.has_dead_letters = info.has_dead_letters || Policy::expired_to_dead_letters;
        }
        return info;
    }
    static constexpr policy_info value = make();
};

/// The run-time description of `Policy`.
template <class Policy>
const policy_info& policy_info_of() noexcept {
    return policy_table<Policy>::value;
}

/// Everything a subscriber is made of, except its handler and filter.
struct subscriber_setup {
    std::string name;
    delivery mode = delivery::async;
    ordering order = ordering::serial;
    tracked_objects track;
    /// The executor it runs on (async) or retries on (inline).
    executor* exec = nullptr;
    std::shared_ptr<topic_core> topic;
    const envelope_ops* ops = nullptr;
    const policy_info* policy = nullptr;
    /// The handler or the filter reads the envelope's metadata.
    bool needs_envelope = false;
    bool has_filter = false;
    /// Async only: where its events wait.
    std::unique_ptr<mailbox_base> box;
};

/// A subscriber of any topic: identity, lifetime gate, counters, queue, strand, retries.
/// The topic's delivery policy decides what a failure leads to (a report, or a retry and
/// eventually a dead letter) and how the queue is organised (one FIFO lane, or one lane
/// per priority level).
class subscriber_base : public task, public std::enable_shared_from_this<subscriber_base> {
public:
    explicit subscriber_base(subscriber_setup&& setup)
        : name(std::move(setup.name)),
          mode(setup.mode),
          needs_envelope(setup.needs_envelope),
          order_(setup.order),
          track_(std::move(setup.track)),
          exec_(setup.exec),
          topic_(setup.topic.get()),
          topic_weak_(setup.topic),
          bus_(setup.topic->bus),
          ops_(*setup.ops),
          policy_(*setup.policy),
          has_filter_(setup.has_filter),
          box_(std::move(setup.box)) {
        live_.store(box_.get(), std::memory_order_release);
    }

    // Not inlined into each `subscriber_impl`'s destructor: this one is compiled once,
    // instead of once per handler type (it tears down the queue, strings and counters).
    [[gnu::noinline]] ~subscriber_base() override {}

    subscriber_base(const subscriber_base&) = delete;
    subscriber_base& operator=(const subscriber_base&) = delete;

    /// Stops delivery: after it returns no call of the handler or the filter is running
    /// or will start, except calls running on this very thread (unsubscribe from inside
    /// the handler). Called from inside user code that herald runs, it stops waiting when
    /// another thread waits for a subscriber whose code this thread is running (two
    /// handlers unsubscribing each other), instead of deadlocking. Queued events are
    /// discarded (and counted) by the executor later.
    void unsubscribe() noexcept {
        expire();
        wait_idle();
    }

    /// Stops delivery without waiting for running calls.
    void close() noexcept { gate_.fetch_or(closed_bit, std::memory_order_acq_rel); }

    [[nodiscard]] bool is_closed() const noexcept { return (gate_.load(std::memory_order_acquire) & closed_bit) != 0; }

    /// Open, and no tracked object has died (a dead one closes the subscription now).
    [[nodiscard]] bool is_live() noexcept {
        if (is_closed()) {
            return false;
        }
        if (!track_.is_empty() && track_.expired()) {
            expire();
            return false;
        }
        return true;
    }

    /// `is_live()` without closing anything (callers that hold the topic's mutex).
    [[nodiscard]] bool looks_live() const noexcept { return !is_closed() && (track_.is_empty() || !track_.expired()); }

    [[nodiscard]] subscriber_counters counters() const noexcept { return stats_->read(); }

    /// The counters, shared with the subscription handle.
    [[nodiscard]] std::shared_ptr<const counter_block> counter_handle() const noexcept { return stats_; }

    /// True when some thread other than the caller waits in `unsubscribe()` for a
    /// subscriber whose code the caller is running: waiting any longer could close a cycle.
    static bool waited_for_by_others(const subscriber_base* waiting_on) noexcept {
        for (const running_frame* f = current_frame; f != nullptr; f = f->outer) {
            if (f->subscriber != nullptr) {
                const std::uint32_t mine = f->subscriber == waiting_on ? 1U : 0U;
                if (f->subscriber->waiters_.load(std::memory_order_seq_cst) > mine) {
                    return true;
                }
            }
        }
        return false;
    }

    /// True when a filter was given.
    [[nodiscard]] bool has_filter() const noexcept { return has_filter_; }

    /// What `offer` did with an event.
    enum class offered : std::uint8_t {
        declined, ///< closed, a tracked object died, or the filter said no (or threw)
        queued,   ///< this subscriber's copy waits in its queue
        failed,   ///< the copy could not be made: a failed delivery, counted and reported
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
    [[gnu::always_inline]] offered offer(envelope_base& env, bool move, std::size_t level,
                                         clock_source::time_point now, topic_core* count_in,
                                         std::uint8_t slot) noexcept {
        offered what = offered::declined;
        with_entry([&](caller /*who*/, std::uint32_t /*shard*/) __attribute__((always_inline)) {
            if (!passes(env)) {
                return;
            }
            if (count_in != nullptr) {
                count_in->add_flight(slot);
            }
            what = put(env, move, level, now) ? offered::queued : offered::failed;
            if (what == offered::failed && count_in != nullptr) {
                count_in->end_flight(slot);
            }
        });
        if (what == offered::queued && order_ == ordering::concurrent) {
            reschedule();
        }
        return what;
    }

    /// True when a queued copy must be followed by a fence and `wake_if_idle` (serial).
    [[nodiscard]] bool wakes_after_fence() const noexcept { return order_ == ordering::serial; }

    /// After a put and a light fence since (see `after_put`): schedules a serial
    /// subscriber whose strand is idle. While the strand is scheduled or running this
    /// only reads `scheduled_`, a line the strand writes once per idle transition.
    void wake_if_idle() noexcept {
        if (scheduled_.load(std::memory_order_relaxed) == 0 && scheduled_.exchange(1, std::memory_order_acq_rel) == 0) {
            reschedule();
        }
    }

    /// Inline delivery on the publisher's thread; the envelope is shared with other
    /// subscribers, so by-value handlers get a copy. The filter and the handler run in
    /// one registration (and under one lock of the tracked objects). A failure on a
    /// retrying topic schedules the retry (counted in the publish's drain slot) or
    /// dead-letters.
    [[gnu::always_inline]] void deliver_inline(envelope_base& env, publish_result& result) noexcept {
        call_failure why;
        outcome_kind got = outcome_kind::skipped;
        // Inlined by force: this is the per-subscriber cost of an inline publish.
        with_entry([&](caller who, std::uint32_t shard) __attribute__((always_inline)) {
            if (!track_.is_empty()) {
                got = inline_tracked(env, who, why, shard);
            } else if (!has_filter_ || run_filter(env)) {
                got = run_call(env, false, who, why, shard);
            }
        });
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

    /// Executor entry point: handles a batch (serial) or one event (concurrent).
    void run() noexcept override {
        if (order_ == ordering::concurrent) {
            run_one();
            return;
        }
        // A serial subscriber passes its gate once per batch, and settles the in-flight
        // counters (shared with publishers) once per batch, not once per event. Once the
        // gate closes, the rest of the batch is discarded: the closed bit is re-read
        // before every call.
        const bool open = enter();
        batch_tally tally;
        peak_ = std::max(peak_, static_cast<std::int64_t>(box_->size_approx()));
        {
            // The strand holds one gate count for the whole batch.
            const frame_scope holder(this, bus_, open);
            if (retired_ && !release_retired(open, tally)) {
                run_mixed(open, tally);
            } else {
                run_batch(open, tally);
            }
            maybe_shrink(open, tally);
        }
        if (open) {
            leave();
        }
        topic_->end_flights(0, tally.ended[0]);
        topic_->end_flights(1, tally.ended[1]);
        last_run_ = tally.done;
        // A full batch leaves the rest for the next turn (other subscribers on the pool
        // get theirs in between); a batch that ran dry hands the strand back.
        if (tally.done >= batch_limit() || keeps_strand()) {
            reschedule();
        }
    }

    const std::string name;
    const delivery mode;
    /// True when the handler or the filter reads the envelope's metadata.
    const bool needs_envelope;

protected:
    /// Calls the user's handler; `owned` says the envelope may be moved from. Returns
    /// true on success; false after storing a non-ack outcome the handler returned.
    virtual bool invoke(envelope_base& env, bool owned, std::optional<outcome>& told) = 0;
    /// Calls the user's filter (only when one was given).
    virtual bool test(const envelope_base& env) = 0;

private:
    enum class outcome_kind { handled, failed, skipped };

    /// Who runs a call, which decides how it is counted. `strand`: the only thread running
    /// this subscriber now (a serial strand), so the delivery counter needs no locked
    /// instruction; `announced`: an inline call announced in the thread's slot (counted
    /// in the thread's shard); `any`: anything else.
    enum class caller : std::uint8_t { any, strand, announced };

    /// Runs `body(who, shard)` registered as a caller of this subscriber, so that
    /// `unsubscribe()` waits for it; does nothing and returns false once closed. The
    /// registration is an announcement in the thread's slot (a store, a compiler barrier
    /// and a load, found by `wait_for_inline_calls`) or, without a slot or past its
    /// depth, a count in the gate.
    template <class Body>
    [[gnu::always_inline]] bool with_entry(Body&& body) noexcept {
        thread_slot* me = current_slot;
        if (me == nullptr || me->calls == thread_slot::depth) {
            if (!enter()) {
                return false;
            }
            // Orders the gate count before what the body reads (a strand replacing its
            // mailbox checks the count after publishing the new one).
            std::atomic_thread_fence(std::memory_order_seq_cst);
            {
                const frame_scope holder(this, bus_, true);
                body(caller::any, std::uint32_t{0});
            }
            leave();
            return true;
        }
        auto& entry = me->calling[me->calls++];
        entry.store(this, std::memory_order_relaxed);
        fences::light();
        const bool open = !is_closed();
        if (open) {
            body(caller::announced, me->index);
        }
        entry.store(nullptr, std::memory_order_release);
        --me->calls;
        return open;
    }

    /// Runs the handler for a caller that holds the gate or announced the call; `shard`
    /// is the announcing thread's slot index. Tracked objects are locked for the call;
    /// one that died closes the subscription and skips it.
    outcome_kind call_entered(envelope_base& env, bool owned, caller who, call_failure& why,
                              std::uint32_t shard = 0) noexcept {
        if (!track_.is_empty()) {
            return call_tracked(env, owned, who, why, shard);
        }
        return run_call(env, owned, who, why, shard);
    }

    /// The call itself, its counting and its failure report.
    [[gnu::always_inline]] outcome_kind run_call(envelope_base& env, bool owned, caller who, call_failure& why,
                                                 std::uint32_t shard) noexcept {
        bool acked = false;
        {
            const frame_scope frame(this, bus_, false);
            try {
                acked = invoke(env, owned, why.told);
            } catch (...) {
                why.error = std::current_exception();
            }
        }
        if (!acked) {
            fail(meta_of(env), why);
            return outcome_kind::failed;
        }
        switch (who) {
        case caller::strand:
            stats_->delivered.store(stats_->delivered.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
            break;
        case caller::announced:
            stats_->count_inline(shard);
            break;
        case caller::any:
            stats_->delivered.fetch_add(1, std::memory_order_relaxed);
            break;
        }
        return outcome_kind::handled;
    }

    /// `call_entered` for a subscription with tracked objects. (Kept apart so the
    /// untracked path does not reserve, and zero, the guard's storage on every call.)
    [[gnu::noinline]] outcome_kind call_tracked(envelope_base& env, bool owned, caller who, call_failure& why,
                                                std::uint32_t shard) noexcept {
        const tracking_guard pins(track_);
        if (pins.is_expired()) {
            expire();
            return outcome_kind::skipped;
        }
        return run_call(env, owned, who, why, shard);
    }

    /// An inline call of a tracked subscription: filter and handler under one lock.
    [[gnu::noinline]] outcome_kind inline_tracked(envelope_base& env, caller who, call_failure& why,
                                                  std::uint32_t shard) noexcept {
        const tracking_guard pins(track_);
        if (pins.is_expired()) {
            expire();
            return outcome_kind::skipped;
        }
        if (has_filter_ && !run_filter(env)) {
            return outcome_kind::skipped;
        }
        return run_call(env, false, who, why, shard);
    }

    /// Whether tracked objects are alive and the filter accepts; runs inside an entry.
    /// Tracked objects stay locked while the filter runs.
    bool passes(const envelope_base& env) noexcept {
        if (!track_.is_empty()) {
            return passes_tracked(env);
        }
        return !has_filter_ || run_filter(env);
    }

    [[gnu::noinline]] bool passes_tracked(const envelope_base& env) noexcept {
        const tracking_guard pins(track_);
        if (pins.is_expired()) {
            expire();
            return false;
        }
        return !has_filter_ || run_filter(env);
    }

    /// Applies the filter; one that throws is a failed delivery (counted, reported).
    bool run_filter(const envelope_base& env) noexcept {
        try {
            const frame_scope frame(this, bus_, false);
            return test(env);
        } catch (...) {
            fail(meta_of(env), call_failure{std::current_exception(), std::nullopt});
            return false;
        }
    }

    /// A failed delivery: counted, and reported to the error handler.
    void fail(const envelope_meta& meta, const call_failure& why) noexcept {
        stats_->failed.fetch_add(1, std::memory_order_relaxed);
        report(meta, why);
    }

    void report(const envelope_meta& meta, const call_failure& why) noexcept {
        std::string_view reason;
        if (why.told) {
            reason = why.told->reason();
        }
        // The error handler is user code of this bus: drain() inside it must refuse.
        const frame_scope frame(this, bus_, false);
        bus_->report(
            delivery_error{topic_->where.topic, name, meta.id, meta.sequence, meta.attempt, why.error, reason});
    }

    void count_discarded() noexcept { stats_->discarded.fetch_add(1, std::memory_order_relaxed); }

    /// A queued delivery dropped by `shutdown(discard)`: counted for the subscriber and the bus.
    void count_dropped() noexcept {
        stats_->dropped.fetch_add(1, std::memory_order_relaxed);
        bus_->dropped.fetch_add(1, std::memory_order_relaxed);
    }

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

    /// True when the gate holds more counts than `own` (registrations of other callers).
    [[nodiscard]] bool has_other_entries(std::uint32_t own) const noexcept {
        return (gate_.load(std::memory_order_seq_cst) & count_mask) > own;
    }

    /// Posts this subscriber to its executor.
    void schedule() { exec_->post(shared_from_this()); }

    /// Posts the subscriber; the caller owns its strand (or, concurrent, one delivery).
    void reschedule() noexcept {
        try {
            schedule();
        } catch (...) {
            refused(std::current_exception());
        }
    }

    /// Puts this subscriber's copy into the queue publishers use now; called inside an
    /// entry. Returns false when the copy could not be made (a failure, counted and
    /// reported here).
    [[gnu::always_inline]] bool put(envelope_base& env, bool move, std::size_t level,
                                    clock_source::time_point now) noexcept {
        mailbox_base& box = *live_.load(std::memory_order_acquire);
        try {
            if (box.what == mailbox_base::kind::stream) {
                static_cast<stream_mailbox&>(box).put_here(env, move, now);
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

    /// After a put: schedules the subscriber if nobody else will. A serial subscriber
    /// is scheduled by the put that finds its strand idle; while the strand is
    /// scheduled or running, a put only reads `scheduled_`, so publisher and worker do
    /// not trade a cache line per event. The put and that read are ordered by
    /// `fences::light()` on this side and `fences::heavy()` in the strand's
    /// `keeps_strand`, between its release of the strand and its last look at the queue,
    /// so one of the two always sees the other (no event is left without a strand), and
    /// the publisher runs no full fence.
    void after_put() noexcept {
        if (order_ == ordering::concurrent) {
            reschedule();
            return;
        }
        fences::light();
        wake_if_idle();
    }

    /// Called by the strand's owner when it found nothing more to do: lets the strand go,
    /// then looks once more; returns true when it took the strand back (a put came in
    /// between and saw it still scheduled), so the caller must schedule it.
    ///
    /// Once `scheduled_` is 0 a publisher may schedule the strand and another worker may
    /// run it, so the last look touches no strand-owned state: it reads, through
    /// thread-safe counts, the mailboxes it noted before letting go, and holds a gate
    /// count meanwhile so that the next owner cannot free a retired mailbox under it.
    [[nodiscard]] bool keeps_strand() noexcept {
        gate_.fetch_add(1, std::memory_order_acq_rel);
        mailbox_base* const live = box_.get();
        mailbox_base* const old = retired_.get();
        // Release: whoever takes the strand next sees everything this owner did.
        scheduled_.store(0, std::memory_order_release);
        // Pairs with the publisher's light fence after its put (see `after_put`).
        fences::heavy();
        const bool more = live->has_puts() || (old != nullptr && old->has_puts());
        leave();
        return more && scheduled_.exchange(1, std::memory_order_acq_rel) == 0;
    }

    /// How long a streaming strand that ran dry waits before its last look, how long
    /// one that handles events one at a time polls, and how many events a batch takes
    /// to count as streaming (see `more_soon`).
    static constexpr std::chrono::nanoseconds dry_nap{2000};
    static constexpr std::chrono::nanoseconds idle_poll{10000};
    static constexpr std::int64_t stream_run = 8;

    /// What a strand's batch took and finished, per drain slot.
    struct batch_tally {
        std::int64_t ended[2] = {0, 0};
        std::int64_t done = 0;
    };

    [[nodiscard]] std::int64_t batch_limit() const noexcept {
        return static_cast<std::int64_t>(bus_->settings.batch_size);
    }

    /// The time a priority mailbox compares waiting times with (not read without aging
    /// or expiry).
    [[nodiscard]] clock_source::time_point lane_time() const noexcept {
        return policy_.lanes.aging_ns > 0 || policy_.lanes.ttl_ns > 0 ? bus_->clock->now() : clock_source::time_point{};
    }

    /// Handles one item taken by the strand and counts it.
    void account(envelope_base& env, clock_source::time_point enqueued, bool open, batch_tally& tally) noexcept {
        const std::uint8_t slot = envelope_access::epoch(env);
        if (process(env, enqueued, true, open, true)) {
            ++tally.ended[slot];
        }
        ++tally.done;
    }

    /// The usual batch: up to `batch_size` items of the one mailbox, taken in chunks
    /// (a run of one publisher's events in a FIFO mailbox, one event in a priority
    /// mailbox) and handled in place. A strand that runs dry waits a little for more
    /// before it gives up (see `more_soon`).
    void run_batch(bool open, batch_tally& tally) noexcept {
        const std::int64_t limit = batch_limit();
        while (tally.done < limit) {
            const std::size_t got = box_->take_chunk(static_cast<std::size_t>(limit - tally.done), lane_time());
            if (got == 0) {
                if (!more_soon(tally.done)) {
                    break; // the queue ran dry
                }
                continue;
            }
            for (std::size_t i = 0; i < got; ++i) {
                account(box_->at(i), box_->enqueued(i), open, tally);
            }
            box_->release_chunk(got);
        }
    }

    /// Takes the next item of `box` (if any) and passes it to `handle(env, enqueued)`.
    template <class Handle>
    bool take_one(mailbox_base& box, Handle&& handle) noexcept {
        if (box.take_chunk(1, lane_time()) == 0) {
            return false;
        }
        handle(box.at(0), box.enqueued(0));
        box.release_chunk(1);
        return true;
    }

    /// A batch while a retired mailbox may still receive late puts: each publisher's
    /// earlier events are in the retired one, so it goes first, and is looked at again
    /// after every item taken from the new one (a publisher's put into the retired
    /// mailbox finished before its next put into the new one began).
    void run_mixed(bool open, batch_tally& tally) noexcept {
        const auto handle = [&](envelope_base& env, clock_source::time_point enqueued) {
            account(env, enqueued, open, tally);
        };
        while (tally.done < batch_limit()) {
            if (take_one(*retired_, handle)) {
                continue;
            }
            if (box_->take_chunk(1, lane_time()) == 0) {
                break;
            }
            while (take_one(*retired_, handle)) {
            }
            account(box_->at(0), box_->enqueued(0), open, tally);
            box_->release_chunk(1);
        }
    }

    /// True when no publisher can still be putting into the retired mailbox: none is
    /// registered as calling this subscriber (the registration precedes reading
    /// `live_`), and nobody but this strand holds the gate (registrations without a
    /// thread slot). The heavy fence in `maybe_shrink` made every later registration
    /// read the new mailbox.
    [[nodiscard]] bool retired_is_sealed(bool open) const noexcept {
        return !has_other_entries(open ? 1U : 0U) && !someone_calls(this);
    }

    /// Frees the retired mailbox once sealed, after handling what is left in it.
    bool release_retired(bool open, batch_tally& tally) noexcept {
        if (!retired_is_sealed(open)) {
            return false;
        }
        while (take_one(*retired_, [&](envelope_base& env, clock_source::time_point enqueued) {
            account(env, enqueued, open, tally);
        })) {
        }
        retired_.reset();
        return true;
    }

    /// After a backlog larger than `Traits::queue_shrink_threshold` has drained, gives
    /// the memory it took back: publishers are pointed at a fresh mailbox, and the old
    /// one is freed as soon as no publisher can still be putting into it (at once,
    /// unless one is in the middle of a put; then at a later batch).
    void maybe_shrink(bool open, batch_tally& tally) noexcept {
        const auto threshold = static_cast<std::int64_t>(bus_->settings.queue_shrink_threshold);
        if (threshold == 0 || !open || retired_ || peak_ <= threshold || !box_->looks_empty()) {
            return;
        }
        if (bus_->settings.queue_shrink_interval.count() > 0) {
            const auto now = std::chrono::steady_clock::now();
            if (shrunk_at_ && now - *shrunk_at_ < bus_->settings.queue_shrink_interval) {
                return;
            }
            shrunk_at_ = now;
        }
        std::unique_ptr<mailbox_base> fresh;
        try {
            fresh = box_->fresh();
        } catch (...) {
            return; // keep the old one; try again after the next large backlog
        }
        peak_ = 0;
        live_.store(fresh.get(), std::memory_order_seq_cst);
        retired_ = std::exchange(box_, std::move(fresh));
        fences::heavy();
        // A publisher caught in the middle of a put needs a moment.
        for (int spins = 0; spins < 256 && !retired_is_sealed(open); ++spins) {
            cpu_pause();
        }
        (void)release_retired(open, tally);
    }

    /// Called when the strand's queue ran dry after `done` items of this batch: decides
    /// whether to wait for more before letting the worker go, and how.
    ///
    /// While events stream (this batch or the last one handled at least
    /// `stream_run` items), it waits `dry_nap` without touching the queue, then looks
    /// once more: a worker that polled would take one or two events per look, and each
    /// look pulls the cache line the publisher is writing; one look after a short nap
    /// takes what arrived meanwhile in one run, and a publisher slightly slower than
    /// the handler does not pay for rescheduling the strand through the executor on
    /// every event. When events come one at a time it polls the queue for `idle_poll`
    /// instead (as a blocking queue's consumer spins before it sleeps), so the next one
    /// starts without a post through the executor. On an executor with a spin budget (a
    /// low-latency pool) it always polls, for the whole budget. Polling stops early
    /// when other tasks wait for the worker; either way the worker is held that long
    /// at most.
    bool more_soon(std::int64_t done) noexcept {
        const auto spin = exec_->spin();
        const bool streaming = done >= stream_run || last_run_ >= stream_run;
        const bool poll = spin > dry_nap || !streaming;
        const auto budget = spin > dry_nap ? spin : (streaming ? dry_nap : idle_poll);
        const auto until = std::chrono::steady_clock::now() + budget;
        do {
            for (int i = 0; i < 16; ++i) {
                if (poll && box_->has_puts()) {
                    return true;
                }
                cpu_pause();
            }
        } while (std::chrono::steady_clock::now() < until && !(poll && exec_->has_waiting_tasks()));
        return box_->has_puts();
    }

    /// Concurrent mode: one event per run, the gate passed per event.
    void run_one() noexcept {
        taken_item item;
        if (!box_->take_shared(item)) {
            reschedule();
            return;
        }
        const std::uint8_t slot = envelope_access::epoch(item.envelope());
        if (process(item.envelope(), item.enqueued(), true, enter(), false)) {
            topic_->end_flight(slot);
        }
    }

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
            count_dropped();
            return true;
        }
        if (!entered || is_closed()) {
            count_discarded();
            return true;
        }
        if (queued && expired(enqueued)) {
            return expire_item(env);
        }
        call_failure why;
        const outcome_kind result = call_entered(env, !policy_.retrying, strand ? caller::strand : caller::any, why);
        if (result == outcome_kind::skipped) {
            count_discarded();
        } else if (policy_.retrying && result == outcome_kind::failed) {
            return settle_failure(env, why, false, true);
        }
        return true;
    }

    /// The executor refused to run this subscriber (`post` threw): rather than leave
    /// its queue stranded, each delivery waiting at that moment fails with that
    /// exception (reported, counted, retried on retrying topics), then posting is tried
    /// again for whatever was queued meanwhile. The caller owns the strand (it scheduled
    /// it, or is it); a concurrent subscriber fails one delivery per refused post.
    void refused(std::exception_ptr error) noexcept {
        if (order_ == ordering::concurrent) {
            taken_item item;
            while (!box_->take_shared(item)) {
                cpu_pause(); // the delivery this post was for is in the queue
            }
            if (fail_item(item.envelope(), error)) {
                topic_->end_flight(envelope_access::epoch(item.envelope()));
            }
            return;
        }
        for (;;) {
            std::int64_t ended[2] = {0, 0};
            std::int64_t done = 0;
            // Only what waited before the refusal: an item queued while the ones before
            // it fail (a retry whose timer fired, a publish from another thread) was
            // never refused, and gets its own post below.
            const auto waiting =
                static_cast<std::int64_t>(box_->size_approx() + (retired_ ? retired_->size_approx() : 0));
            const auto fail_one = [&](envelope_base& env, clock_source::time_point /*enqueued*/) {
                ++done;
                const std::uint8_t slot = envelope_access::epoch(env);
                if (fail_item(env, error)) {
                    ++ended[slot];
                }
            };
            // The retired mailbox first: it holds each publisher's earlier events.
            while (done < waiting && ((retired_ && take_one(*retired_, fail_one)) || take_one(*box_, fail_one))) {
            }
            topic_->end_flights(0, ended[0]);
            topic_->end_flights(1, ended[1]);
            if (!keeps_strand()) {
                return;
            }
            try {
                schedule();
                return;
            } catch (...) {
                error = std::current_exception();
            }
        }
    }

    /// One delivery that could not be scheduled: a failure, like a throwing handler.
    bool fail_item(envelope_base& env, const std::exception_ptr& error) noexcept {
        if (bus_->discarding.load(std::memory_order_acquire)) {
            count_dropped();
            return true;
        }
        if (is_closed()) {
            count_discarded();
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
        topic_->dead_letter(env, name, attempts, reason, why);
    }

    /// A retry waiting for its time. With a real clock it keeps the delivery counted for
    /// drain(); with a manual clock it lets go (drain() does not wait for a test to move
    /// time) and counts itself again when it fires.
    class retry_task final : public timed_task {
    public:
        retry_task(std::shared_ptr<subscriber_base> target, boxed_envelope&& env, bool holds_flight)
            : target_(std::move(target)), env_(std::move(env)), holds_flight_(holds_flight) {}

        void fire() noexcept override { target_->redeliver(env_, holds_flight_); }
        void cancel() noexcept override { target_->cancel_retry(*env_, holds_flight_); }
        /// Gives the envelope back (the service refused the task).
        boxed_envelope release() noexcept { return std::move(env_); }

    private:
        std::shared_ptr<subscriber_base> target_;
        boxed_envelope env_;
        bool holds_flight_;
    };

    /// One retry of an inline subscriber, run on the bus's default pool.
    class inline_retry final : public task {
    public:
        inline_retry(std::shared_ptr<subscriber_base> target, boxed_envelope&& env)
            : target_(std::move(target)), env_(std::move(env)) {}
        void run() noexcept override { target_->retry_now(*env_); }
        envelope_base& held() noexcept { return *env_; }

    private:
        std::shared_ptr<subscriber_base> target_;
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
            const std::size_t level = env.priority();
            bool copied = false;
            const bool open = with_entry(
                [&](caller /*who*/, std::uint32_t /*shard*/) { copied = put(env, true, level, bus_->clock->now()); });
            if (!open) {
                count_discarded(); // unsubscribed while the retry waited
                topic_->end_flight(slot);
            } else if (!copied) {
                topic_->end_flight(slot); // the copy failed: counted and reported as a failure
            } else {
                after_put();
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
            count_dropped();
        } else {
            call_failure why;
            why.told.emplace(nack("the bus shut down while the retry waited"));
            to_dead_letters(env, why, dead_letter_reason::shutdown, env.attempt());
        }
        if (holds_flight) {
            topic_->end_flight(envelope_access::epoch(env));
        }
    }

    /// Waits for the calls that hold the gate (except this thread's own), then for the
    /// calls announced on other threads. A thread that runs no user code of herald's
    /// holds nothing anyone could wait for, so it simply sleeps; one inside a handler
    /// polls, and gives up when waiting could deadlock (see `waited_for_by_others`).
    void wait_idle() noexcept {
        const std::uint32_t own = gated_frames_of(this);
        waiters_.fetch_add(1, std::memory_order_seq_cst);
        if (current_frame == nullptr) {
            for (auto v = gate_.load(std::memory_order_acquire); (v & count_mask) > own;
                 v = gate_.load(std::memory_order_acquire)) {
                gate_.wait(v, std::memory_order_acquire);
            }
        } else {
            for (int spins = 0; (gate_.load(std::memory_order_acquire) & count_mask) > own; ++spins) {
                if (waited_for_by_others(this)) {
                    waiters_.fetch_sub(1, std::memory_order_seq_cst);
                    return;
                }
                patience(spins);
            }
        }
        // Inline calls, filters and puts into the queue run announced on publishers' threads.
        wait_for_inline_calls(this, [this] { return current_frame != nullptr && waited_for_by_others(this); });
        waiters_.fetch_sub(1, std::memory_order_seq_cst);
    }

    static constexpr std::uint32_t closed_bit = 1U << 31U;
    static constexpr std::uint32_t count_mask = closed_bit - 1U;

    const ordering order_;
    tracked_objects track_;
    executor* const exec_;
    topic_core* const topic_;
    std::weak_ptr<topic_core> topic_weak_;
    bus_core* const bus_;
    const envelope_ops& ops_;
    const policy_info& policy_;
    const bool has_filter_;
    /// Serial only: 1 while the strand is posted or running (whoever sets it schedules
    /// it), 0 while it is idle. Alone on its line: publishers read it on every put.
    alignas(64) std::atomic<std::uint32_t> scheduled_{0};
    alignas(64) std::atomic<std::uint32_t> gate_{0};
    /// Threads waiting in `unsubscribe()` for this subscriber's calls.
    std::atomic<std::uint32_t> waiters_{0};
    const std::shared_ptr<counter_block> stats_ = std::make_shared<counter_block>();
    /// The mailbox the strand (or a concurrent subscriber's workers) takes from, and the
    /// one publishers put into (the same, except while a replaced one is retired).
    std::unique_ptr<mailbox_base> box_;
    std::atomic<mailbox_base*> live_{nullptr};
    /// Strand only: a replaced mailbox that publishers may still have been putting into;
    /// drained before `box_`, freed once no publisher can reach it.
    std::unique_ptr<mailbox_base> retired_;
    /// Strand only: how many items the last batch handled.
    std::int64_t last_run_ = 0;
    /// Strand only: the largest backlog seen since the mailbox was last replaced.
    std::int64_t peak_ = 0;
    /// Strand only: when the mailbox was last replaced.
    std::optional<std::chrono::steady_clock::time_point> shrunk_at_;
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
