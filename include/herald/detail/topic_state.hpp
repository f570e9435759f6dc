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
    using list = std::vector<std::shared_ptr<subscriber_type>>;

    topic_state(bus_core& owner, std::uint64_t id_prefix)
        : topic_core(topic_name_v<T>, owner, id_prefix), subscribers_(std::make_shared<const list>()) {}

    /// The current subscribers; the snapshot stays valid (and unchanged) while held.
    [[nodiscard]] std::shared_ptr<const list> snapshot() const noexcept { return subscribers_.load(); }

    void add(std::shared_ptr<subscriber_type> joining) {
        std::lock_guard lock(mutex_);
        auto next = std::make_shared<list>(*subscribers_.load());
        next->push_back(std::move(joining));
        subscribers_.store(std::move(next));
    }

    void remove(const subscriber_base& gone) override {
        std::lock_guard lock(mutex_);
        auto current = subscribers_.load();
        const auto found =
            std::find_if(current->begin(), current->end(), [&](const auto& s) { return s.get() == &gone; });
        if (found == current->end()) {
            return;
        }
        auto next = std::make_shared<list>();
        next->reserve(current->size() - 1);
        for (const auto& s : *current) {
            if (s.get() != &gone) {
                next->push_back(s);
            }
        }
        subscribers_.store(std::move(next));
    }

    [[nodiscard]] std::vector<std::shared_ptr<subscriber_base>> subscribers() const override {
        auto current = snapshot();
        return {current->begin(), current->end()};
    }

    /// Numbers default subscription names ("orders#3").
    std::atomic<std::uint64_t> names_given{0};

private:
    std::mutex mutex_;
    snapshot_cell<list> subscribers_;
};

} // namespace herald::detail
