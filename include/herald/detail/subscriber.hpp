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
#include <herald/detail/core.hpp>
#include <herald/detail/erased.hpp>
#include <herald/detail/flow_gate.hpp>
#include <herald/detail/keyed_mailbox.hpp>
#include <herald/detail/ring_mailbox.hpp>
#include <herald/detail/stream_mailbox.hpp>
#include <herald/detail/subscriber_delivery.hpp>
#include <herald/detail/thread_slots.hpp>
#include <herald/envelope.hpp>
#include <herald/executor.hpp>
#include <herald/outcome.hpp>
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

/// A subscriber of any topic: identity, lifetime gate and counters
/// (`subscriber_core`), outcomes and retries (`subscriber_delivery`), and here its queue
/// and strand. The topic's delivery policy decides what a failure leads to (a report, or
/// a retry and eventually a dead letter) and how the queue is organised (one FIFO
/// mailbox, or one per priority level).
class subscriber_base : public subscriber_delivery, public task, public key_queue::handler {
public:
    explicit subscriber_base(subscriber_setup&& setup)
        : subscriber_delivery(setup),
          flow_(std::move(setup.flow)),
          keys_(std::move(setup.keys)),
          box_(std::move(setup.box)) {
        live_.store(box_.get(), std::memory_order_release);
    }

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
    [[gnu::always_inline]] offered offer(envelope_base& env, bool move, std::size_t level,
                                         clock_source::time_point now, topic_core* count_in,
                                         std::uint8_t slot) noexcept {
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

    /// After a put and a light fence since (see `after_put`): schedules a serial
    /// subscriber whose strand is idle. While the strand is scheduled or running this
    /// only reads `scheduled_`, a line the strand writes once per idle transition.
    void wake_if_idle() noexcept {
        if (scheduled_.load(std::memory_order_relaxed) == 0 && scheduled_.exchange(1, std::memory_order_acq_rel) == 0) {
            reschedule();
        }
    }

    /// What the mailbox holds now, for statistics (see `subscription_stats`).
    struct mailbox_gauges {
        std::size_t waiting = 0;
        std::size_t capacity = 0;
        std::size_t high_water = 0;
        std::uint64_t blocked_ns = 0;
    };

    /// The mailbox's gauges; any thread. An unbounded mailbox is read under a gate
    /// count, so that the strand cannot free it meanwhile (see `retired_is_sealed`).
    [[nodiscard]] mailbox_gauges gauges() noexcept {
        mailbox_gauges g;
        if (flow_) {
            g.waiting = flow_->waiting();
            g.capacity = flow_->capacity();
            g.high_water = flow_->high_water();
            g.blocked_ns = flow_->blocked_ns();
            return g;
        }
        if (!box_ || mode != delivery::async) {
            return g;
        }
        gate_.fetch_add(1, std::memory_order_acq_rel);
        const mailbox_base* live = live_.load(std::memory_order_acquire);
        g.waiting = live->size_approx();
        g.capacity = live->what == mailbox_base::kind::ring ? static_cast<const ring_mailbox*>(live)->capacity()
                                                            : herald::unbounded;
        leave();
        g.high_water = std::max(g.waiting, high_water_.load(std::memory_order_relaxed));
        return g;
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
        const auto backlog = static_cast<std::int64_t>(box_->size_approx());
        peak_ = std::max(peak_, backlog);
        if (static_cast<std::size_t>(backlog) > high_water_.load(std::memory_order_relaxed)) {
            high_water_.store(static_cast<std::size_t>(backlog), std::memory_order_relaxed);
        }
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

protected:
    bool requeue(envelope_base& env) noexcept override {
        const std::size_t level = env.priority();
        bool copied = false;
        const bool open = with_entry(
            [&](caller /*who*/, std::uint32_t /*shard*/) { copied = put(env, true, level, bus_->clock->now()); });
        if (!open) {
            count_discarded(); // unsubscribed while the retry waited
            return false;
        }
        if (!copied) {
            return false; // the copy failed: counted and reported as a failure
        }
        after_put();
        return true;
    }

private:
    /// Posts this subscriber to its executor.
    void schedule() { exec_->post(std::static_pointer_cast<subscriber_base>(shared_from_this())); }

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
            const bool open = with_entry([&](caller /*who*/, std::uint32_t /*shard*/) {
                what = put_reserved(env, move, level, now);
            });
            if (!open) {
                flow_->release(1);
                count_discarded();
            }
        } else {
            stats_->rejected.fetch_add(1, std::memory_order_relaxed);
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
            topic_->end_flight(envelope_access::epoch(*out.env));
        }
    }

