// The bus: publish events to typed topics, subscribe handlers, drain and shut down.
#pragma once

#include <herald/clock.hpp>
#include <herald/config.hpp>
#include <herald/dead_letter.hpp>
#include <herald/detail/chrono.hpp>
#include <herald/detail/core.hpp>
#include <herald/detail/introspection.hpp>
#include <herald/detail/mailboxes.hpp>
#include <herald/detail/subscriber.hpp>
#include <herald/detail/topic_state.hpp>
#include <herald/detail/topic_table.hpp>
#include <herald/envelope.hpp>
#include <herald/errors.hpp>
#include <herald/executor.hpp>
#include <herald/metrics.hpp>
#include <herald/observer.hpp>
#include <herald/outcome.hpp>
#include <herald/publish_result.hpp>
#include <herald/subscribe_options.hpp>
#include <herald/subscription.hpp>
#include <herald/thread_pool.hpp>
#include <herald/topic.hpp>

#include <algorithm>
#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace herald {

/// How `shutdown` treats events that are still queued.
enum class shutdown_mode : std::uint8_t {
    drain,   ///< deliver everything already accepted, then stop
    discard, ///< drop what is queued (counted and returned), then stop
};

/// `bus.shutdown(herald::drain)`: deliver everything accepted, then stop.
inline constexpr shutdown_mode drain = shutdown_mode::drain;
/// `bus.shutdown(herald::discard)`: drop what is queued, then stop.
inline constexpr shutdown_mode discard = shutdown_mode::discard;

/// Settings of one bus.
struct bus_options {
    /// CloudEvents `source` stamped on every envelope.
    std::string source = "herald";
    /// Threads of the default pool; 0 means `std::thread::hardware_concurrency()`.
    std::size_t workers = 0;
    /// Replaces the default pool (then `workers` is ignored). The bus stops it at shutdown.
    std::shared_ptr<herald::executor> default_executor{};
    /// Makes the executors `make_pool` returns (empty: a `thread_pool` of that many
    /// threads). Tests use it to keep every pool under their control.
    std::function<std::shared_ptr<herald::executor>(std::size_t threads, const std::string& name)> pool_factory{};
    /// Receives handler failures; empty means one line on stderr per failure.
    error_handler on_error{};
    /// Time for retry backoff, priority aging and expiry. Empty: `steady_clock`. Pass a
    /// `herald::manual_clock` to drive that time from a test.
    std::shared_ptr<clock_source> clock{};
    /// Non-zero: event ids derive from this seed instead of a random number, so a test
    /// run twice sees the same ids (ids of two buses with one seed collide: tests only).
    std::uint64_t id_seed = 0;
    /// Dead letters each topic keeps when its dead-letter topic has no subscriber; when
    /// full the oldest is evicted (counted in `bus_stats::dead_letters_evicted`).
    std::size_t dead_letter_capacity = 1000;
    /// The capacity of async subscribers that do not set one (`subscribe_options::capacity`
    /// 0): `herald::unbounded` (the default) or a number of events. See
    /// docs/flow-control.md.
    std::size_t default_capacity = unbounded;
    /// Watch everything the bus does (see `herald::observer`); fixed for the bus's life.
    /// Without observers the bus pays nothing for them.
    std::vector<std::shared_ptr<observer>> observers{};
};

/// Settings for `basic_bus::republish`.
struct republish_options {
    /// Give the event a fresh id instead of keeping the dead letter's (an idempotent
    /// consumer then treats it as a new event).
    bool fresh_id = false;
};

