// A topic's state inside one bus: its subscriber list (immutable snapshots), the publish
// path, and for retrying topics the link to the dead-letter topic and the dead-letter store.
#pragma once

#include <herald/dead_letter.hpp>
#include <herald/detail/chrono.hpp>
#include <herald/detail/core.hpp>
#include <herald/detail/erased.hpp>
#include <herald/detail/snapshot_cell.hpp>
#include <herald/detail/subscriber.hpp>
#include <herald/errors.hpp>
#include <herald/publish_result.hpp>
#include <herald/topic.hpp>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace herald::detail {

/// Counts this thread's nested publishes for the duration of one.
struct depth_scope {
    depth_scope() noexcept { ++publish_depth; }
    ~depth_scope() { --publish_depth; }
    depth_scope(const depth_scope&) = delete;
    depth_scope& operator=(const depth_scope&) = delete;
};

/// The part of a topic that does not depend on its event type: the subscriber list and
/// the publish path after the bus's copy of the event exists. Subscribers are read on
/// every publish and changed rarely, so writers copy the list under a mutex and publish
/// the copy as a new snapshot; publishers never take the mutex and never wait for a
/// writer's copy.
class topic_base : public topic_core {
public:
    /// One immutable snapshot of the subscribers, with the facts the publish path needs.
    struct list {
        std::vector<std::shared_ptr<subscriber_base>> items;
        /// How many subscribers are async.
        std::uint32_t async_count = 0;
        /// Some async subscriber has a filter.
        bool async_filtered = false;
        /// Some handler or filter reads the envelope: the publish must read the clock.
        bool needs_time = false;
        /// Some subscriber is inline on a retrying topic: its failure schedules a retry
        /// that outlives the publish.
        bool inline_retries = false;

        /// The publish must be counted for drain(): some delivery may outlive it.
        [[nodiscard]] bool needs_flight() const noexcept { return async_count != 0 || inline_retries; }
        /// The number of deliveries to count is known only after the filters ran (or an
        /// inline failure may add a retry): hold one count while they run, add one each.
        [[nodiscard]] bool counted_individually() const noexcept { return async_filtered || inline_retries; }

        /// Adds `s` to a topic whose policy retries (`retrying`) or not.
        void add(std::shared_ptr<subscriber_base> s, bool retrying) {
            if (s->mode == delivery::async) {
                ++async_count;
                async_filtered = async_filtered || s->has_filter();
            } else {
                inline_retries = inline_retries || retrying;
            }
            needs_time = needs_time || s->needs_envelope;
            items.push_back(std::move(s));
        }
    };

    topic_base(std::string_view topic_name, bus_core& owner, std::uint64_t id_prefix, const policy_info& policy_rules)
        : topic_core(topic_name, owner, id_prefix), rules(policy_rules), subscribers_(std::make_shared<const list>()) {}

    /// The current subscribers; the snapshot stays valid (and unchanged) while held.
    [[nodiscard]] std::shared_ptr<const list> snapshot() const { return subscribers_.copy(); }

    /// Checks a publish before anything happens: the priority level it asks for, and how
    /// deeply publishes nest on this thread (dead letters, `inherited_slot` >= 0, are
    /// exempt). Throws `usage_error`; returns the lane.
    std::uint8_t admit(const publish_options& options, int inherited_slot) const {
        if (rules.prioritised) {
            if (options.priority >= rules.lanes.levels) [[unlikely]] {
                refuse_priority(options.priority);
            }
        } else if (options.priority != 0) [[unlikely]] {
            refuse_priority(options.priority);
        }
        // A nested publish (an inline handler publishing) costs stack; past the limit
        // it is refused before anything happens.
        if (inherited_slot < 0 && publish_depth >= bus->settings.max_publish_depth) [[unlikely]] {
            refuse_nesting();
        }
        return options.priority;
    }

