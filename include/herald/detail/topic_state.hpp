// A topic's state inside one bus: its subscriber list (immutable snapshots), the publish
// path, and for retrying topics the link to the dead-letter topic and the dead-letter store.
#pragma once

#include <herald/dead_letter.hpp>
#include <herald/detail/core.hpp>
#include <herald/detail/snapshot_cell.hpp>
#include <herald/detail/subscriber.hpp>
#include <herald/errors.hpp>
#include <herald/publish_result.hpp>
#include <herald/topic.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace herald::detail {

template <class Policy>
constexpr bool expiry_dead_letters() {
    if constexpr (prioritising_policy<Policy>) {
        return Policy::expired_to_dead_letters;
    } else {
        return false;
    }
}

template <class Policy>
constexpr bool reads_wait_time() {
    if constexpr (prioritising_policy<Policy>) {
        return Policy::aging_ns > 0 || Policy::ttl_ns > 0;
    } else {
        return false;
    }
}

/// Counts this thread's nested publishes for the duration of one.
struct depth_scope {
    depth_scope() noexcept { ++publish_depth; }
    ~depth_scope() { --publish_depth; }
    depth_scope(const depth_scope&) = delete;
    depth_scope& operator=(const depth_scope&) = delete;
};

/// Subscribers are read on every publish and changed rarely, so writers copy the list
/// under a mutex and publish the copy as a new snapshot; publishers never take the
/// mutex and never wait for a writer's copy.
template <class T, class Traits>
class topic_state final : public topic_core {
public:
    using event_type = typename T::event_type;
    using policy = typename T::policy_type;
    using subscriber_type = subscriber<T, Traits>;
    static constexpr bool retrying = subscriber_type::retrying;
    static constexpr bool prioritised = subscriber_type::prioritised;
    /// Failed or expired deliveries end up on `dead_letter_topic<T>`.
    static constexpr bool has_dead_letters = retrying || expiry_dead_letters<policy>();
    /// The dead-letter topic's state (named only when it exists, so that dead-letter
    /// topics do not recurse).
    using dead_letter_state = std::conditional_t<has_dead_letters, topic_state<dead_letter_topic<T>, Traits>, void>;

    /// One immutable snapshot of the subscribers, with the facts the publish path needs.
    struct list {
        std::vector<std::shared_ptr<subscriber_type>> items;
        /// How many subscribers are async.
        std::uint32_t async_count = 0;
        /// Some subscriber is inline.
        bool any_inline = false;
        /// Some async subscriber has a filter.
        bool async_filtered = false;
        /// Some handler or filter reads the envelope: the publish must read the clock.
        bool needs_time = false;

        /// The publish must be counted for drain(): some delivery may outlive it.
        [[nodiscard]] bool needs_flight() const noexcept { return async_count != 0 || (retrying && any_inline); }
        /// The number of deliveries to count is known only after the filters ran (or an
        /// inline failure may add a retry): hold one count while they run, add one each.
        [[nodiscard]] bool counted_individually() const noexcept { return async_filtered || (retrying && any_inline); }

        void add(std::shared_ptr<subscriber_type> s) {
            if (s->mode == delivery::async) {
                ++async_count;
                async_filtered = async_filtered || s->has_filter();
            } else {
                any_inline = true;
            }
            needs_time = needs_time || s->needs_envelope;
            items.push_back(std::move(s));
        }
    };

    topic_state(bus_core& owner, std::uint64_t id_prefix)
        : topic_core(topic_name_v<T>, owner, id_prefix), subscribers_(std::make_shared<const list>()) {}

    /// The current subscribers; the snapshot stays valid (and unchanged) while held.
    [[nodiscard]] std::shared_ptr<const list> snapshot() const { return subscribers_.copy(); }