namespace detail {
// clang-format 14 misreads "&>" in this concept.
// clang-format off
template <class Handler, class Event>
concept handler_for = std::invocable<Handler&, const envelope<Event>&> ||
                      std::invocable<Handler&, const Event&> ||
                      std::invocable<Handler&, Event&&>;
// clang-format on

template <class R>
inline constexpr bool is_handler_result = std::is_void_v<R> || std::is_same_v<R, outcome>;

template <class Handler, class Event>
constexpr bool handler_result_ok() {
    if constexpr (std::invocable<Handler&, const envelope<Event>&>) {
        return is_handler_result<std::invoke_result_t<Handler&, const envelope<Event>&>>;
    } else if constexpr (std::invocable<Handler&, const Event&>) {
        return is_handler_result<std::invoke_result_t<Handler&, const Event&>>;
    } else if constexpr (std::invocable<Handler&, Event&&>) {
        return is_handler_result<std::invoke_result_t<Handler&, Event&&>>;
    } else {
        return true; // reported by the "cannot be called" assertion instead
    }
}

// The checks live in class templates so that g++ and clang print the topic, the
// expected event type and the offending type in the "in instantiation of" line.
template <class Topic, class Expected, class Given>
struct check_publish {
    static_assert(std::is_convertible_v<Given, Expected>,
                  "herald: publish<Topic>(value): the value is not convertible to the topic's event type "
                  "(see 'check_publish<Topic, Expected, Given>' above)");
    static constexpr bool value = true;
};

template <class Topic, class Event, class Handler>
struct check_handler {
    static_assert(handler_for<Handler, Event>,
                  "herald: subscribe<Topic>(handler): the handler cannot be called with the topic's event; it must "
                  "accept `const Event&`, `Event` or `const herald::envelope<Event>&` "
                  "(see 'check_handler<Topic, Event, Handler>' above)");
    static_assert(handler_result_ok<Handler, Event>(),
                  "herald: subscribe<Topic>(handler): a handler must return void or herald::outcome "
                  "(see 'check_handler<Topic, Event, Handler>' above)");
    static constexpr bool value = true;
};

} // namespace detail

namespace detail {
/// Something attached to a bus that holds events of its own outside the bus's mailboxes
/// (the NATS bridge's outbox and importer). The bus keeps it alive until the bus is
/// destroyed and calls it from `drain()` and `shutdown()`; both calls must not throw.
class bus_extension {
public:
    virtual ~bus_extension() = default;
    /// `drain()`: the bus's own deliveries have settled; finish what this holds.
    virtual void on_drain() noexcept = 0;
    /// `shutdown(mode)`: publishes are refused and the bus's deliveries have settled
    /// (drain) or been dropped (discard); the executors are still running.
    virtual void on_shutdown(bool drain) noexcept = 0;
};

/// herald's own back door into a bus (used by herald::testing and the bridges).
struct bus_access {
    template <class Bus>
    static std::optional<clock_source::time_point> next_due(const Bus& bus) {
        return bus.core_.timers.next_due();
    }

    /// Attaches `extension` (see `bus_extension`).
    template <class Bus>
    static void attach(Bus& bus, std::shared_ptr<bus_extension> extension) {
        std::lock_guard lock(bus.registry_mutex_);
        bus.extensions_.push_back(std::move(extension));
    }

    /// Publishes `value` on `T` stamped with metadata from elsewhere (see `foreign_stamp`).
    template <class T, class Bus, class V>
    static publish_result publish_foreign(Bus& bus, V&& value, const publish_options& options,
                                          const foreign_stamp& foreign) {
        return bus.template topic_of<T>().publish(std::forward<V>(value), options, -1, &foreign);
    }

    /// Waits until every delivery of an event published on `T` before the call has
    /// settled (handled, failed, dead-lettered, dropped): until `T` has no delivery in
    /// flight, or, when other publishers keep it busy for `patience`, `drain()` without
    /// the extensions (which waits for everything published before it, on every topic).
    /// Throws `usage_error` from inside a handler of the bus.
    template <class T, class Bus>
    static void settle(Bus& bus, std::chrono::milliseconds patience) {
        if (inside_handler_of(&bus.core_)) {
            throw usage_error("herald: a bridge settled its imports from inside a handler");
        }
        bus.drive_executors();
        const auto& flights = bus.template topic_of<T>().flights;
        const auto deadline = std::chrono::steady_clock::now() + patience;
        auto nap = std::chrono::microseconds(20);
        // A delivery's end is visible here only after its begin (the worker got the event
        // from the publisher through the mailbox), so equal sums mean none is pending.
        while (!flights.is_quiet(0) || !flights.is_quiet(1)) {
            if (std::chrono::steady_clock::now() >= deadline) {
                bus.drain_deliveries();
                return;
            }
            std::this_thread::sleep_for(nap);
            nap = std::min(nap * 2, std::chrono::microseconds(1000));
        }
    }