    /// The publish path once the bus has its copy `env` of the event (see
    /// `basic_bus::publish`); never throws. `inherited_slot` >= 0 publishes on behalf of
    /// a delivery that holds that drain slot (a dead letter): it is accepted even while
    /// the bus shuts down, and counted in the same slot. `me` is the calling thread's
    /// slot, claimed before the bus's copy was made (claiming may throw).
    /// `foreign`, when not null, replaces the sequence number, time, origin and attempt
    /// this bus would stamp (an event imported from another process).
    publish_result dispatch(envelope_base& env, std::uint8_t level, const publish_options& options, int inherited_slot,
                            thread_slot& me, const foreign_stamp* foreign = nullptr) {
        const depth_scope nesting;
        publish_result result;
        const auto began = bus->observed ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
        // Read without touching a reference count: the snapshot is announced in this
        // thread's slot until the publish returns.
        const snapshot_cell<list>::reader subscribers(subscribers_, me);
        const list& subs = *subscribers;

        const bool individually = subs.counted_individually();
        // Only deliveries that may outlive this call are counted for drain(). Without
        // filters on async subscribers the count is known up front: one update of the
        // shared counter, corrected at the end for subscribers that did not take it.
        const std::int64_t reserved = !subs.needs_flight() ? 0 : (individually ? 1 : subs.async_count);
        std::uint8_t slot = 0;
        if (inherited_slot >= 0) {
            slot = static_cast<std::uint8_t>(inherited_slot);
            if (reserved != 0) {
                add_spawned(slot, reserved);
            }
        } else {
            if (reserved != 0) {
                slot = begin_flight(reserved, &me);
            }
            // Pairs with shutdown's store and heavy fence, as the epoch check does with drain's.
            if (bus->stopped.load(std::memory_order_acquire)) {
                end_flights(slot, reserved, &me);
                bus->rejected.fetch_add(1, std::memory_order_relaxed);
                return result;
            }
        }
        struct flight_guard {
            topic_core* topic;
            std::uint8_t slot;
            ~flight_guard() {
                if (topic != nullptr) {
                    topic->end_flight(slot);
                }
            }
        } guard{individually ? this : nullptr, slot};

        const std::uint64_t sequence = this->sequence.next(me);
        const event_id id = options.id.is_nil() ? event_id{where.id_prefix, sequence} : options.id;
        // Reading the clock costs as much as the rest of an inline publish; skip it when
        // no handler or filter can see the time (dead letters always show it), unless the
        // event is one that latency metrics time for an async subscriber (its wait is
        // measured from it).
        const bool timed = subs.async_count != 0 && bus->settings.latency && bus->settings.sampled(sequence);
        const auto time = subs.needs_time || rules.has_dead_letters || timed ? bus->settings.wall_clock()
                                                                             : envelope_base::time_point{};
        envelope_access::stamp(env, id, sequence, time, options.correlation);
        if (current_frame != nullptr || options.causation != 0 || !options.sampled) [[unlikely]] {
            stamp_cause(env, options);
        }
        if (foreign != nullptr) [[unlikely]] {
            stamp_foreign(env, *foreign);
        }
        envelope_access::set_epoch(env, slot);
        envelope_access::set_priority(env, level);
        clock_source::time_point waiting_since{};
        if (rules.lanes.aging_ns > 0 || rules.lanes.ttl_ns > 0) {
            waiting_since = bus->clock->now();
        }
        result.status = publish_status::accepted;
        result.id = id;
        result.sequence = sequence;

        // From here on nothing throws: a subscriber whose copy cannot be made has a
        // failed delivery (reported, counted), and the others still get the event.
        const auto& items = subs.items;
        const std::size_t count = items.size();
        topic_core* const count_in = individually ? this : nullptr;
        // Serial subscribers that took a copy (bit i: items[i]); woken after one fence.
        std::uint64_t to_wake = 0;
        for (std::size_t i = 0; i < count; ++i) {
            auto& subscriber = *items[i];
            if (subscriber.mode == delivery::immediate) {
                subscriber.deliver_inline(env, result);
                continue;
            }
            const auto offered = subscriber.offer(env, i + 1 == count, level, waiting_since, count_in, slot);
            if (offered == subscriber_base::offered::queued) {
                ++result.queued;
                if (subscriber.wakes_after_fence()) {
                    if (i < 64) {
                        to_wake |= std::uint64_t{1} << i;
                    } else {
                        fences::light();
                        subscriber.wake_if_idle();
                    }
                }
            } else if (offered != subscriber_base::offered::declined) [[unlikely]] {
                note_not_queued(result, offered, subscriber.name);
            }
        }
        if (to_wake != 0) {
            // Orders every put of this publish before the reads of the strands' states
            // (the strands' half is the heavy fence in `keeps_strand`).
            fences::light();
            for (; to_wake != 0; to_wake &= to_wake - 1) {
                items[static_cast<std::size_t>(std::countr_zero(to_wake))]->wake_if_idle();
            }
        }
        if (!individually && reserved != 0 && result.queued != subs.async_count) {
            // Counted up front for every async subscriber; some did not take it.
            end_flights(slot, subs.async_count - result.queued, &me);
        }
        if (bus->observed) [[unlikely]] {
            bus->notify([&](observer& o) { o.on_publish(env, result, began); });
        }
        return result;
    }

