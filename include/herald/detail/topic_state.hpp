// A topic's state inside one bus: its subscriber list, published as immutable snapshots.
#pragma once

#include <herald/detail/core.hpp>
#include <herald/detail/snapshot_cell.hpp>
#include <herald/detail/subscriber.hpp>
#include <herald/topic.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace herald::detail {

/// Subscribers are read on every publish and changed rarely, so writers copy the list
/// under a mutex and publish the copy as a new snapshot; publishers never take the
/// mutex and never wait for a writer's copy.
template <class T, class Traits>
class topic_state final : public topic_core {
public:
    using event_type = typename T::event_type;
    using subscriber_type = subscriber<event_type, Traits>;
    /// One immutable snapshot of the subscribers, with the facts the publish path needs.
    struct list {
        std::vector<std::shared_ptr<subscriber_type>> items;
        /// Some subscriber is async: the publish must be counted for drain().
        bool any_async = false;
        /// How many subscribers are async.
        std::uint32_t async_count = 0;
        /// Some async subscriber has a filter, so the count of queued copies is known
        /// only after the filters ran.
        bool async_filtered = false;
        /// Some handler or filter reads the envelope: the publish must read the clock.
        bool needs_time = false;

        void add(std::shared_ptr<subscriber_type> s) {
            if (s->mode == delivery::async) {
                any_async = true;
                ++async_count;
                async_filtered = async_filtered || s->has_filter();
            }
            needs_time = needs_time || s->needs_envelope;
            items.push_back(std::move(s));
        }
    };

    topic_state(bus_core& owner, std::uint64_t id_prefix)
        : topic_core(topic_name_v<T>, owner, id_prefix), subscribers_(std::make_shared<const list>()) {}

    /// The current subscribers; the snapshot stays valid (and unchanged) while held.
    [[nodiscard]] std::shared_ptr<const list> snapshot() const noexcept { return subscribers_.load(); }

    void add(std::shared_ptr<subscriber_type> joining) {
        std::lock_guard lock(mutex_);
        auto next = std::make_shared<list>(*subscribers_.load());
        next->add(std::move(joining));
        subscribers_.store(std::move(next));
    }

    void remove(const subscriber_base& gone) override {
        std::lock_guard lock(mutex_);
        const auto current = subscribers_.load();
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
    }

    [[nodiscard]] std::vector<std::shared_ptr<subscriber_base>> subscribers() const override {
        const auto current = snapshot();
        return {current->items.begin(), current->items.end()};
    }

    /// Numbers default subscription names ("orders#3").
    std::atomic<std::uint64_t> names_given{0};

private:
    std::mutex mutex_;
    snapshot_cell<list> subscribers_;
};

} // namespace herald::detail