    /// Hands `env` to `T`'s dead-letter path as if subscriber `who` had given up on it
    /// after `attempts` attempts; false when `T`'s policy has no dead letters.
    template <class T, class Bus>
    static bool dead_letter(Bus& bus, const envelope<typename T::event_type>& env, const std::string& who,
                            std::uint32_t attempts, dead_letter_reason reason, std::exception_ptr error) {
        if constexpr (topic_state<T>::has_dead_letters) {
            call_failure why;
            why.error = std::move(error);
            bus.template topic_of<T>().dead_letter(env, who, attempts, reason, why);
            return true;
        } else {
            (void)bus, (void)env, (void)who, (void)attempts, (void)reason, (void)error;
            return false;
        }
    }

    /// The origin number that `T`'s events published on this bus carry.
    template <class T, class Bus>
    static std::uint32_t publish_origin(Bus& bus) {
        return bus.template topic_of<T>().where_number;
    }

    /// The bus's core (its origin numbers, error reporting).
    template <class Bus>
    static bus_core& core(Bus& bus) noexcept {
        return bus.core_;
    }
};
} // namespace detail

/// An in-process event bus. `Traits` fixes compile-time settings (see
/// `default_bus_traits`); most code uses the alias `herald::bus`.
///
/// Thread safety: every member function may be called concurrently from any thread,
/// including from inside handlers, except `drain()` and `shutdown()`, which must not be
/// called from a handler of this bus (they would wait for themselves; they throw
/// `usage_error`). The destructor drains (`shutdown(herald::drain)`), so it must not run
/// inside a handler either.
template <class Traits = default_bus_traits>
class basic_bus {
    static_assert(std::is_same_v<typename Traits::clock::time_point, std::chrono::system_clock::time_point>,
                  "herald: Traits::clock must produce std::chrono::system_clock::time_point (envelope times are "
                  "wall-clock)");
    static_assert(Traits::batch_size > 0, "herald: Traits::batch_size must be at least 1");
    static_assert(Traits::max_publish_depth > 0, "herald: Traits::max_publish_depth must be at least 1");

public:
    using traits_type = Traits;

    /// Creates the bus and starts its default pool.
    explicit basic_bus(bus_options options = {})
        : core_(detail::bus_settings::of<Traits>(), std::move(options.source), std::move(options.on_error),
                std::move(options.clock), options.dead_letter_capacity, std::move(options.observers)),
          nonce_(options.id_seed != 0 ? detail::mix64(options.id_seed) : detail::random_seed()),
          default_capacity_(options.default_capacity == 0 ? unbounded : options.default_capacity) {
        if (options.default_executor) {
            default_executor_ = std::move(options.default_executor);
        } else {
            default_executor_ = std::make_shared<thread_pool>(options.workers, core_.source);
        }
        pool_factory_ = std::move(options.pool_factory);
        executors_.push_back(default_executor_);
    }

    basic_bus(const basic_bus&) = delete;
    basic_bus& operator=(const basic_bus&) = delete;