    /// The publish path (see `basic_bus::publish`). `inherited_slot` >= 0 publishes on
    /// behalf of a delivery that holds that drain slot (a dead letter): it is accepted
    /// even while the bus shuts down, and counted in the same slot.
    template <class V>
    publish_result publish(V&& value, const publish_options& options, int inherited_slot = -1) {
        std::uint8_t level = 0;
        if constexpr (prioritised) {
            if (options.priority >= policy::levels) {
                throw usage_error("herald: publish on topic '" + std::string(where.topic) + "' with priority " +
                                  std::to_string(options.priority) + ", but its levels are 0 to " +
                                  std::to_string(policy::levels - 1));
            }
            level = options.priority;
        } else if (options.priority != 0) {
            throw usage_error("herald: publish with a priority on topic '" + std::string(where.topic) +
                              "', whose policy has no priorities");
        }

        // A nested publish (an inline handler publishing) costs stack; past the limit
        // it is refused before anything happens. Dead letters are published on behalf of
        // a delivery and are exempt (their topic has no dead letters of its own).
        if (inherited_slot < 0 && publish_depth >= Traits::max_publish_depth) [[unlikely]] {
            refuse_nesting();
        }
        const depth_scope nesting;

        publish_result result;
        // Read without touching a reference count: the snapshot is announced in this
        // thread's slot until the publish returns. (The thread's first read may throw
        // std::bad_alloc: nothing has happened yet.)
        const typename snapshot_cell<list>::reader subscribers(subscribers_);
        const list& subs = *subscribers;
        // The envelope's copy (or move) of the value is made before anything is counted:
        // if it throws, the exception leaves publish and nobody saw the event, no
        // sequence number was used, nothing waits for it.
        auto env = envelope_access::make<event_type>(where_number, std::forward<V>(value));

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
                slot = begin_flight(reserved);
            }
            if (bus->stopped.load(std::memory_order_seq_cst)) {
                end_flights(slot, reserved);
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

        const std::uint64_t sequence = this->sequence.fetch_add(1, std::memory_order_relaxed) + 1;
        const event_id id = options.id.is_nil() ? event_id{where.id_prefix, sequence} : options.id;
        // Reading the clock costs as much as the rest of an inline publish; skip it when
        // no handler or filter can see the time (dead letters always show it).
        const auto time =
            subs.needs_time || has_dead_letters ? Traits::clock::now() : typename Traits::clock::time_point{};
        envelope_access::stamp(env, id, sequence, time, options.correlation);
        envelope_access::set_epoch(env, slot);
        envelope_access::set_priority(env, level);
        clock_source::time_point waiting_since{};
        if constexpr (reads_wait_time<policy>()) {
            waiting_since = bus->clock->now();
        }
        result.status = publish_status::accepted;
        result.id = id;
        result.sequence = sequence;

        // From here on nothing throws: a subscriber whose copy cannot be made has a
        // failed delivery (reported, counted), and the others still get the event.
        const auto& items = subs.items;
        const std::size_t count = items.size();
        for (std::size_t i = 0; i < count; ++i) {
            auto& subscriber = *items[i];
            if (subscriber.mode == delivery::immediate) {
                subscriber.deliver_inline(env, result);
                continue;
            }
            topic_core* const count_in = individually ? this : nullptr;
            const auto offered = i + 1 == count ? subscriber.offer(std::move(env), level, waiting_since, count_in, slot)
                                                : subscriber.offer(env, level, waiting_since, count_in, slot);
            if (offered == subscriber_type::offered::queued) {
                ++result.queued;
            } else if (offered == subscriber_type::offered::failed) {
                ++result.failed_to_queue;
            }
        }
        if (!individually && reserved != 0 && result.queued != subs.async_count) {
            // Counted up front for every async subscriber; some did not take it.
            end_flights(slot, subs.async_count - result.queued);
        }
        return result;
    }

    /// Throws the `usage_error` of a publish nested too deeply (kept off the hot path).
    [[noreturn, gnu::cold, gnu::noinline]] void refuse_nesting() const {
        throw usage_error("herald: publish on topic '" + std::string(where.topic) + "' nested " +
                          std::to_string(publish_depth) +
                          " publishes deep on this thread (Traits::max_publish_depth); an inline handler cycle "
                          "between topics?");
    }