    void add(std::shared_ptr<subscriber_base> joining) {
        std::lock_guard lock(mutex_);
        auto next = std::make_shared<list>(*subscribers_.copy());
        next->add(std::move(joining), rules.retrying);
        subscribers_.store(std::move(next));
    }

    void remove(const subscriber_core& gone) override {
        std::lock_guard lock(mutex_);
        const auto current = subscribers_.copy();
        const auto& items = current->items;
        if (std::none_of(items.begin(), items.end(),
                         [&](const auto& s) { return static_cast<const subscriber_core*>(s.get()) == &gone; })) {
            return;
        }
        auto next = std::make_shared<list>();
        next->items.reserve(items.size() - 1);
        for (const auto& s : items) {
            if (static_cast<const subscriber_core*>(s.get()) != &gone) {
                next->add(s, rules.retrying);
            }
        }
        subscribers_.store(std::move(next));
        depart(gone.counter_handle());
    }

    [[nodiscard]] tally count_all() const override {
        std::lock_guard lock(mutex_);
        tally out;
        out.counters = departed();
        for (const auto& s : subscribers_.copy()->items) {
            out.counters += s->counters();
            out.open += s->looks_live() ? 1U : 0U;
        }
        return out;
    }

    [[nodiscard]] std::vector<std::shared_ptr<subscriber_base>> subscribers() const override {
        const auto current = snapshot();
        return {current->items.begin(), current->items.end()};
    }

    /// Numbers default subscription names ("orders#3").
    std::atomic<std::uint64_t> names_given{0};
    /// The topic's delivery rules.
    const policy_info& rules;

private:
    /// Counts in `result` an async subscriber that did not queue the event.
    [[gnu::cold, gnu::noinline]] static void note_not_queued(publish_result& result, subscriber_base::offered why,
                                                             const std::string& who) noexcept {
        switch (why) {
        case subscriber_base::offered::failed:
            ++result.failed_to_queue;
            break;
        case subscriber_base::offered::refused:
            ++result.refused;
            try {
                result.refused_by.push_back(who);
            } catch (...) {
                // Out of memory: the count still says it.
            }
            break;
        case subscriber_base::offered::dropped:
        case subscriber_base::offered::dead_lettered:
            ++result.overflowed;
            break;
        case subscriber_base::offered::declined:
        case subscriber_base::offered::queued:
            break;
        }
    }

