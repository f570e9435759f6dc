// State shared by a bus, its topics and its subscribers: counters, drain epochs, errors.
#pragma once

#include <herald/clock.hpp>
#include <herald/dead_letter.hpp>
#include <herald/detail/chrono.hpp>
#include <herald/detail/cpu_pause.hpp>
#include <herald/detail/flight_counts.hpp>
#include <herald/detail/sequence_counter.hpp>
#include <herald/detail/thread_slots.hpp>
#include <herald/detail/timer_service.hpp>
#include <herald/envelope.hpp>
#include <herald/errors.hpp>
#include <herald/observer.hpp>
#include <herald/outcome.hpp>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#if defined(__linux__) && __has_include(<sys/random.h>)
#include <sys/random.h>
#endif

namespace herald::detail {

/// A 64-bit mixer (splitmix64's finaliser): ids and jitter from counters.
inline std::uint64_t mix64(std::uint64_t x) noexcept {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30U)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27U)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31U);
}

/// 64 unpredictable bits for a bus's id prefix: the kernel's random pool where there is
/// one (`getrandom`, which never blocks once the pool is ready), mixed with both clocks
/// and a stack address, so two buses (or processes) differ even where it is missing.
/// (`std::random_device` would do, but `<random>` costs every translation unit about a
/// third of a second of compilation.)
inline std::uint64_t random_seed() noexcept {
    std::uint64_t bits = 0;
#if defined(__linux__) && __has_include(<sys/random.h>)
    if (::getrandom(&bits, sizeof bits, GRND_NONBLOCK) != static_cast<ssize_t>(sizeof bits)) {
        bits = 0;
    }
#endif
    const auto steady = static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
    const auto wall = static_cast<std::uint64_t>(std::chrono::system_clock::now().time_since_epoch().count());
    const auto where = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(&bits));
    return mix64(bits ^ mix64(steady ^ mix64(wall ^ where)));
}

/// The settings of `Traits` that delivery reads, as run-time values, so that the code
/// they steer is compiled once and not once per bus type and topic.
struct bus_settings {
    std::size_t batch_size = 64;
    std::size_t initial_queue_capacity = 64;
    std::size_t queue_shrink_threshold = 16384;
    std::chrono::nanoseconds queue_shrink_interval{std::chrono::milliseconds(100)};
    std::uint32_t max_publish_depth = 64;
    /// `Traits::clock::now()`: the wall-clock time stamped on envelopes.
    std::chrono::system_clock::time_point (*wall_clock)() noexcept = nullptr;
    /// `Traits::latency_metrics`, and the sample rate `Traits::latency_sample_every`.
    bool latency = true;
    std::uint32_t sample_every = 64;

    /// Whether the event with this sequence number is one that latency metrics time.
    [[nodiscard]] bool sampled(std::uint64_t sequence) const noexcept {
        return sequence * 0x9e3779b97f4a7c15ULL <= UINT64_MAX / sample_every;
    }

    template <class Traits>
    static bus_settings of() noexcept {
        bus_settings s;
        s.batch_size = Traits::batch_size;
        s.initial_queue_capacity = Traits::initial_queue_capacity;
        s.queue_shrink_threshold = Traits::queue_shrink_threshold;
        s.queue_shrink_interval = Traits::queue_shrink_interval;
        s.max_publish_depth = Traits::max_publish_depth;
        s.wall_clock = []() noexcept { return Traits::clock::now(); };
        s.latency = Traits::latency_metrics;
        s.sample_every = Traits::latency_sample_every;
        return s;
    }
};

/// Why one handler call did not succeed: what it threw, or the outcome it returned.
struct call_failure {
    std::exception_ptr error;
    std::optional<outcome> told;

    [[nodiscard]] std::string message() const {
        return failure_message(error, told ? std::string_view(told->reason()) : std::string_view());
    }
};

/// The metadata of an envelope that an error report needs.
struct envelope_meta {
    event_id id;
    std::uint64_t sequence = 0;
    std::uint32_t attempt = 1;
};

inline envelope_meta meta_of(const envelope_base& env) noexcept { return {env.id(), env.sequence(), env.attempt()}; }

/// True while this thread runs an observer's call (its own actions are not observed).
inline thread_local bool observing_now = false;