    void add(std::shared_ptr<subscriber_type> joining) {
        std::lock_guard lock(mutex_);
        auto next = std::make_shared<list>(*subscribers_.copy());
        next->add(std::move(joining));
        subscribers_.store(std::move(next));
    }

    void remove(const subscriber_base& gone) override {
        std::lock_guard lock(mutex_);
        const auto current = subscribers_.copy();
        const auto& items = current->items;
        if (std::none_of(items.begin(), items.end(), [&](const auto& s) { return s.get() == &gone; })) {
            return;
        }
        auto next = std::make_shared<list>();
        next->items.reserve(items.size() - 1);
        for (const auto& s : items) {
            if (s.get() != &gone) {
                next->add(s);
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

    /// Connects the dead-letter topic (the bus does it when it registers this topic).
    void link_dead_letters(dead_letter_state* topic) noexcept requires has_dead_letters { dead_letters_ = topic; }

    /// Publishes a dead letter for `env` on the dead-letter topic, counted in the drain
    /// slot `env` holds; keeps it in the bounded store when nobody takes it. Never throws:
    /// a dead letter that cannot be built (out of memory) is counted as evicted.
    void dead_letter(const envelope<event_type>& env, const std::string& subscriber_name, std::uint32_t attempts,
                     dead_letter_reason reason, const call_failure& why) noexcept {
        if constexpr (has_dead_letters) {
            try {
                herald::dead_letter<event_type> letter{
                    env, subscriber_name, attempts, reason, why.message(), why.error, std::chrono::system_clock::now()};
                publish_result published;
                if (dead_letters_ != nullptr) {
                    published =
                        dead_letters_->publish(std::as_const(letter), publish_options{}, envelope_access::epoch(env));
                }
                if (published.queued + published.handled_inline + published.failed_inline == 0) {
                    keep(std::move(letter));
                }
            } catch (...) {
                std::lock_guard lock(store_mutex_);
                ++evicted_;
            }
        } else {
            (void)env;
            (void)subscriber_name;
            (void)attempts;
            (void)reason;
            (void)why;
        }
    }

    /// A copy of the dead letters in the store, oldest first.
    [[nodiscard]] std::vector<herald::dead_letter<event_type>> stored_dead_letters() const {
        std::lock_guard lock(store_mutex_);
        if (!store_) {
            return {};
        }
        return {store_->begin(), store_->end()};
    }

    /// Empties the store and returns what it held, oldest first.
    [[nodiscard]] std::vector<herald::dead_letter<event_type>> take_dead_letters() {
        std::lock_guard lock(store_mutex_);
        if (!store_) {
            return {};
        }
        std::vector<herald::dead_letter<event_type>> out(std::make_move_iterator(store_->begin()),
                                                         std::make_move_iterator(store_->end()));
        store_->clear();
        return out;
    }

    [[nodiscard]] dead_letter_counts dead_letters_kept() const override {
        std::lock_guard lock(store_mutex_);
        return {store_ ? store_->size() : 0U, evicted_};
    }

    /// Numbers default subscription names ("orders#3").
    std::atomic<std::uint64_t> names_given{0};

private:
    void keep(herald::dead_letter<event_type>&& letter) {
        std::lock_guard lock(store_mutex_);
        if (bus->dead_letter_capacity == 0) {
            ++evicted_;
            return;
        }
        if (!store_) {
            store_ = std::make_unique<std::deque<herald::dead_letter<event_type>>>();
        }
        if (store_->size() >= bus->dead_letter_capacity) {
            store_->pop_front();
            ++evicted_;
        }
        store_->push_back(std::move(letter));
    }

    mutable std::mutex mutex_;
    snapshot_cell<list> subscribers_;
    // Only used when has_dead_letters; a few idle words otherwise.
    dead_letter_state* dead_letters_ = nullptr;
    mutable std::mutex store_mutex_;
    std::unique_ptr<std::deque<herald::dead_letter<event_type>>> store_; // made by the first dead letter
    std::uint64_t evicted_ = 0;
};

} // namespace herald::detail