    /// Puts into a keyed mailbox; a key that was idle gets its queue posted. Throws like
    /// a put (the key's extraction too).
    void push_keyed(keyed_mailbox& keyed, envelope_base& env, bool move) {
        std::unique_ptr<stored_key> key = keys_->extract(env);
        std::shared_ptr<key_queue> idle =
            keyed.push(env, move, std::move(key), std::static_pointer_cast<subscriber_base>(shared_from_this()));
        if (idle) {
            reschedule_keyed(idle);
        }
    }

    void handle_keyed(envelope_base& env) noexcept override {
        const std::uint8_t slot = envelope_access::epoch(env);
        if (process(env, {}, true, enter(), false)) {
            topic_->end_flight(slot);
        }
    }

    /// Posts a key queue; when the executor refuses, fails every event waiting for that
    /// key (reported with the executor's exception, like a refused strand) and tries to
    /// post again for what arrived meanwhile.
    void reschedule_keyed(const std::shared_ptr<key_queue>& queue) noexcept override {
        try {
            exec_->post(queue);
        } catch (...) {
            refused_key(queue, std::current_exception());
        }
    }

    void left_keyed(std::size_t count) noexcept override {
        if (flow_) {
            flow_->release(count);
        }
    }

    [[gnu::cold, gnu::noinline]] void refused_key(const std::shared_ptr<key_queue>& queue,
                                                  std::exception_ptr error) noexcept {
        std::size_t failed = 0;
        queue->drain_each([&](envelope_base& env) {
            const std::uint8_t slot = envelope_access::epoch(env);
            if (fail_item(env, error)) {
                topic_->end_flight(slot);
            }
            ++failed;
        });
        left_keyed(failed);
    }

    /// Takes `count` items of `box`'s chunk out (destroying them) and gives their places
    /// in a bounded mailbox back.
    void release(mailbox_base& box, std::size_t count) noexcept {
        box.release_chunk(count);
        if (flow_) {
            flow_->release(count);
        }
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
            release(*box_, got);
        }
    }

    /// Takes the next item of `box` (if any) and passes it to `handle(env, enqueued)`.
    template <class Handle>
    bool take_one(mailbox_base& box, Handle&& handle) noexcept {
        if (box.take_chunk(1, lane_time()) == 0) {
            return false;
        }
        handle(box.at(0), box.enqueued(0));
        release(box, 1);
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
            release(*box_, 1);
        }
    }

    /// True when no publisher can still be putting into the retired mailbox: none is
    /// registered as calling this subscriber (the registration precedes reading
    /// `live_`), and nobody but this strand holds the gate (registrations without a
    /// thread slot). The heavy fence in `maybe_shrink` made every later registration
    /// read the new mailbox.
    [[nodiscard]] bool retired_is_sealed(bool open) const noexcept {
        return !has_other_entries(open ? 1U : 0U) && !someone_calls(static_cast<const subscriber_core*>(this));
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
        if (flow_) {
            flow_->release(1);
        }
        const std::uint8_t slot = envelope_access::epoch(item.envelope());
        if (process(item.envelope(), item.enqueued(), true, enter(), false)) {
            topic_->end_flight(slot);
        }
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
            if (flow_) {
                flow_->release(1);
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

    /// Bounded mailboxes (other than ring ones): the capacity and the overflow rule.
    const std::unique_ptr<flow_gate> flow_;
    /// The key extractor (conflating and keyed subscribers).
    const std::shared_ptr<const key_rules> keys_;
    /// Serial only: 1 while the strand is posted or running (whoever sets it schedules
    /// it), 0 while it is idle. Alone on its line: publishers read it on every put.
    alignas(64) std::atomic<std::uint32_t> scheduled_{0};
    /// The mailbox the strand (or a concurrent subscriber's workers) takes from, and the
    /// one publishers put into (the same, except while a replaced one is retired).
    std::unique_ptr<mailbox_base> box_;
    std::atomic<mailbox_base*> live_{nullptr};
    /// Strand only: a replaced mailbox that publishers may still have been putting into;
    /// drained before `box_`, freed once no publisher can reach it.
    std::unique_ptr<mailbox_base> retired_;
    /// The largest backlog a batch of the strand started with (unbounded mailboxes).
    std::atomic<std::size_t> high_water_{0};
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