/// The part of a bus that subscribers and topics reach during delivery. It lives as long
/// as the bus, and no worker runs after the bus has stopped its executors.
struct bus_core {
    bus_core(const bus_settings& tuned, std::string source_name, error_handler handler,
             std::shared_ptr<clock_source> time, std::size_t dead_letters_kept,
             std::vector<std::shared_ptr<observer>> watchers = {})
        : settings(tuned),
          source(std::move(source_name)),
          clock(time ? std::move(time) : std::make_shared<steady_clock_source>()),
          timers(clock),
          dead_letter_capacity(dead_letters_kept),
          observers(without_nulls(std::move(watchers))),
          observed(!observers.empty()),
          on_error(std::make_shared<const error_handler>(std::move(handler))) {}

    /// Calls `call(observer)` for each observer, catching (and counting) what they throw;
    /// skipped inside an observer's call on this thread. Callers check `observed` first.
    template <class Call>
    [[gnu::cold]] void notify(const Call& call) noexcept {
        if (observing_now) {
            return;
        }
        observing_now = true;
        for (const auto& o : observers) {
            try {
                call(*o);
            } catch (...) {
                observer_failures.fetch_add(1, std::memory_order_relaxed);
            }
        }
        observing_now = false;
    }

    /// Sends a failure to the error handler; never throws. The handler is copied out of
    /// the lock before it runs, so it may replace itself.
    void report(const delivery_error& failure) noexcept {
        std::shared_ptr<const error_handler> handler;
        {
            std::lock_guard lock(error_mutex);
            handler = on_error;
        }
        try {
            if (handler && *handler) {
                (*handler)(failure);
            } else {
                print_error(failure);
            }
        } catch (...) {
            error_handler_failures.fetch_add(1, std::memory_order_relaxed);
        }
    }

    /// Wakes drain() calls waiting in `topic_core::wait_flight`.
    [[gnu::cold, gnu::noinline]] void note_progress() noexcept {
        progress.fetch_add(1, std::memory_order_release);
        progress.notify_all();
    }

    void set_error_handler(error_handler handler) {
        auto replacement = std::make_shared<const error_handler>(std::move(handler));
        std::lock_guard lock(error_mutex);
        on_error = std::move(replacement);
    }

    /// The default error handler: one line on stderr.
    static void print_error(const delivery_error& failure) {
        const std::string what = failure.message();
        const std::string id = failure.id.to_string();
        std::fprintf(stderr, "herald: subscriber '%.*s' failed on topic '%.*s', event %s (attempt %u): %s\n",
                     static_cast<int>(failure.subscriber.size()), failure.subscriber.data(),
                     static_cast<int>(failure.topic.size()), failure.topic.data(), id.c_str(),
                     static_cast<unsigned>(failure.attempt), what.c_str());
    }

    const bus_settings settings;
    const std::string source;
    /// Time for timers, priority aging and expiry.
    const std::shared_ptr<clock_source> clock;
    /// Retries waiting for their backoff.
    timer_service timers;
    /// How many dead letters each topic keeps when its dead-letter topic has no subscriber.
    const std::size_t dead_letter_capacity;
    std::atomic<bool> stopped{false};
    std::atomic<bool> discarding{false};
    /// Drain epoch: publishes count their queued deliveries in slot `epoch & 1`.
    std::atomic<std::uint64_t> epoch{0};
    std::atomic<std::uint32_t> drain_waiters{0};
    /// Bumped (and waited on) when a delivery ends while drain() waits.
    std::atomic<std::uint32_t> progress{0};
    /// Deliveries begun on behalf of another (dead letters): drain() passes over the
    /// topics again when this moved while it waited.
    std::atomic<std::uint64_t> spawned{0};
    std::atomic<std::uint64_t> dropped{0};
    std::atomic<std::uint64_t> rejected{0};
    std::atomic<std::uint64_t> error_handler_failures{0};
    /// The observers given at construction (`bus_options::observers`); never changes.
    const std::vector<std::shared_ptr<observer>> observers;
    /// Whether there is any observer: the one test the hot paths make for them.
    const bool observed;
    std::atomic<std::uint64_t> observer_failures{0};
    /// Publishes running now (counted only in builds without NDEBUG): the destructor's
    /// check for a bus destroyed under a publisher.
    std::atomic<std::int32_t> publishing{0};

private:
    static std::vector<std::shared_ptr<observer>> without_nulls(std::vector<std::shared_ptr<observer>> all) {
        std::erase(all, nullptr);
        return all;
    }

    std::mutex error_mutex;
    std::shared_ptr<const error_handler> on_error;
};

