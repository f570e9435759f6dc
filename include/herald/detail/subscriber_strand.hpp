// An async subscriber's strand: its mailbox, and the worker side that takes events out
// in batches, goes idle and comes back, and gives a burst's memory back.
#pragma once

#include <herald/clock.hpp>
#include <herald/detail/chrono.hpp>
#include <herald/detail/core.hpp>
#include <herald/detail/erased.hpp>
#include <herald/detail/flow_gate.hpp>
#include <herald/detail/ring_mailbox.hpp>
#include <herald/detail/subscriber_delivery.hpp>
#include <herald/detail/thread_slots.hpp>
#include <herald/envelope.hpp>
#include <herald/executor.hpp>
#include <herald/flow_control.hpp>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <utility>

namespace herald::detail {

/// The worker side of an async subscriber. A serial subscriber is a strand: at most one
/// worker runs it at a time (`scheduled_` is 1 while it is posted or running), taking up
/// to `batch_size` events per turn from its mailbox; a concurrent one takes one event per
/// task. The mailbox may be bounded (`flow_`): places are given back as events leave it.
class subscriber_strand : public subscriber_delivery, public task {
public:
    explicit subscriber_strand(subscriber_setup& setup)
        : subscriber_delivery(setup),
          flow_(std::move(setup.flow)),
          keys_(std::move(setup.keys)),
          box_(std::move(setup.box)) {
        live_.store(box_.get(), std::memory_order_release);
    }

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
    /// Posts this subscriber to its executor.
    void schedule() { exec_->post(std::static_pointer_cast<subscriber_strand>(shared_from_this())); }

    /// Posts the subscriber; the caller owns its strand (or, concurrent, one delivery).
    void reschedule() noexcept {
        try {
            schedule();
        } catch (...) {
            refused(std::current_exception());
        }
    }

    /// Takes `count` items of `box`'s chunk out (destroying them) and gives their places
    /// in a bounded mailbox back.
    void release(mailbox_base& box, std::size_t count) noexcept {
        box.release_chunk(count);
        if (flow_) {
            flow_->release(count);
        }
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

} // namespace herald::detail