    /// Delivers everything accepted, then stops (`shutdown(herald::drain)`).
    ///
    /// Like any object, a bus must not be destroyed while another thread may still call
    /// it: the caller makes sure that no thread is inside (or about to enter) `publish`,
    /// `subscribe` or any other member except from the bus's own handlers, which the
    /// destructor waits for. Builds without `NDEBUG` notice a `publish` still running on
    /// another thread once the bus has stopped, print a diagnostic and abort.
    ~basic_bus() {
        try {
            shutdown(shutdown_mode::drain);
        } catch (...) {
            // Only reachable when destroyed inside one of its own handlers: a bug in the
            // caller that we cannot repair here.
        }
#ifndef NDEBUG
        if (core_.publishing.load(std::memory_order_seq_cst) != 0) {
            std::fputs("herald: a bus was destroyed while another thread was inside publish() on it\n", stderr);
            std::abort();
        }
#endif
    }

    /// Publishes `value` on topic `T`.
    ///
    /// Inline subscribers run before this returns, on this thread; async subscribers get
    /// their own copy queued. Never blocks on other publishers or on handlers (except the
    /// inline ones it runs). After shutdown the event is rejected: the result says
    /// `publish_status::stopped` and nobody sees it.
    ///
    /// Exceptions: if making the bus's copy of `value` throws (its copy or move
    /// constructor, `std::bad_alloc`), that exception leaves `publish` and nothing
    /// happened: no subscriber saw the event and no sequence number was used. Throws
    /// `usage_error` for a priority the topic does not have, and past
    /// `Traits::max_publish_depth` nested publishes on this thread, also before anything
    /// happens. Once the bus has its copy, the event is accepted and `publish` does not
    /// throw: a subscriber whose own copy cannot be made has a failed delivery (reported,
    /// counted, `publish_result::failed_to_queue`) and the others still get the event.
    /// Cost: O(number of subscribers of T); independent of the number of topics.
    template <topic_type T, class V = typename T::event_type>
    publish_result publish(V&& value, publish_options options = {}) {
        static_assert(detail::check_publish<T, typename T::event_type, V>::value);
#ifndef NDEBUG
        const detail::usage_count in_publish(core_.publishing);
#endif
        return topic_of<T>().publish(std::forward<V>(value), options);
    }

    /// Publishes a dead letter's event again on `T`, as a new delivery (attempt 1, a new
    /// sequence number), keeping its id and correlation id unless `fresh_id` is set.
    template <topic_type T>
    publish_result republish(const dead_letter<typename T::event_type>& letter, republish_options options = {}) {
        publish_options again;
        again.correlation = letter.original.correlation_id();
        again.id = options.fresh_id ? event_id{} : letter.original.id();
        again.priority = letter.original.priority();
        return topic_of<T>().publish(letter.original.event(), again);
    }

    /// The dead letters of `T` kept because its dead-letter topic had no subscriber,
    /// oldest first (a copy; the store keeps them). Thread-safe.
    template <topic_type T>
    [[nodiscard]] std::vector<dead_letter<typename T::event_type>> dead_letters() {
        static_assert(detail::topic_state<T>::has_dead_letters,
                      "herald: dead_letters<Topic>(): this topic's policy never dead-letters (use at_least_once, "
                      "priority with expire_after<..., on_expiry::dead_letter>, or with_dead_letters<Policy>)");
        return topic_of<T>().stored_dead_letters();
    }

    /// Empties the dead-letter store of `T` and returns what it held, oldest first.
    template <topic_type T>
    [[nodiscard]] std::vector<dead_letter<typename T::event_type>> take_dead_letters() {
        static_assert(detail::topic_state<T>::has_dead_letters,
                      "herald: take_dead_letters<Topic>(): this topic's policy never dead-letters");
        return topic_of<T>().take_dead_letters();
    }

