// A subscriber: a handler, its filter, its queue, and the gate that makes unsubscribe safe.
#pragma once

#include <herald/clock.hpp>
#include <herald/config.hpp>
#include <herald/dead_letter.hpp>
#include <herald/detail/concurrentqueue.hpp>
#include <herald/detail/core.hpp>
#include <herald/detail/thread_slots.hpp>
#include <herald/detail/timer_service.hpp>
#include <herald/detail/tracking.hpp>
#include <herald/envelope.hpp>
#include <herald/errors.hpp>
#include <herald/executor.hpp>
#include <herald/outcome.hpp>
#include <herald/policy/delivery_policy.hpp>
#include <herald/publish_result.hpp>
#include <herald/subscribe_options.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace herald::detail {

template <class T, class Traits>
class topic_state;

/// A retrying policy's attempt limit (0 for policies that do not retry).
template <class Policy>
constexpr std::uint64_t attempts_of() {
    if constexpr (retrying_policy<Policy>) {
        return static_cast<std::uint64_t>(Policy::attempts);
    } else {
        return 0;
    }
}

/// The metadata of an envelope that an error report needs, independent of the event type.
struct envelope_meta {
    event_id id;
    std::uint64_t sequence = 0;
    std::uint32_t attempt = 1;
};

/// Why one handler call did not succeed: what it threw, or the outcome it returned.
struct call_failure {
    std::exception_ptr error;
    std::optional<outcome> told;

    [[nodiscard]] std::string message() const {
        return failure_message(error, told ? std::string_view(told->reason()) : std::string_view());
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

    ~subscriber_base() override = default;

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
        if (!track_.is_empty() && track_.slot().expired()) {
            expire();
            return false;
        }
        return true;
    }

    /// `is_live()` without closing anything (callers that hold the topic's mutex).
    [[nodiscard]] bool looks_live() const noexcept {
        return !is_closed() && (track_.is_empty() || !track_.slot().expired());
    }

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

    const std::string name;
    const delivery mode;

protected:
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

    /// Runs `call` (which returns true for success, or false after storing the handler's
    /// non-ack outcome in its argument) for a caller that holds the gate or announced the
    /// call; `shard` is the announcing thread's slot index. Tracked objects are locked
    /// for the call; one that died closes the subscription and skips it.
    template <class Call>
    outcome_kind call_entered(const envelope_meta& meta, Call& call, caller who, call_failure& why,
                              std::uint32_t shard = 0) noexcept {
        if (!track_.is_empty()) {
            return call_tracked(meta, call, who, why, shard);
        }
        return run_call(meta, call, who, why, shard);
    }