/// Counts a call in `counter` for its duration.
class usage_count {
public:
    explicit usage_count(std::atomic<std::int32_t>& counter) noexcept : counter_(counter) {
        counter_.fetch_add(1, std::memory_order_seq_cst);
    }
    ~usage_count() { counter_.fetch_sub(1, std::memory_order_seq_cst); }
    usage_count(const usage_count&) = delete;
    usage_count& operator=(const usage_count&) = delete;

private:
    std::atomic<std::int32_t>& counter_;
};

class subscriber_core;
class subscriber_base;

/// One entry of the per-thread stack of user code that herald is running on this thread
/// (a handler, a filter, an error handler): lets `unsubscribe()` from inside it skip
/// waiting for itself, and lets `drain()`/`shutdown()` refuse to run inside it.
struct running_frame {
    /// The subscriber whose code runs (null for code that belongs to no subscriber).
    const subscriber_core* subscriber;
    const bus_core* bus;
    const running_frame* outer;
    /// This frame holds one count of the subscriber's gate (queued deliveries, retries,
    /// a serial strand's batch); calls announced in the thread's slot hold none.
    bool gated;
    /// The event the handler or filter of this frame is looking at (null for other
    /// frames): what a publish from inside it was caused by.
    const envelope_base* handling;
};

inline thread_local const running_frame* current_frame = nullptr;

/// Pushes a frame for the duration of a scope.
class frame_scope {
public:
    frame_scope(const subscriber_core* subscriber, const bus_core* bus, bool gated,
                const envelope_base* handling = nullptr) noexcept
        : frame_{subscriber, bus, current_frame, gated, handling} {
        current_frame = &frame_;
    }
    ~frame_scope() { current_frame = frame_.outer; }
    frame_scope(const frame_scope&) = delete;
    frame_scope& operator=(const frame_scope&) = delete;

private:
    running_frame frame_;
};

/// How many gate counts of `subscriber` this thread holds (nested publishes, a strand's
/// batch): the part of its gate count that unsubscribe must not wait for.
inline std::uint32_t gated_frames_of(const subscriber_core* subscriber) noexcept {
    std::uint32_t count = 0;
    for (const running_frame* f = current_frame; f != nullptr; f = f->outer) {
        count += f->subscriber == subscriber && f->gated ? 1U : 0U;
    }
    return count;
}

/// Whether this thread is running user code called by `bus`.
inline bool inside_handler_of(const bus_core* bus) noexcept {
    for (const running_frame* f = current_frame; f != nullptr; f = f->outer) {
        if (f->bus == bus) {
            return true;
        }
    }
    return false;
}

/// The event whose handler (or filter) this thread is running, innermost first; null
/// outside handlers. A publish from there is caused by it.
inline const envelope_base* handled_event() noexcept {
    for (const running_frame* f = current_frame; f != nullptr; f = f->outer) {
        if (f->handling != nullptr) {
            return f->handling;
        }
    }
    return nullptr;
}

/// How deeply publishes nest on this thread (an inline handler that publishes, whose
/// inline handler publishes...): bounded by `Traits::max_publish_depth`.
inline thread_local std::uint32_t publish_depth = 0;

/// Counters of one subscriber, readable while it runs.
struct subscriber_counters {
    std::uint64_t accepted = 0;
    std::uint64_t delivered = 0;
    std::uint64_t failed = 0;
    std::uint64_t discarded = 0;
    std::uint64_t dropped = 0;
    std::uint64_t rejected = 0;
    std::uint64_t conflated = 0;
    std::uint64_t retried = 0;
    std::uint64_t dead_lettered = 0;
    std::uint64_t expired = 0;

    subscriber_counters& operator+=(const subscriber_counters& more) noexcept {
        accepted += more.accepted;
        delivered += more.delivered;
        failed += more.failed;
        discarded += more.discarded;
        dropped += more.dropped;
        rejected += more.rejected;
        conflated += more.conflated;
        retried += more.retried;
        dead_lettered += more.dead_lettered;
        expired += more.expired;
        return *this;
    }
};

/// A subscriber's live counters, in their own block so the subscription handle can read
/// them after the subscriber itself is gone.
struct counter_block {
    /// Counts made on publishers' threads (events accepted, inline deliveries) go to the
    /// shard of the thread's slot index, with a plain load and store (each shard has one
    /// writer at a time, and its own cache line); threads past the shards use the shared
    /// counters.
    static constexpr std::size_t shards = 8;
    struct alignas(64) shard {
        std::atomic<std::uint64_t> delivered{0};
        std::atomic<std::uint64_t> accepted{0};
    };