    /// Subscribes `handler` to topic `T` and returns the handle that owns the
    /// subscription. The handler may take `const Event&`, `Event` (an async subscriber
    /// gets its own copy moved in) or `const herald::envelope<Event>&`.
    ///
    /// Events published after `subscribe` returns reach the handler (if the filter
    /// accepts them); events published concurrently with it may or may not. On a bus
    /// that has shut down, returns a disconnected subscription.
    template <topic_type T, class H>
    subscription subscribe(H&& handler, subscribe_options<typename T::event_type> options = {}) {
        using event_type = typename T::event_type;
        using handler_type = std::decay_t<H>;
        static_assert(detail::check_handler<T, event_type, handler_type>::value);

        auto& state = topic_of<T>();
        detail::subscriber_setup setup;
        setup.needs_envelope =
            std::is_invocable_v<handler_type&, const envelope<event_type>&> || options.filter.reads_envelope();
        setup.has_filter = !options.filter.is_empty();
        if (!prepare(state, options.mode, options.order, std::move(options.name), std::move(options.pool),
                     std::move(options.track), setup)) {
            return subscription{};
        }
        setup.ops = &detail::ops_of<event_type>();
        if (setup.mode == delivery::async) {
            setup.box = detail::make_mailbox<event_type>(setup.order, state.rules.lanes, Traits::initial_queue_capacity,
                                                         Traits::batch_size);
            detail::configure_flow(setup, state.where.topic,
                                   {options.capacity != 0 ? options.capacity : default_capacity_, options.overflow,
                                    options.block_timeout, options.key.rules()});
        }
        return attach(state, std::make_shared<detail::subscriber_impl<event_type, handler_type>>(
                                 std::forward<H>(handler), std::move(options.filter), std::move(setup)));
    }

    /// Creates a thread pool owned by this bus, for `subscribe_options::pool`: give a
    /// slow subscriber its own pool so it cannot starve the others. Stopped at shutdown.
    [[nodiscard]] std::shared_ptr<executor> make_pool(std::size_t threads, std::string name = {}) {
        if (name.empty()) {
            name = core_.source;
        }
        std::shared_ptr<executor> pool =
            pool_factory_ ? pool_factory_(threads, name) : std::make_shared<thread_pool>(threads, std::move(name));
        if (!pool) {
            throw usage_error("herald: bus_options::pool_factory returned no executor");
        }
        adopt(pool);
        return pool;
    }

    /// Blocks until every event published before this call (on any thread) has been
    /// handled, or discarded, by every async subscriber it was queued for. Events
    /// published meanwhile are not waited for. Throws `usage_error` when called from
    /// inside a handler of this bus.
    ///
    /// With a bridge attached (`<herald/bridge/nats.hpp>`), drain then also waits, up to
    /// the bridge's `flush_timeout`, until the events it exports are acknowledged.
    void drain() {
        drain_deliveries();
        for (const auto& extension : extensions()) {
            extension->on_drain();
        }
    }

    /// Stops accepting events (later publishes return `publish_status::stopped`), then
    /// either delivers everything already accepted (`herald::drain`) or drops what is
    /// still queued (`herald::discard`; handlers already running finish), stops every
    /// executor and disconnects every subscription. Returns the number of queued
    /// deliveries dropped (an event queued for three subscribers counts three times);
    /// always 0 with `drain`. Idempotent: later calls return 0 at once. Throws
    /// `usage_error` when called from inside a handler of this bus.
    std::size_t shutdown(shutdown_mode mode = shutdown_mode::drain) {
        if (detail::inside_handler_of(&core_)) {
            throw usage_error("herald: shutdown() called from inside a handler would wait for itself");
        }
        std::lock_guard lock(shutdown_mutex_);
        if (shut_down_) {
            return 0;
        }
        const std::uint64_t dropped_before = core_.dropped.load(std::memory_order_relaxed);
        if (mode == shutdown_mode::discard) {
            core_.discarding.store(true, std::memory_order_seq_cst);
        }
        core_.stopped.store(true, std::memory_order_seq_cst);
        core_.drain_waiters.fetch_add(1, std::memory_order_seq_cst);
        // Retries still waiting for their backoff become dead letters (drain) or are
        // dropped (discard); failures from now on are not retried either.
        core_.timers.close();
        drive_executors();
        wait_quiet({0, 1});
        core_.drain_waiters.fetch_sub(1, std::memory_order_seq_cst);
        for (const auto& extension : extensions()) {
            extension->on_shutdown(mode == shutdown_mode::drain);
        }
        const auto all_topics = topics();
        std::vector<std::shared_ptr<executor>> to_stop;
        {
            std::lock_guard registry(registry_mutex_);
            to_stop = executors_;
        }
        for (const auto& e : to_stop) {
            e->stop();
        }
        for (const auto& topic : all_topics) {
            for (const auto& subscriber : topic->subscribers()) {
                subscriber->close();
            }
        }
        shut_down_ = true;
        return static_cast<std::size_t>(core_.dropped.load(std::memory_order_relaxed) - dropped_before);
    }