    /// The call itself, its counting and its failure report.
    template <class Call>
    outcome_kind run_call(const envelope_meta& meta, Call& call, caller who, call_failure& why,
                          std::uint32_t shard) noexcept {
        bool acked = false;
        {
            const frame_scope frame(this, bus_, false);
            try {
                acked = call(why.told);
            } catch (...) {
                why.error = std::current_exception();
            }
        }
        if (!acked) {
            fail(meta, why);
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
    template <class Call>
    [[gnu::noinline]] outcome_kind call_tracked(const envelope_meta& meta, Call& call, caller who, call_failure& why,
                                                std::uint32_t shard) noexcept {
        const tracking_guard pins(track_.slot());
        if (pins.is_expired()) {
            expire();
            return outcome_kind::skipped;
        }
        return run_call(meta, call, who, why, shard);
    }

    /// Runs `test` (a filter) with the tracked objects locked: false, and the
    /// subscription closed, when one of them has died.
    template <class Test>
    [[gnu::noinline]] bool test_tracked(Test& test) noexcept {
        const tracking_guard pins(track_.slot());
        if (pins.is_expired()) {
            expire();
            return false;
        }
        return test();
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

    counter_block& stats() noexcept { return *stats_; }

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

    alignas(64) std::atomic<std::uint32_t> gate_{0};
    /// Threads waiting in `unsubscribe()` for this subscriber's calls.
    std::atomic<std::uint32_t> waiters_{0};
    const std::shared_ptr<counter_block> stats_ = std::make_shared<counter_block>();
};

/// A subscriber of topic `T`. The topic's delivery policy decides what a failure leads to
/// (a report, or a retry and eventually a dead letter) and how the queue is organised
/// (one FIFO lane, or one lane per priority level).
template <class T, class Traits>
class subscriber : public subscriber_base {
public:
    using event_type = typename T::event_type;
    using policy = typename T::policy_type;
    /// Failed deliveries are retried, then dead-lettered.
    static constexpr bool retrying = retrying_policy<policy>;
    static_assert(!retrying || attempts_of<policy>() <= max_attempts_limit,
                  "herald: a retrying policy allows at most 65535 attempts (P::attempts)");
    /// Events wait in one lane per priority level.
    static constexpr bool prioritised = prioritising_policy<policy>;
    static constexpr std::size_t lanes = [] {
        if constexpr (prioritised) {
            return static_cast<std::size_t>(policy::levels);
        } else {
            return std::size_t{1};
        }
    }();

    subscriber(subscribe_options<event_type>&& options, std::string resolved_name, executor* runs_on,
               executor* retries_on, const std::shared_ptr<topic_core>& on_topic, bool handler_takes_envelope)
        : subscriber_base(std::move(resolved_name), options.mode, options.order, std::move(options.track),
                          options.mode == delivery::async ? runs_on : retries_on, on_topic),
          needs_envelope(handler_takes_envelope || options.filter.reads_envelope()),
          filter_(std::move(options.filter)) {
        if (mode == delivery::async) {
            box_ = std::make_unique<mailbox>(order_ == ordering::serial);
            live_.store(box_.get(), std::memory_order_release);
        }
    }

    /// What `offer` did with an event.
    enum class offered : std::uint8_t {
        declined, ///< closed, a tracked object died, or the filter said no (or threw)
        queued,   ///< this subscriber's copy waits in its queue
        failed,   ///< the copy could not be made: a failed delivery, counted and reported
    };

    /// The async publish path for this subscriber, on the publisher's thread: decides
    /// whether it takes `env` (it is open, its tracked objects are alive and locked
    /// while the filter runs, its filter accepts), then queues its own copy at priority
    /// `level` (0 without priorities) and schedules it. Everything happens registered as
    /// a call (see `with_entry`), so `unsubscribe()` waits for the filter, and the strand
    /// knows when no publisher can still be putting into a queue it replaced. When
    /// `count_in` is given, the delivery is counted there in drain slot `slot` once it is
    /// taken (and released again if the copy fails). A throwing filter is a failed
    /// delivery (counted, reported); so is a copy whose constructor throws. An executor
    /// that refuses the work fails the waiting deliveries instead of stranding them
    /// (see `refused`).
    template <class Env>
    offered offer(Env&& env, std::size_t level, clock_source::time_point now, topic_core* count_in,
                  std::uint8_t slot) noexcept {
        offered what = offered::declined;
        with_entry([&](caller /*who*/, std::uint32_t /*shard*/) __attribute__((always_inline)) {
            if (!passes(env)) {
                return;
            }
            if (count_in != nullptr) {
                count_in->add_flight(slot);
            }
            what = put(std::forward<Env>(env), level, now) ? offered::queued : offered::failed;
            if (what == offered::failed && count_in != nullptr) {
                count_in->end_flight(slot);
            }
        });
        if (what == offered::queued) {
            after_put();
        }
        return what;
    }

    /// Inline delivery on the publisher's thread; the envelope is shared with other
    /// subscribers, so by-value handlers get a copy. The filter and the handler run in
    /// one registration (and under one lock of the tracked objects). A failure on a
    /// retrying topic schedules the retry (counted in the publish's drain slot) or
    /// dead-letters.
    void deliver_inline(envelope<event_type>& env, publish_result& result) noexcept {
        call_failure why;
        outcome_kind got = outcome_kind::skipped;
        auto call = [&](std::optional<outcome>& told) { return invoke(env, false, told); };
        // Inlined by force: this is the per-subscriber cost of an inline publish.
        with_entry([&](caller who, std::uint32_t shard) __attribute__((always_inline)) {
            if (!track_.is_empty()) {
                got = inline_tracked(env, call, who, why, shard);
            } else if (filter_.is_empty() || run_filter(env)) {
                got = run_call(meta_of(env), call, who, why, shard);
            }
        });
        switch (got) {
        case outcome_kind::handled:
            ++result.handled_inline;
            break;
        case outcome_kind::failed:
            ++result.failed_inline;
            if constexpr (retrying) {
                try {
                    envelope<event_type> copy = env;
                    if (!settle_failure(copy, why, true)) {
                        ++result.retrying_inline;
                    }
                } catch (...) {
                    // Copying the event failed: it cannot be retried or dead-lettered.
                    count_discarded();
                }
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
        peak_ = std::max(peak_, pending_.load(std::memory_order_relaxed));
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
        if (pending_.fetch_sub(tally.done, std::memory_order_acq_rel) - tally.done > 0) {
            reschedule();
        }
    }

    /// True when the handler or the filter reads the envelope's metadata.
    const bool needs_envelope;

    /// True when a filter was given.
    [[nodiscard]] bool has_filter() const noexcept { return !filter_.is_empty(); }

protected:
    /// Calls the user's handler; `owned` says the envelope may be moved from. Returns
    /// true on success; false after storing a non-ack outcome the handler returned.
    virtual bool invoke(envelope<event_type>& env, bool owned, std::optional<outcome>& told) = 0;

private:
    /// Puts this subscriber's copy into the queue publishers use now; called inside an
    /// entry. Returns false when the copy could not be made (a failure, counted and
    /// reported here).
    template <class Env>
    bool put(Env&& env, std::size_t level, clock_source::time_point now) noexcept {
        mailbox& box = *live_.load(std::memory_order_acquire);
        try {
            if constexpr (prioritised) {
                box.queue[level]->enqueue(lane_item{stored(std::forward<Env>(env)), now});
            } else if constexpr (boxed) {
                (void)level;
                (void)now;
                box.queue[0]->enqueue(stored(std::forward<Env>(env)));
            } else {
                (void)level;
                (void)now;
                box.queue[0]->enqueue(std::forward<Env>(env));
            }
        } catch (...) {
            // The envelope's metadata is intact even when moving its event threw.
            fail(meta_of(env), call_failure{std::current_exception(), std::nullopt});
            return false;
        }
        return true;
    }

    /// After a put: schedules the subscriber if nobody else will.
    void after_put() noexcept {
        if (order_ == ordering::concurrent || pending_.fetch_add(1, std::memory_order_acq_rel) == 0) {
            reschedule();
        }
    }

    /// Events whose move may throw wait behind a pointer: moodycamel moves items out when
    /// it hands them over, and a move that throws there would lose them (and end the
    /// process, since workers cannot throw). Such events pay one allocation per queued
    /// copy; events with a noexcept move are stored in the queue itself.
    static constexpr bool boxed = !std::is_nothrow_move_constructible_v<envelope<event_type>>;
    using stored_type = std::conditional_t<boxed, std::unique_ptr<envelope<event_type>>, envelope<event_type>>;

    struct lane_item {
        stored_type env;
        clock_source::time_point enqueued;
    };
    using item_type = std::conditional_t<prioritised, lane_item, stored_type>;

    /// One queue per lane, and what the strand keeps beside them. Replaced whole after a
    /// large backlog drained (see `maybe_shrink`), so the memory it took goes back.
    struct mailbox {
        explicit mailbox(bool strand) {
            for (std::size_t i = 0; i < lanes; ++i) {
                queue[i].emplace(Traits::initial_queue_capacity);
                if (strand) {
                    // A strand has one consumer at a time, so it may keep moodycamel's
                    // consumer token; without it every dequeue re-scans the producers.
                    consumer[i].emplace(*queue[i]);
                }
            }
        }

        /// Nothing waits (as far as the strand can tell).
        [[nodiscard]] bool looks_empty() const noexcept {
            for (std::size_t i = 0; i < lanes; ++i) {
                if (queue[i]->size_approx() != 0) {
                    return false;
                }
                if constexpr (prioritised) {
                    if (heads[i]) {
                        return false;
                    }
                }
            }
            return true;
        }

        std::array<std::optional<moodycamel::ConcurrentQueue<item_type>>, lanes> queue;
        std::array<std::optional<moodycamel::ConsumerToken>, lanes> consumer;
        /// Priority only: the first item of each lane, taken out so the strand can compare
        /// lanes (moodycamel has no peek). Touched only by the strand.
        std::array<std::optional<item_type>, prioritised ? lanes : 0> heads;
    };

    /// What a queue stores for `env`.
    template <class Env>
    static stored_type stored(Env&& env) {
        if constexpr (boxed) {
            return std::make_unique<envelope<event_type>>(std::forward<Env>(env));
        } else {
            return stored_type(std::forward<Env>(env));
        }
    }

    /// Events a strand takes from its queue at once (see `run`).
    static constexpr std::size_t take_chunk = 16;
    /// How often a strand that ran dry looks again before it lets its worker go.
    static constexpr int dry_polls = 32;

    /// What a strand's batch took and finished, per drain slot.
    struct batch_tally {
        std::int64_t ended[2] = {0, 0};
        std::int64_t done = 0;
    };

    /// Handles one item taken by the strand and counts it.
    void account(item_type& item, bool open, batch_tally& tally) noexcept {
        const std::uint8_t slot = envelope_access::epoch(envelope_of(item));
        if (process(item, open, true)) {
            ++tally.ended[slot];
        }
        ++tally.done;
    }

    /// The usual batch: up to `batch_size` items of the one mailbox.
    void run_batch(bool open, batch_tally& tally) noexcept {
        if constexpr (!prioritised) {
            // Taken in chunks: one moodycamel bulk dequeue costs the consumer's two
            // locked instructions once per chunk instead of once per event.
            chunk_buffer chunk;
            while (tally.done < static_cast<std::int64_t>(Traits::batch_size)) {
                const std::size_t want =
                    std::min(take_chunk, Traits::batch_size - static_cast<std::size_t>(tally.done));
                const std::size_t got = box_->queue[0]->try_dequeue_bulk(*box_->consumer[0], chunk.output(), want);
                if (got == 0) {
                    break;
                }
                for (std::size_t i = 0; i < got; ++i) {
                    item_type& item = chunk[i];
                    account(item, open, tally);
                    item.~item_type();
                }
                if (got < want && !more_soon()) {
                    break; // the queue ran dry
                }
            }
        } else {
            std::optional<item_type> item;
            while (tally.done < static_cast<std::int64_t>(Traits::batch_size) && take(*box_, *bus_, item)) {
                account(*item, open, tally);
                item.reset();
            }
        }
    }

    /// A batch while a retired mailbox may still receive late puts: each publisher's
    /// earlier events are in the retired one, so it goes first, and is looked at again
    /// after every item taken from the new one (a publisher's put into the retired
    /// mailbox finished before its next put into the new one began).
    void run_mixed(bool open, batch_tally& tally) noexcept {
        std::optional<item_type> item;
        std::optional<item_type> late;
        while (tally.done < static_cast<std::int64_t>(Traits::batch_size)) {
            if (take(*retired_, *bus_, item)) {
                account(*item, open, tally);
                item.reset();
                continue;
            }
            if (!take(*box_, *bus_, item)) {
                break;
            }
            while (take(*retired_, *bus_, late)) {
                account(*late, open, tally);
                late.reset();
            }
            account(*item, open, tally);
            item.reset();
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
        std::optional<item_type> item;
        while (take(*retired_, *bus_, item)) {
            account(*item, open, tally);
            item.reset();
        }
        retired_.reset();
        return true;
    }

    /// After a backlog larger than `Traits::queue_shrink_threshold` has drained, gives
    /// the memory it took back: publishers are pointed at a fresh mailbox, and the old
    /// one is freed as soon as no publisher can still be putting into it (at once,
    /// unless one is in the middle of a put; then at a later batch).
    void maybe_shrink(bool open, batch_tally& tally) noexcept {
        if constexpr (Traits::queue_shrink_threshold == 0) {
            (void)open;
            (void)tally;
        } else {
            if (!open || retired_ || peak_ <= static_cast<std::int64_t>(Traits::queue_shrink_threshold) ||
                !box_->looks_empty()) {
                return;
            }
            if constexpr (Traits::queue_shrink_interval.count() > 0) {
                const auto now = std::chrono::steady_clock::now();
                if (shrunk_at_ && now - *shrunk_at_ < Traits::queue_shrink_interval) {
                    return;
                }
                shrunk_at_ = now;
            }
            std::unique_ptr<mailbox> fresh;
            try {
                fresh = std::make_unique<mailbox>(true);
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
    }

    /// Called when a streaming strand's queue ran dry: looks again for a few
    /// microseconds, so a publisher slightly slower than the handler does not pay for
    /// rescheduling the strand through the executor on every event. The worker is held
    /// that long at most (other subscribers on the pool wait as long).
    bool more_soon() noexcept {
        for (int i = 0; i < dry_polls; ++i) {
            cpu_pause();
            if (box_->queue[0]->size_approx() != 0) {
                return true;
            }
        }
        return false;
    }

    /// Uninitialised room for one chunk of a bulk dequeue (an array of optionals would be
    /// cleared on every run). moodycamel move-assigns through the output iterator; the
    /// iterator constructs in place instead, and `run` destroys each item after use.
    class chunk_buffer {
    public:
        struct output_iterator {
            unsigned char* at;
            output_iterator& operator*() noexcept { return *this; }
            output_iterator& operator++() noexcept {
                at += sizeof(item_type);
                return *this;
            }
            output_iterator operator++(int) noexcept {
                output_iterator before = *this;
                at += sizeof(item_type);
                return before;
            }
            output_iterator& operator=(item_type&& item) noexcept(std::is_nothrow_move_constructible_v<item_type>) {
                ::new (static_cast<void*>(at)) item_type(std::move(item));
                return *this;
            }
        };

        chunk_buffer() noexcept {}
        chunk_buffer(const chunk_buffer&) = delete;
        chunk_buffer& operator=(const chunk_buffer&) = delete;
        ~chunk_buffer() = default;

        [[nodiscard]] output_iterator output() noexcept { return {bytes_}; }
        [[nodiscard]] item_type& operator[](std::size_t i) noexcept {
            return *std::launder(reinterpret_cast<item_type*>(bytes_ + i * sizeof(item_type)));
        }

    private:
        alignas(item_type) unsigned char bytes_[take_chunk * sizeof(item_type)];
    };

    static envelope<event_type>& envelope_of(envelope<event_type>& env) noexcept { return env; }
    static envelope<event_type>& envelope_of(std::unique_ptr<envelope<event_type>>& env) noexcept { return *env; }
    static envelope<event_type>& envelope_of(lane_item& item) noexcept { return envelope_of(item.env); }

    static envelope_meta meta_of(const envelope<event_type>& env) noexcept {
        return {env.id(), env.sequence(), env.attempt()};
    }

    topic_state<T, Traits>& state() const noexcept { return static_cast<topic_state<T, Traits>&>(*topic_); }

    /// Concurrent mode: one event per run, the gate passed per event.
    void run_one() noexcept {
        std::optional<item_type> item;
        if (!box_->queue[0]->try_dequeue(item)) {
            reschedule();
            return;
        }
        const std::uint8_t slot = envelope_access::epoch(envelope_of(*item));
        if (process(*item, enter(), false)) {
            topic_->end_flight(slot);
        }
    }

    /// Takes the next item of `box` for a serial strand: the only lane, or the lane the
    /// priority policy picks among the heads of all lanes.
    static bool take(mailbox& box, bus_core& bus, std::optional<item_type>& out) noexcept {
        if constexpr (!prioritised) {
            return box.queue[0]->try_dequeue(*box.consumer[0], out);
        } else if constexpr (policy::aging_ns == 0 && policy::ttl_ns == 0) {
            // Without aging or expiry only the highest non-empty lane matters: look from
            // the top and stop at the first head, so lower lanes are not even polled.
            for (std::size_t i = lanes; i-- > 0;) {
                if (box.heads[i] || box.queue[i]->try_dequeue(*box.consumer[i], box.heads[i])) {
                    out.emplace(std::move(*box.heads[i]));
                    box.heads[i].reset();
                    return true;
                }
            }
            return false;
        } else {
            // Aging and expiry compare the heads of every lane.
            for (std::size_t i = 0; i < lanes; ++i) {
                if (!box.heads[i]) {
                    box.queue[i]->try_dequeue(*box.consumer[i], box.heads[i]);
                }
            }
            std::size_t chosen = lanes;
            {
                const auto now = bus.clock->now();
                clock_source::time_point oldest = clock_source::time_point::max();
                for (std::size_t i = 0; i < lanes; ++i) {
                    if (!box.heads[i]) {
                        continue;
                    }
                    const auto waited = (now - box.heads[i]->enqueued).count();
                    // An expired head is taken first, so it leaves the queue at once; an
                    // aged head below the top level goes before every higher level, oldest
                    // first. (The top level needs no promotion; letting its aged events
                    // compete by age would starve the lower levels again under overload.)
                    const bool due = (policy::ttl_ns > 0 && waited >= policy::ttl_ns) ||
                                     (policy::aging_ns > 0 && i + 1 < lanes && waited >= policy::aging_ns);
                    if (due && box.heads[i]->enqueued < oldest) {
                        oldest = box.heads[i]->enqueued;
                        chosen = i;
                    }
                }
            }
            if (chosen == lanes) {
                for (std::size_t i = lanes; i-- > 0;) {
                    if (box.heads[i]) {
                        chosen = i;
                        break;
                    }
                }
            }
            if (chosen == lanes) {
                return false;
            }
            out.emplace(std::move(*box.heads[chosen]));
            box.heads[chosen].reset();
            return true;
        }
    }

    /// The next item for a serial strand that does not care about order (refused work):
    /// the retired mailbox first.
    bool take_any(std::optional<item_type>& out) noexcept {
        return (retired_ && take(*retired_, *bus_, out)) || take(*box_, *bus_, out);
    }

    /// Handles (or drops) one queued item. `entered` says the caller holds the gate;
    /// `strand` says the caller is the only thread running this subscriber, and that it
    /// keeps the gate (otherwise the gate is left here). Returns true when the delivery
    /// reached its final outcome, false when a retry now holds it.
    template <class Item>
    bool process(Item& item, bool entered, bool strand) noexcept {
        if (!entered || strand) {
            return process_entered(item, entered, strand); // a strand's frame is its batch's
        }
        bool final = true;
        {
            const frame_scope holder(this, bus_, true);
            final = process_entered(item, true, false);
        }
        leave();
        return final;
    }

    template <class Item>
    bool process_entered(Item& item, bool entered, bool strand) noexcept {
        envelope<event_type>& env = envelope_of(item);
        if (bus_->discarding.load(std::memory_order_acquire)) {
            count_dropped();
            return true;
        }
        if (!entered || is_closed()) {
            count_discarded();
            return true;
        }
        if (expired(item)) {
            return expire_item(env);
        }
        call_failure why;
        auto call = [&](std::optional<outcome>& told) { return invoke(env, !retrying, told); };
        const outcome_kind result = call_entered(meta_of(env), call, strand ? caller::strand : caller::any, why);
        if (result == outcome_kind::skipped) {
            count_discarded();
        } else if constexpr (retrying) {
            if (result == outcome_kind::failed) {
                return settle_failure(env, why, false);
            }
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
            std::optional<item_type> item;
            while (!box_->queue[0]->try_dequeue(item)) {
                cpu_pause(); // the delivery this post was for is in the queue
            }
            if (fail_item(*item, error)) {
                topic_->end_flight(envelope_access::epoch(envelope_of(*item)));
            }
            return;
        }
        for (;;) {
            std::int64_t ended[2] = {0, 0};
            std::int64_t done = 0;
            // Only what was counted before the refusal: an item queued while the ones
            // before it fail (a retry whose timer fired, a publish from another thread)
            // was never refused, and gets its own post below.
            const std::int64_t waiting = pending_.load(std::memory_order_acquire);
            std::optional<item_type> item;
            while (done < waiting && take_any(item)) {
                ++done;
                const std::uint8_t slot = envelope_access::epoch(envelope_of(*item));
                if (fail_item(*item, error)) {
                    ++ended[slot];
                }
                item.reset();
            }
            topic_->end_flights(0, ended[0]);
            topic_->end_flights(1, ended[1]);
            if (pending_.fetch_sub(done, std::memory_order_acq_rel) - done <= 0) {
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
    template <class Item>
    bool fail_item(Item& item, const std::exception_ptr& error) noexcept {
        envelope<event_type>& env = envelope_of(item);
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
        return settle_failure(env, why, false);
    }

    /// Whether a queued item outlived its time-to-live (priority lanes only; a retry of
    /// an inline subscriber carries no queue time and never expires).
    template <class Item>
    bool expired(const Item& item) const noexcept {
        if constexpr (prioritised && std::is_same_v<Item, lane_item>) {
            if constexpr (policy::ttl_ns > 0) {
                return (bus_->clock->now() - item.enqueued).count() >= policy::ttl_ns;
            }
        }
        (void)item;
        return false;
    }

    /// An event outlived its time-to-live: dropped and counted, or dead-lettered.
    bool expire_item(envelope<event_type>& env) noexcept {
        stats().expired.fetch_add(1, std::memory_order_relaxed);
        if constexpr (prioritised) {
            if constexpr (policy::expired_to_dead_letters) {
                to_dead_letters(env, call_failure{}, dead_letter_reason::expired, env.attempt() - 1);
            }
        }
        return true;
    }

    /// After a failed attempt on a retrying topic: schedules the next attempt, or
    /// dead-letters. `from_inline` says the failure happened on the publisher's thread
    /// (the retry then runs on the bus's default pool). Returns true when the delivery is
    /// final (dead-lettered), false when a retry was scheduled; `env` is moved from then.
    bool settle_failure(envelope<event_type>& env, const call_failure& why, bool from_inline) noexcept {
        if constexpr (retrying) {
            const std::uint32_t attempt = env.attempt();
            const bool refused = (why.told && why.told->what() == outcome::kind::reject) ||
                                 (why.error && !policy::should_retry(why.error));
            dead_letter_reason reason = refused ? dead_letter_reason::rejected : dead_letter_reason::attempts_exhausted;
            if (!refused && attempt < policy::attempts) {
                if (bus_->stopped.load(std::memory_order_acquire)) {
                    reason = dead_letter_reason::shutdown;
                } else {
                    const std::uint64_t random = mix64(env.id().low ^ mix64(env.id().high ^ attempt));
                    const auto wait = why.told && why.told->what() == outcome::kind::retry_after
                                          ? why.told->wait()
                                          : policy::backoff(attempt, random);
                    if (schedule_retry(env, wait, from_inline)) {
                        return false;
                    }
                    reason = dead_letter_reason::shutdown;
                }
            }
            to_dead_letters(env, why, reason, attempt);
            return true;
        } else {
            (void)env;
            (void)why;
            (void)from_inline;
            return true;
        }
    }

    void to_dead_letters(envelope<event_type>& env, const call_failure& why, dead_letter_reason reason,
                         std::uint32_t attempts) noexcept {
        stats().dead_lettered.fetch_add(1, std::memory_order_relaxed);
        state().dead_letter(env, name, attempts, reason, why);
    }

    /// A retry waiting for its time. With a real clock it keeps the delivery counted for
    /// drain(); with a manual clock it lets go (drain() does not wait for a test to move
    /// time) and counts itself again when it fires.
    class retry_task final : public timed_task {
    public:
        retry_task(std::shared_ptr<subscriber> target, envelope<event_type>&& env, bool holds_flight)
            : target_(std::move(target)), env_(std::move(env)), holds_flight_(holds_flight) {}

        void fire() noexcept override { target_->redeliver(env_, holds_flight_); }
        void cancel() noexcept override { target_->cancel_retry(env_, holds_flight_); }
        /// Gives the envelope back (the service refused the task).
        envelope<event_type> release() noexcept { return std::move(env_); }

    private:
        std::shared_ptr<subscriber> target_;
        envelope<event_type> env_;
        bool holds_flight_;
    };

    /// One retry of an inline subscriber, run on the bus's default pool.
    class inline_retry final : public task {
    public:
        inline_retry(std::shared_ptr<subscriber> target, envelope<event_type>&& env)
            : target_(std::move(target)), env_(std::move(env)) {}
        void run() noexcept override { target_->retry_now(env_); }
        envelope<event_type>& held() noexcept { return env_; }

    private:
        std::shared_ptr<subscriber> target_;
        envelope<event_type> env_;
    };

    /// Hands the envelope to a timer that redelivers it after `wait`. Returns false (and
    /// leaves `env` with the caller) when the timers are closed or memory ran out.
    bool schedule_retry(envelope<event_type>& env, std::chrono::nanoseconds wait, bool from_inline) noexcept {
        const bool manual = bus_->clock->is_manual();
        const std::uint8_t slot = envelope_access::epoch(env);
        // A failure of an async delivery already holds its drain count; an inline one
        // counts the retry in the slot the publish's guard holds.
        if (from_inline && !manual) {
            topic_->add_flight(slot);
        }
        try {
            std::unique_ptr<timed_task> task = std::make_unique<retry_task>(
                std::static_pointer_cast<subscriber>(shared_from_this()), std::move(env), !manual);
            if (bus_->timers.schedule(saturating_add(bus_->clock->now(), wait), task)) {
                stats().retried.fetch_add(1, std::memory_order_relaxed);
                if (manual && !from_inline) {
                    topic_->end_flight(slot);
                }
                return true;
            }
            env = static_cast<retry_task&>(*task).release();
        } catch (...) {
            // Out of memory: the retry cannot be kept; the caller dead-letters.
        }
        if (from_inline && !manual) {
            topic_->end_flight(slot);
        }
        return false;
    }

    /// The timer fired: queue the event again (async) or run it on the default pool
    /// (inline subscribers).
    void redeliver(envelope<event_type>& env, bool holds_flight) noexcept {
        envelope_access::set_attempt(env, env.attempt() + 1);
        std::uint8_t slot = envelope_access::epoch(env);
        if (!holds_flight) {
            slot = topic_->begin_flight(1);
            envelope_access::set_epoch(env, slot);
        }
        if (mode == delivery::async) {
            const std::size_t level = env.priority();
            bool copied = false;
            const bool open = with_entry([&](caller /*who*/, std::uint32_t /*shard*/) {
                copied = put(std::move(env), level, bus_->clock->now());
            });
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
            task = std::make_shared<inline_retry>(std::static_pointer_cast<subscriber>(shared_from_this()),
                                                  std::move(env));
            exec_->post(task);
        } catch (...) {
            // The default pool refused the retry: a failed attempt like any other.
            envelope<event_type>& left = task ? task->held() : env;
            const call_failure why{std::current_exception(), std::nullopt};
            fail(meta_of(left), why);
            if (settle_failure(left, why, false)) {
                topic_->end_flight(slot);
            }
        }
    }

    /// An inline subscriber's retry, on a worker of the default pool.
    void retry_now(envelope<event_type>& env) noexcept {
        const std::uint8_t slot = envelope_access::epoch(env);
        if (process(env, enter(), false)) {
            topic_->end_flight(slot);
        }
    }

    /// The bus shut down while the retry waited: dead-lettered with reason `shutdown`
    /// (with `herald::drain`), or dropped and counted (with `herald::discard`).
    void cancel_retry(envelope<event_type>& env, bool holds_flight) noexcept {
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

    /// Posts the subscriber; the caller owns its strand (or, concurrent, one delivery).
    void reschedule() noexcept {
        try {
            schedule();
        } catch (...) {
            refused(std::current_exception());
        }
    }

    /// Whether tracked objects are alive and the filter accepts; runs inside an entry.
    bool passes(const envelope<event_type>& env) noexcept {
        if (filter_.is_empty()) {
            if (!track_.is_empty() && track_.slot().expired()) {
                expire();
                return false;
            }
            return true;
        }
        auto test = [&] { return run_filter(env); };
        return track_.is_empty() ? test() : test_tracked(test);
    }

    /// Applies the filter; one that throws is a failed delivery (counted, reported).
    bool run_filter(const envelope<event_type>& env) noexcept {
        try {
            const frame_scope frame(this, bus_, false);
            return filter_(env);
        } catch (...) {
            fail(meta_of(env), call_failure{std::current_exception(), std::nullopt});
            return false;
        }
    }

    /// An inline call of a tracked subscription: filter and handler under one lock.
    template <class Call>
    [[gnu::noinline]] outcome_kind inline_tracked(const envelope<event_type>& env, Call& call, caller who,
                                                  call_failure& why, std::uint32_t shard) noexcept {
        const tracking_guard pins(track_.slot());
        if (pins.is_expired()) {
            expire();
            return outcome_kind::skipped;
        }
        if (!filter_.is_empty() && !run_filter(env)) {
            return outcome_kind::skipped;
        }
        return run_call(meta_of(env), call, who, why, shard);
    }

    herald::filter<event_type> filter_;
    /// The mailbox the strand (or a concurrent subscriber's workers) takes from, and the
    /// one publishers put into (the same, except while a replaced one is retired).
    std::unique_ptr<mailbox> box_;
    std::atomic<mailbox*> live_{nullptr};
    /// Strand only: a replaced mailbox that publishers may still have been putting into;
    /// drained before `box_`, freed once no publisher can reach it.
    std::unique_ptr<mailbox> retired_;
    /// Strand only: the largest backlog seen since the mailbox was last replaced.
    std::int64_t peak_ = 0;
    /// Strand only: when the mailbox was last replaced.
    std::optional<std::chrono::steady_clock::time_point> shrunk_at_;
};

/// Adapts a user's handler to the envelope the bus delivers.
template <class T, class Traits, class Handler>
class subscriber_impl final : public subscriber<T, Traits> {
    using event_type = typename T::event_type;

public:
    template <class H>
    subscriber_impl(H&& handler, subscribe_options<event_type>&& options, std::string resolved_name, executor* runs_on,
                    executor* retries_on, const std::shared_ptr<topic_core>& on_topic)
        : subscriber<T, Traits>(std::move(options), std::move(resolved_name), runs_on, retries_on, on_topic,
                                std::is_invocable_v<Handler&, const envelope<event_type>&>),
          handler_(std::forward<H>(handler)) {}

private:
    bool invoke(envelope<event_type>& env, bool owned, std::optional<outcome>& told) override {
        return settle(told, [&]() -> decltype(auto) {
            if constexpr (std::is_invocable_v<Handler&, const envelope<event_type>&>) {
                return handler_(std::as_const(env));
            } else {
                // An async subscriber owns its copy, so a handler taking the event by value
                // or by rvalue reference may have it moved in; inline ones share the
                // publisher's, and retried events must survive the call.
                if constexpr (std::is_invocable_v<Handler&, event_type&&>) {
                    if (owned) {
                        return handler_(std::move(env).event());
                    }
                }
                if constexpr (std::is_invocable_v<Handler&, const event_type&>) {
                    return handler_(std::as_const(env).event());
                } else {
                    return handler_(event_type(std::as_const(env).event()));
                }
            }
        });
    }

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

    Handler handler_;
};

} // namespace herald::detail