    std::atomic<std::uint64_t> accepted{0};
    std::atomic<std::uint64_t> delivered{0};
    std::atomic<std::uint64_t> failed{0};
    std::atomic<std::uint64_t> discarded{0};
    std::atomic<std::uint64_t> dropped{0};
    std::atomic<std::uint64_t> rejected{0};
    std::atomic<std::uint64_t> conflated{0};
    std::atomic<std::uint64_t> retried{0};
    std::atomic<std::uint64_t> dead_lettered{0};
    std::atomic<std::uint64_t> expired{0};

    shard by_thread[shards];

    /// One inline delivery by the thread whose slot index is `index`. Such a call is also
    /// an accepted event: `read` counts it as both, so the inline hot path stores once.
    void count_inline(std::uint32_t index) noexcept { bump(index, &shard::delivered, delivered); }

    /// One event accepted (the filter let it through) on the thread whose slot is `me`.
    void count_accepted(const thread_slot* me) noexcept {
        bump(me != nullptr ? me->index : shards, &shard::accepted, accepted);
    }

    /// One event accepted in shard `index` (`shards`: the shared counter).
    void count_accepted_in(std::uint32_t index) noexcept { bump(index, &shard::accepted, accepted); }

    [[nodiscard]] subscriber_counters read() const noexcept {
        subscriber_counters out;
        out.accepted = accepted.load(std::memory_order_relaxed);
        out.delivered = delivered.load(std::memory_order_relaxed);
        for (const auto& s : by_thread) {
            const std::uint64_t inline_handled = s.delivered.load(std::memory_order_relaxed);
            out.accepted += s.accepted.load(std::memory_order_relaxed) + inline_handled;
            out.delivered += inline_handled;
        }
        out.failed = failed.load(std::memory_order_relaxed);
        out.discarded = discarded.load(std::memory_order_relaxed);
        out.dropped = dropped.load(std::memory_order_relaxed);
        out.rejected = rejected.load(std::memory_order_relaxed);
        out.conflated = conflated.load(std::memory_order_relaxed);
        out.retried = retried.load(std::memory_order_relaxed);
        out.dead_lettered = dead_lettered.load(std::memory_order_relaxed);
        out.expired = expired.load(std::memory_order_relaxed);
        return out;
    }

private:
    [[gnu::always_inline]] void bump(std::uint32_t index, std::atomic<std::uint64_t> shard::*cell,
                                     std::atomic<std::uint64_t>& shared) noexcept {
        if (index < shards) {
            auto& c = by_thread[index].*cell;
            c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        } else {
            shared.fetch_add(1, std::memory_order_relaxed);
        }
    }
};

/// The untyped part of a topic: identity, sequence numbers, in-flight counters.
class topic_core : public std::enable_shared_from_this<topic_core> {
public:
    topic_core(std::string_view topic_name, bus_core& owner, std::uint64_t id_prefix)
        : bus(&owner), where{topic_name, owner.source, id_prefix} {}
    virtual ~topic_core() { origin_table::instance().remove(where_number); }
    topic_core(const topic_core&) = delete;
    topic_core& operator=(const topic_core&) = delete;

    /// Removes a subscriber from the topic's list; idempotent.
    virtual void remove(const subscriber_core& gone) = 0;
    /// Every current subscriber (a copy; cold path).
    [[nodiscard]] virtual std::vector<std::shared_ptr<subscriber_base>> subscribers() const = 0;

    /// Dead letters kept in this topic's store, and dead letters the full store evicted.
    struct dead_letter_counts {
        std::uint64_t stored = 0;
        std::uint64_t evicted = 0;
    };
    [[nodiscard]] virtual dead_letter_counts dead_letters_kept() const { return {}; }

    /// Publishes a dead letter for `env` (an envelope of this topic's event type) on the
    /// dead-letter topic, counted in the drain slot `env` holds, or keeps it in the
    /// bounded store when nobody takes it. Never throws. Topics without dead letters
    /// ignore it.
    virtual void dead_letter(const envelope_base& env, const std::string& subscriber, std::uint32_t attempts,
                             dead_letter_reason reason, const call_failure& why) noexcept {
        (void)env;
        (void)subscriber;
        (void)attempts;
        (void)reason;
        (void)why;
    }