    /// True once `shutdown` has begun: publishes are rejected from then on.
    [[nodiscard]] bool is_stopped() const noexcept { return core_.stopped.load(std::memory_order_acquire); }

    /// Replaces the error handler (empty: print to stderr). Thread-safe; failures being
    /// reported concurrently may still reach the previous handler.
    void set_error_handler(error_handler handler) { core_.set_error_handler(std::move(handler)); }

    /// The `source` stamped on envelopes.
    [[nodiscard]] std::string_view source() const noexcept { return core_.source; }

    /// Counters summed over topics and subscribers (cold path: takes locks, allocates).
    [[nodiscard]] bus_stats stats() const {
        bus_stats out;
        out.rejected = core_.rejected.load(std::memory_order_relaxed);
        detail::subscriber_counters sum;
        out.error_handler_failures = core_.error_handler_failures.load(std::memory_order_relaxed);
        out.observer_failures = core_.observer_failures.load(std::memory_order_relaxed);
        const auto all = topics();
        out.topics = all.size();
        for (const auto& topic : all) {
            out.published += topic->sequence.last();
            const auto tally = topic->count_all();
            sum += tally.counters;
            out.subscribers += tally.open;
            const auto kept = topic->dead_letters_kept();
            out.dead_letters_stored += kept.stored;
            out.dead_letters_evicted += kept.evicted;
        }
        out.delivered = sum.delivered;
        out.dropped = sum.dropped;
        out.refused = sum.rejected;
        out.conflated = sum.conflated;
        out.failed = sum.failed;
        out.discarded = sum.discarded;
        out.retried = sum.retried;
        out.dead_lettered = sum.dead_lettered;
        out.expired = sum.expired;
        return out;
    }

    /// A snapshot of every topic and its current subscribers: counters, mailbox depths,
    /// latency histograms (see `herald::bus_metrics`). Thread-safe, also during and after
    /// shutdown; a cold path (takes locks, allocates). What Prometheus, `report()` and
    /// `topology()` read.
    [[nodiscard]] bus_metrics metrics() const {
        bus_metrics out;
        out.source = core_.source;
        out.totals = stats();
        out.sample_every = core_.settings.latency ? core_.settings.sample_every : 0;
        for (const auto& topic : topics()) {
            topic_metrics t;
            t.name = std::string(topic->where.topic);
            t.published = topic->sequence.last();
            t.dead_letters_stored = topic->dead_letters_kept().stored;
            for (const auto& subscriber : topic->subscribers()) {
                if (subscriber->looks_live()) {
                    t.subscribers.push_back(detail::describe(*subscriber));
                }
            }
            out.topics.push_back(std::move(t));
        }
        out.taken = std::chrono::steady_clock::now();
        return out;
    }

    /// A text table for logs and terminals: per subscriber its executor, mailbox depth
    /// and high-water mark, delivered / failed / dropped counts, and p50/p99 of the time
    /// waiting and in the handler. Thread-safe; cold path.
    [[nodiscard]] std::string report() const { return detail::report_table(metrics()); }