    /// Fills in what the options do not give from the event being handled on this thread
    /// (if any): the correlation id (with its `sampled` flag) and the causation id.
    [[gnu::cold, gnu::noinline]] static void stamp_cause(envelope_base& env, const publish_options& options) noexcept {
        event_id correlation = options.correlation;
        std::uint64_t causation = options.causation;
        bool sampled = options.sampled;
        if (const envelope_base* cause = handled_event()) {
            if (correlation.is_nil()) {
                correlation = cause->trace_id();
                sampled = cause->sampled();
            }
            if (causation == 0) {
                causation = cause->span_id();
            }
        }
        envelope_access::set_cause(env, correlation, causation, sampled);
    }

    [[gnu::cold, gnu::noinline]] static void stamp_foreign(envelope_base& env, const foreign_stamp& foreign) noexcept {
        envelope_access::stamp(env, env.id(), foreign.sequence, foreign.time, env.correlation_id());
        envelope_access::set_attempt(env, foreign.attempt);
        envelope_access::set_origin(env, foreign.origin);
    }

    /// Throws the `usage_error` of a publish nested too deeply (kept off the hot path).
    [[noreturn, gnu::cold, gnu::noinline]] void refuse_nesting() const {
        throw usage_error("herald: publish on topic '" + std::string(where.topic) + "' nested " +
                          std::to_string(publish_depth) +
                          " publishes deep on this thread (Traits::max_publish_depth); an inline handler cycle "
                          "between topics?");
    }

    [[noreturn, gnu::cold, gnu::noinline]] void refuse_priority(std::uint8_t asked) const {
        if (!rules.prioritised) {
            throw usage_error("herald: publish with a priority on topic '" + std::string(where.topic) +
                              "', whose policy has no priorities");
        }
        throw usage_error("herald: publish on topic '" + std::string(where.topic) + "' with priority " +
                          std::to_string(asked) + ", but its levels are 0 to " +
                          std::to_string(rules.lanes.levels - 1));
    }

    mutable std::mutex mutex_;
    snapshot_cell<list> subscribers_;
};

/// The dead-letter side of a topic whose policy dead-letters: the link to the
/// dead-letter topic and the bounded store of dead letters nobody took.
template <class Event>
class dead_letter_store {
public:
    /// Builds the dead letter and publishes it on `to` (null: no topic linked), or keeps
    /// it; never throws (a dead letter that cannot be built is counted as evicted).
    template <class Publish>
    void take(const envelope_base& env, const std::string& subscriber_name, std::uint32_t attempts,
              dead_letter_reason reason, const call_failure& why, std::size_t capacity, Publish&& publish) noexcept {
        try {
            herald::dead_letter<Event> letter{
                static_cast<const envelope<Event>&>(env), subscriber_name, attempts, reason, why.message(), why.error,
                std::chrono::system_clock::now()};
            const publish_result published = publish(std::as_const(letter));
            if (published.queued + published.handled_inline + published.failed_inline == 0) {
                keep(std::move(letter), capacity);
            }
        } catch (...) {
            std::lock_guard lock(mutex_);
            ++evicted_;
        }
    }

    /// A copy of the dead letters in the store, oldest first.
    [[nodiscard]] std::vector<herald::dead_letter<Event>> stored() const {
        std::lock_guard lock(mutex_);
        return {store_.begin(), store_.end()};
    }

    /// Empties the store and returns what it held, oldest first.
    [[nodiscard]] std::vector<herald::dead_letter<Event>> take_all() {
        std::lock_guard lock(mutex_);
        std::vector<herald::dead_letter<Event>> out(std::make_move_iterator(store_.begin()),
                                                    std::make_move_iterator(store_.end()));
        store_.clear();
        return out;
    }

    [[nodiscard]] topic_core::dead_letter_counts counts() const {
        std::lock_guard lock(mutex_);
        return {store_.size(), evicted_};
    }

private:
    void keep(herald::dead_letter<Event>&& letter, std::size_t capacity) {
        std::lock_guard lock(mutex_);
        if (capacity == 0) {
            ++evicted_;
            return;
        }
        if (store_.size() >= capacity) {
            store_.pop_front();
            ++evicted_;
        }
        store_.push_back(std::move(letter));
    }

