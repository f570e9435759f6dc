// The part of a subscriber every kind shares: identity, the unsubscribe gate, counters,
// and calling the user's handler and filter under the right registration.
#pragma once

#include <herald/config.hpp>
#include <herald/detail/core.hpp>
#include <herald/detail/erased.hpp>
#include <herald/detail/flow_gate.hpp>
#include <herald/detail/policy_info.hpp>
#include <herald/detail/thread_slots.hpp>
#include <herald/envelope.hpp>
#include <herald/errors.hpp>
#include <herald/executor.hpp>
#include <herald/flow_control.hpp>
#include <herald/metrics.hpp>
#include <herald/outcome.hpp>
#include <herald/subscribe_options.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <utility>

namespace herald::detail {

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
    /// Async only, bounded mailboxes (except ring mailboxes, which count themselves): the
    /// capacity and what a full mailbox does.
    std::unique_ptr<flow_gate> flow;
    /// The subscription's key extractor (conflation, keyed ordering); null without one.
    std::shared_ptr<const key_rules> keys;
};

/// Identity, lifetime gate, counters and the call of the user's code, for any
/// subscriber. A call runs registered (in the thread's slot, or as a count in the gate),
/// so that `unsubscribe()` can wait for it, and inside a frame (so that `drain()` can
/// refuse to run inside it).
class subscriber_core {
public:
    explicit subscriber_core(subscriber_setup& setup)
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
          latency_(bus_->settings.latency ? std::make_unique<subscriber_latencies>() : nullptr),
          watched_(latency_ != nullptr || bus_->observed) {}

    virtual ~subscriber_core() = default;
    subscriber_core(const subscriber_core&) = delete;
    subscriber_core& operator=(const subscriber_core&) = delete;

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
    static bool waited_for_by_others(const subscriber_core* waiting_on) noexcept {
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

    /// The latency histograms (empty when the bus's traits disable them), and the time
    /// since the subscriber was made.
    void read_latencies(subscriber_metrics& out) const noexcept {
        if (latency_) {
            out.waited = latency_->waited.snapshot();
            out.handled = latency_->handled.snapshot();
        }
        out.age = std::chrono::steady_clock::now() - created_;
    }

    /// The executor it runs on (async) or retries on (inline).
    [[nodiscard]] executor* runs_on() const noexcept { return exec_; }
    [[nodiscard]] ordering order() const noexcept { return order_; }

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

    /// The call itself, its counting and its failure report; timed and observed when the
    /// bus has latency metrics or observers.
    [[gnu::always_inline]] outcome_kind run_call(envelope_base& env, bool owned, caller who, call_failure& why,
                                                 std::uint32_t shard) noexcept {
        // Unsampled events of an unobserved bus take the plain path: one multiplication.
        if (watched_) [[unlikely]] {
            const bool timed = latency_ && bus_->settings.sampled(env.sequence());
            if (timed || bus_->observed) {
                return run_watched(env, owned, who, why, shard, timed);
            }
        }
        return run_plain(env, owned, who, why, shard);
    }

    /// `run_call` timed (`timed`: a sampled event with latency metrics on) and observed.
    [[gnu::noinline]] outcome_kind run_watched(envelope_base& env, bool owned, caller who, call_failure& why,
                                               std::uint32_t shard, bool timed) noexcept {
        std::chrono::system_clock::time_point start{};
        if (timed) {
            start = bus_->settings.wall_clock();
            // Only a first attempt's wait: a retry waits for its backoff on purpose.
            if (mode == delivery::async && env.attempt() == 1 && env.time() != envelope_base::time_point{}) {
                latency_->waited.record(start - env.time());
            }
        }
        if (bus_->observed) {
            bus_->notify([&](observer& o) { o.on_delivery_begin(name, env); });
        }
        const outcome_kind got = run_plain(env, owned, who, why, shard);
        if (timed) {
            latency_->handled.record(bus_->settings.wall_clock() - start);
        }
        if (bus_->observed) {
            const auto how = got == outcome_kind::handled ? delivery_outcome::handled : delivery_outcome::failed;
            bus_->notify([&](observer& o) { o.on_delivery_end(name, env, how); });
        }
        return got;
    }

    [[gnu::always_inline]] outcome_kind run_plain(envelope_base& env, bool owned, caller who, call_failure& why,
                                                  std::uint32_t shard) noexcept {
        bool acked = false;
        {
            const frame_scope frame(this, bus_, false, &env);
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
            const frame_scope frame(this, bus_, false, &env);
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

    /// `count_discarded` / `count_dropped` for an event the observers may see.
    void count_discarded(const envelope_base& env) noexcept {
        count_discarded();
        observe_drop(env, drop_reason::discarded);
    }
    void count_dropped(const envelope_base& env) noexcept {
        count_dropped();
        observe_drop(env, drop_reason::dropped);
    }

    /// Tells the observers (if any) that a delivery ended without a call.
    void observe_drop(const envelope_base& env, drop_reason why) noexcept {
        if (bus_->observed) [[unlikely]] {
            bus_->notify([&](observer& o) { o.on_drop(name, env, why); });
        }
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
    /// Null when the bus's traits disable latency metrics.
    const std::unique_ptr<subscriber_latencies> latency_;
    /// Latency metrics or observers: calls take the `run_watched` path.
    const bool watched_;
    const std::chrono::steady_clock::time_point created_ = std::chrono::steady_clock::now();
    alignas(64) std::atomic<std::uint32_t> gate_{0};
    /// Threads waiting in `unsubscribe()` for this subscriber's calls.
    std::atomic<std::uint32_t> waiters_{0};
    const std::shared_ptr<counter_block> stats_ = std::make_shared<counter_block>();
};

} // namespace herald::detail