    /// The bus as a Graphviz DOT graph: topics -> subscribers -> executors, with
    /// published counts, mailbox depths and delivery rates (events per second since the
    /// previous `topology()` call, or over the subscriber's life on the first). Render it
    /// with `dot -Tpng`. Thread-safe; cold path.
    [[nodiscard]] std::string topology() const {
        bus_metrics now = metrics();
        std::lock_guard lock(topology_mutex_);
        std::string dot = detail::topology_dot(now, last_topology_ ? &*last_topology_ : nullptr);
        last_topology_ = std::move(now);
        return dot;
    }

private:
    friend struct detail::bus_access;

    /// `drain()` without the extensions.
    void drain_deliveries() {
        if (detail::inside_handler_of(&core_)) {
            throw usage_error("herald: drain() called from inside a handler would wait for itself");
        }
        std::lock_guard lock(drain_mutex_);
        drive_executors();
        const auto old = static_cast<std::uint8_t>(core_.epoch.fetch_add(1, std::memory_order_seq_cst) & 1U);
        core_.drain_waiters.fetch_add(1, std::memory_order_seq_cst);
        wait_quiet({old});
        core_.drain_waiters.fetch_sub(1, std::memory_order_seq_cst);
    }

    std::vector<std::shared_ptr<detail::bus_extension>> extensions() const {
        std::lock_guard lock(registry_mutex_);
        return extensions_;
    }

    /// The part of `subscribe` that does not depend on the topic's types. Fills `setup`;
    /// false when the bus has stopped.
    [[gnu::noinline]] bool prepare(detail::topic_base& state, delivery mode, ordering order, std::string name,
                                   std::shared_ptr<executor> pool, tracked_objects track,
                                   detail::subscriber_setup& setup) {
        if (state.rules.prioritised && mode == delivery::async && order != ordering::serial) {
            throw usage_error("herald: subscribe to priority topic '" + std::string(state.where.topic) +
                              "' with ordering::concurrent or by_key; priority subscribers are serial");
        }
        if (core_.stopped.load(std::memory_order_acquire)) {
            return false;
        }
        setup.name = name.empty() ? std::string(state.where.topic) + "#" +
                                        std::to_string(state.names_given.fetch_add(1, std::memory_order_relaxed) + 1)
                                  : std::move(name);
        setup.mode = mode;
        setup.order = order;
        setup.track = std::move(track);
        setup.exec = mode == delivery::async && pool ? adopt(std::move(pool)) : default_executor_.get();
        setup.topic = state.shared_from_this();
        setup.policy = &state.rules;
        return true;
    }

    /// Adds a new subscriber to its topic and returns its handle (disconnected when the
    /// bus stopped meanwhile).
    [[gnu::noinline]] subscription attach(detail::topic_base& state,
                                          std::shared_ptr<detail::subscriber_base> subscriber) {
        state.add(subscriber);
        if (core_.stopped.load(std::memory_order_seq_cst)) {
            subscriber->unsubscribe();
            return subscription{};
        }
        return subscription{subscriber};
    }

    template <class T>
    detail::topic_state<T>& topic_of() {
        if (detail::topic_core* found = table_.find(topic_id_v<T>)) {
            return static_cast<detail::topic_state<T>&>(*found);
        }
        return register_topic<T>();
    }

    template <class T>
    [[gnu::noinline]] detail::topic_state<T>& register_topic() {
        std::lock_guard lock(registry_mutex_);
        return register_locked<T>();
    }

    template <class T>
    detail::topic_state<T>& register_locked() {
        if (detail::topic_core* found = table_.find(topic_id_v<T>)) {
            return static_cast<detail::topic_state<T>&>(*found);
        }
        const std::uint64_t prefix = claim_name(topic_name_v<T>, detail::type_name<T>(), topic_id_v<T>);
        auto state = std::make_shared<detail::topic_state<T>>(core_, prefix);
        if constexpr (detail::topic_state<T>::has_dead_letters) {
            // Before this topic is visible: its first failure may need the link.
            state->link_dead_letters(&register_locked<dead_letter_topic<T>>());
        }
        publish_topic(topic_name_v<T>, detail::type_name<T>(), topic_id_v<T>, state);
        return *state;
    }