    mutable std::mutex mutex_;
    std::deque<herald::dead_letter<Event>> store_;
    std::uint64_t evicted_ = 0;
};

/// Topic `T` inside one bus: what must know the event type (making the bus's copy of a
/// published value; dead letters), on top of `topic_base`.
template <class T>
class topic_state final : public topic_base {
public:
    using event_type = typename T::event_type;
    using policy = typename T::policy_type;
    /// Failed or expired deliveries end up on `dead_letter_topic<T>`.
    static constexpr bool has_dead_letters = policy_table<policy>::value.has_dead_letters;
    static constexpr bool prioritised = policy_table<policy>::value.prioritised;
    /// The dead-letter topic's state (named only when it exists, so that dead-letter
    /// topics do not recurse).
    using dead_letter_state = std::conditional_t<has_dead_letters, topic_state<dead_letter_topic<T>>, void>;

    topic_state(bus_core& owner, std::uint64_t id_prefix)
        : topic_base(topic_name_v<T>, owner, id_prefix, policy_info_of<policy>()) {}

    /// The publish path (see `basic_bus::publish`).
    template <class V>
    publish_result publish(V&& value, const publish_options& options, int inherited_slot = -1,
                           const foreign_stamp* foreign = nullptr) {
        const std::uint8_t level = admit(options, inherited_slot);
        // Claimed before anything happens: a thread's first publish allocates its slot,
        // which may throw std::bad_alloc.
        thread_slot& me = this_thread_slot();
        // The envelope's copy (or move) of the value is made before anything is counted:
        // if it throws, the exception leaves publish and nobody saw the event, no
        // sequence number was used, nothing waits for it.
        auto env = envelope_access::make<event_type>(where_number, std::forward<V>(value));
        return dispatch(env, level, options, inherited_slot, me, foreign);
    }

    /// Connects the dead-letter topic (the bus does it when it registers this topic).
    void link_dead_letters(dead_letter_state* topic) noexcept requires has_dead_letters { dead_letters_ = topic; }

    void dead_letter(const envelope_base& env, const std::string& subscriber_name, std::uint32_t attempts,
                     dead_letter_reason reason, const call_failure& why) noexcept override {
        if constexpr (has_dead_letters) {
            store_.take(env, subscriber_name, attempts, reason, why, bus->dead_letter_capacity,
                        [&](const herald::dead_letter<event_type>& letter) {
                            if (dead_letters_ == nullptr) {
                                return publish_result{};
                            }
                            publish_options caused;
                            caused.correlation = env.trace_id();
                            caused.causation = env.span_id();
                            caused.sampled = env.sampled();
                            return dead_letters_->publish(letter, caused, envelope_access::epoch(env));
                        });
        } else {
            topic_base::dead_letter(env, subscriber_name, attempts, reason, why);
        }
    }

    /// A copy of the dead letters in the store, oldest first.
    [[nodiscard]] std::vector<herald::dead_letter<event_type>> stored_dead_letters() const requires has_dead_letters {
        return store_.stored();
    }

    /// Empties the store and returns what it held, oldest first.
    [[nodiscard]] std::vector<herald::dead_letter<event_type>> take_dead_letters() requires has_dead_letters {
        return store_.take_all();
    }

    [[nodiscard]] dead_letter_counts dead_letters_kept() const override {
        if constexpr (has_dead_letters) {
            return store_.counts();
        } else {
            return {};
        }
    }

private:
    struct no_store {};
    dead_letter_state* dead_letters_ = nullptr;
    [[no_unique_address]] std::conditional_t<has_dead_letters, dead_letter_store<event_type>, no_store> store_;
};

} // namespace herald::detail
