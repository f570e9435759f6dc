// Locks the objects a subscription tracks (Boost.Signals2 slot tracking) without allocating.
#pragma once

#include <boost/signals2/slot.hpp>
#include <boost/variant/apply_visitor.hpp>

#include <array>
#include <cstddef>
#include <vector>

namespace herald::detail {

/// Holds every tracked object of a slot alive for the guard's lifetime. `is_expired()`
/// tells whether one of them had already died (then nothing useful is held).
class tracking_guard {
public:
    explicit tracking_guard(const boost::signals2::slot_base& slot) {
        const auto& tracked = slot.tracked_objects();
        if (tracked.size() > inline_capacity) {
            overflow_.reserve(tracked.size());
        }
        for (const auto& weak : tracked) {
            auto strong = boost::apply_visitor(lock_visitor{}, weak);
            // Locked first, then checked: once locked it cannot expire, so "expired"
            // here means the lock failed.
            if (boost::apply_visitor(expired_visitor{}, weak)) {
                expired_ = true;
                return;
            }
            if (count_ < inline_capacity) {
                held_[count_] = std::move(strong);
            } else {
                overflow_.push_back(std::move(strong));
            }
            ++count_;
        }
    }

    [[nodiscard]] bool is_expired() const noexcept { return expired_; }

private:
    using locked = boost::signals2::slot_base::locked_container_type::value_type;
    static constexpr std::size_t inline_capacity = 4;

    struct lock_visitor {
        using result_type = locked;
        template <class WeakPtr>
        result_type operator()(const WeakPtr& weak) const {
            return weak.lock();
        }
    };
    struct expired_visitor {
        using result_type = bool;
        template <class WeakPtr>
        bool operator()(const WeakPtr& weak) const {
            return weak.expired();
        }
    };

    std::array<locked, inline_capacity> held_{};
    std::vector<locked> overflow_;
    std::size_t count_ = 0;
    bool expired_ = false;
};

} // namespace herald::detail