    /// Registers `count` deliveries in the current drain epoch for the thread whose slot
    /// is `me`, and returns the epoch slot. The re-check makes a publish that raced with
    /// `drain()` land in the slot that drain will look at, so drain never misses an event
    /// published before it: drain moves the epoch and then runs `fences::heavy()`, so this
    /// thread either sees the new epoch here or has its count visible to drain.
    [[gnu::always_inline]] std::uint8_t begin_flight(std::int64_t count, const thread_slot* me) noexcept {
        std::uint64_t seen = bus->epoch.load(std::memory_order_acquire);
        for (;;) {
            const auto slot = static_cast<std::uint8_t>(seen & 1U);
            flights.begin(slot, count, me);
            fences::light();
            const std::uint64_t now = bus->epoch.load(std::memory_order_acquire);
            if (now == seen) {
                return slot;
            }
            end_flights(slot, count, me);
            seen = now;
        }
    }

    /// Counts one more delivery in an epoch slot the caller already holds.
    void add_flight(std::uint8_t slot) noexcept { flights.begin(slot, 1, current_slot); }

    /// Counts `count` deliveries begun on behalf of a delivery of another topic that holds
    /// `slot` there (a dead letter); drain() notices through `bus_core::spawned`.
    void add_spawned(std::uint8_t slot, std::int64_t count) noexcept {
        bus->spawned.fetch_add(1, std::memory_order_seq_cst);
        flights.begin(slot, count, current_slot);
    }

    /// What the topic's subscribers counted, and how many are open.
    struct tally {
        subscriber_counters counters;
        std::size_t open = 0;
    };
    /// Sums the counters of current and departed subscribers, consistently with
    /// concurrent unsubscribes (a subscriber is in exactly one of the two sets).
    [[nodiscard]] virtual tally count_all() const = 0;

protected:
    /// Keeps the counters of a subscriber that left the list (called under the topic's
    /// writer mutex, with the removal). They are read live while anyone else holds the
    /// block (the subscriber's last queued events may still be counted as discarded),
    /// then folded into a plain sum.
    void depart(std::shared_ptr<const counter_block> block) noexcept {
        if (departed_.size() >= compact_at_) {
            // Amortised O(1) per departure: blocks nobody else holds any more are final,
            // so they are folded into the sum and their memory goes back; the next
            // compaction waits until the list has doubled again.
            (void)departed();
            compact_at_ = std::max<std::size_t>(64, 2 * departed_.size());
        }
        try {
            departed_.push_back(block);
        } catch (...) {
            folded_ += block->read(); // out of memory: a snapshot of them, not live
        }
    }

    /// The counters of departed subscribers; call under the topic's writer mutex.
    [[nodiscard]] subscriber_counters departed() const noexcept {
        subscriber_counters sum = folded_;
        std::size_t kept = 0;
        for (auto& block : departed_) {
            if (block.use_count() == 1) {
                // The subscriber and its handle are gone: the counters are final.
                std::atomic_thread_fence(std::memory_order_acquire);
                const subscriber_counters last = block->read();
                folded_ += last;
                sum += last;
            } else {
                sum += block->read();
                departed_[kept++] = std::move(block);
            }
        }
        departed_.resize(kept);
        return sum;
    }

public:
    /// One delivery of the slot is finished (handled, failed, discarded or dropped).
    void end_flight(std::uint8_t slot) noexcept { end_flights(slot, 1, current_slot); }

    /// `count` deliveries of the slot are finished, counted by the thread whose slot is
    /// `me`. Wakes a waiting drain() (which announced itself, then ran `fences::heavy()`,
    /// so either it sees this end or this sees it waiting).
    void end_flights(std::uint8_t slot, std::int64_t count, const thread_slot* me = current_slot) noexcept {
        if (count == 0) {
            return;
        }
        flights.end(slot, count, me);
        fences::light();
        if (bus->drain_waiters.load(std::memory_order_acquire) != 0) [[unlikely]] {
            bus->note_progress();
        }
    }

    /// Blocks until no delivery counted in `slot` is outstanding. The caller has announced
    /// itself in `bus_core::drain_waiters` and run `fences::heavy()`.
    void wait_flight(std::uint8_t slot) const noexcept {
        for (;;) {
            const std::uint32_t seen = bus->progress.load(std::memory_order_acquire);
            if (flights.is_quiet(slot)) {
                return;
            }
            bus->progress.wait(seen, std::memory_order_acquire);
        }
    }

    bus_core* const bus;
    const origin where;
    /// `where`'s number, which envelopes carry.
    const std::uint32_t where_number = origin_table::instance().add(&where);
    /// The topic's sequence numbers.
    sequence_counter sequence;
    /// Deliveries in flight per drain epoch slot.
    flight_counts flights;

private:
    mutable std::vector<std::shared_ptr<const counter_block>> departed_;
    mutable subscriber_counters folded_;
    std::size_t compact_at_ = 64;
};

} // namespace herald::detail