    /// Refuses a second topic type with the same name; returns the topic's id prefix.
    /// Called under the registry mutex.
    std::uint64_t claim_name(std::string_view name, std::string_view type, std::uint64_t id) const {
        if (const auto clash = names_.find(name); clash != names_.end() && clash->second != type) {
            throw usage_error("herald: topic types '" + std::string(clash->second) + "' and '" + std::string(type) +
                              "' share the name '" + std::string(name) + "'; topic names must be unique");
        }
        const std::uint64_t prefix = detail::mix64(nonce_ ^ id);
        return prefix == 0 ? 1 : prefix; // the nil id stays reserved
    }

    /// Makes a registered topic visible to lookups. Called under the registry mutex.
    void publish_topic(std::string_view name, std::string_view type, std::uint64_t id,
                       const std::shared_ptr<detail::topic_core>& state) {
        topics_.push_back(state);
        names_.emplace(name, type);
        table_.insert(id, state.get());
    }

    /// Runs the work of executors driven by their caller (`herald::testing`'s manual
    /// executor) on this thread until none has anything left, so drain() on such a bus
    /// finishes instead of waiting for a thread that does not exist.
    void drive_executors() {
        std::vector<std::shared_ptr<executor>> all;
        {
            std::lock_guard registry(registry_mutex_);
            all = executors_;
        }
        for (bool ran = true; ran;) {
            ran = false;
            for (const auto& e : all) {
                ran = e->drive() || ran;
            }
        }
    }

    /// Waits until no delivery counted in `slots` is outstanding on any topic. A delivery
    /// may start another on a topic already passed (a dead letter), so the pass repeats
    /// until one sees no such start.
    void wait_quiet(std::initializer_list<std::uint8_t> slots) {
        // Publishers count their deliveries without a full fence (see
        // `topic_core::begin_flight`); this completes it: every count made before the
        // epoch moved (or the bus stopped) is visible below, and every delivery that
        // ends from now on sees `drain_waiters` and wakes this thread.
        detail::fences::heavy();
        for (;;) {
            const std::uint64_t spawned = core_.spawned.load(std::memory_order_seq_cst);
            for (const auto& topic : topics()) {
                for (const std::uint8_t slot : slots) {
                    topic->wait_flight(slot);
                }
            }
            if (core_.spawned.load(std::memory_order_seq_cst) == spawned) {
                return;
            }
        }
    }

    std::vector<std::shared_ptr<detail::topic_core>> topics() const {
        std::lock_guard lock(registry_mutex_);
        return topics_;
    }

    executor* adopt(std::shared_ptr<executor> pool) {
        std::lock_guard lock(registry_mutex_);
        executor* raw = pool.get();
        if (std::find(executors_.begin(), executors_.end(), pool) == executors_.end()) {
            executors_.push_back(std::move(pool));
        }
        return raw;
    }

    detail::bus_core core_;
    const std::uint64_t nonce_;
    /// `bus_options::default_capacity`.
    const std::size_t default_capacity_;
    std::shared_ptr<executor> default_executor_;
    std::function<std::shared_ptr<executor>(std::size_t, const std::string&)> pool_factory_;
    mutable std::mutex registry_mutex_;
    std::vector<std::shared_ptr<executor>> executors_;
    std::vector<std::shared_ptr<detail::topic_core>> topics_;
    std::vector<std::shared_ptr<detail::bus_extension>> extensions_;
    std::unordered_map<std::string_view, std::string_view> names_;
    detail::topic_table table_;
    std::mutex drain_mutex_;
    std::mutex shutdown_mutex_;
    /// The snapshot the previous `topology()` took (its rates are since then).
    mutable std::mutex topology_mutex_;
    mutable std::optional<bus_metrics> last_topology_;
    bool shut_down_ = false;
};

/// The bus with default settings.
using bus = basic_bus<>;

} // namespace herald
