// Tracked objects: owners whose death ends a subscription.
#pragma once

#include <array>
#include <cstddef>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

namespace herald {

/// One tracked owner, type-erased: a `std::weak_ptr`, or a tracker of another library's
/// smart pointer (see `track_traits`).
class tracked_object {
public:
    /// A tracker for smart pointers that are not `std::` ones.
    class foreign {
    public:
        virtual ~foreign() = default;
        /// A strong reference that keeps the owner alive while held; empty once it died.
        [[nodiscard]] virtual std::shared_ptr<const void> lock() const = 0;
        [[nodiscard]] virtual bool expired() const noexcept = 0;
    };

    explicit tracked_object(std::weak_ptr<const void> owner) noexcept : weak_(std::move(owner)) {}
    explicit tracked_object(std::shared_ptr<const foreign> tracker) noexcept : foreign_(std::move(tracker)) {}

    /// Keeps the owner alive while the result is held; empty once the owner died.
    [[nodiscard]] std::shared_ptr<const void> lock() const { return foreign_ ? foreign_->lock() : weak_.lock(); }
    [[nodiscard]] bool expired() const noexcept { return foreign_ ? foreign_->expired() : weak_.expired(); }

private:
    std::weak_ptr<const void> weak_;
    std::shared_ptr<const foreign> foreign_;
};

/// How `.track` tracks a pointer type `Ptr`: `static tracked_object make(const Ptr&)`.
/// Defined for `std::shared_ptr` and `std::weak_ptr`; `<herald/track_boost.hpp>` adds
/// `boost::shared_ptr` and `boost::weak_ptr`; specialize it for other smart pointers.
template <class Ptr>
struct track_traits;

template <class T>
struct track_traits<std::shared_ptr<T>> {
    static tracked_object make(const std::shared_ptr<T>& owner) {
        return tracked_object(std::weak_ptr<const void>(owner));
    }
};

template <class T>
struct track_traits<std::weak_ptr<T>> {
    static tracked_object make(const std::weak_ptr<T>& owner) {
        return tracked_object(std::weak_ptr<const void>(owner));
    }
};

namespace detail {
template <class Ptr>
concept trackable = requires(const Ptr& p) {
    { track_traits<Ptr>::make(p) } -> std::same_as<tracked_object>;
};
} // namespace detail

/// Objects a subscription depends on. While all of them are alive the subscription
/// delivers; once one has expired, delivery stops and the subscription disconnects
/// itself. During each handler call (and each filter call) every tracked object is
/// locked, so it cannot die while its handler runs. Accepts `std::shared_ptr` and
/// `std::weak_ptr` to any type, and whatever `track_traits` is specialized for
/// (`boost::shared_ptr`/`boost::weak_ptr` with `<herald/track_boost.hpp>`).
class tracked_objects {
public:
    /// Tracks nothing.
    tracked_objects() = default;

    /// Tracks each argument.
    template <class... Ptrs>
        requires(sizeof...(Ptrs) > 0)
    tracked_objects(const Ptrs&... owners) // NOLINT(google-explicit-constructor)
    {
        static_assert((detail::trackable<Ptrs> && ...),
                      "herald: .track accepts std::shared_ptr and std::weak_ptr; for boost::shared_ptr or "
                      "boost::weak_ptr include <herald/track_boost.hpp>, for other pointers specialize "
                      "herald::track_traits");
        objects_.reserve(sizeof...(Ptrs));
        (objects_.push_back(track_traits<Ptrs>::make(owners)), ...);
    }

    tracked_objects(const tracked_objects&) = default;
    tracked_objects(tracked_objects&&) noexcept = default;
    tracked_objects& operator=(const tracked_objects&) = default;
    tracked_objects& operator=(tracked_objects&&) noexcept = default;
    // Out of line (once per program, not once per `subscribe_options<Event>`).
    [[gnu::noinline]] ~tracked_objects() {}

    /// True when nothing is tracked.
    [[nodiscard]] bool is_empty() const noexcept { return objects_.empty(); }

    /// True when one of the tracked objects has died.
    [[nodiscard]] bool expired() const noexcept {
        for (const auto& o : objects_) {
            if (o.expired()) {
                return true;
            }
        }
        return false;
    }

    /// The tracked objects.
    [[nodiscard]] const std::vector<tracked_object>& objects() const noexcept { return objects_; }

private:
    std::vector<tracked_object> objects_;
};

namespace detail {

/// Holds every tracked object alive for the guard's lifetime (without allocating for up
/// to four of them). `is_expired()` tells whether one of them had already died (then
/// nothing useful is held).
class tracking_guard {
public:
    explicit tracking_guard(const tracked_objects& tracked) {
        const auto& all = tracked.objects();
        if (all.size() > inline_capacity) {
            overflow_.reserve(all.size() - inline_capacity);
        }
        std::size_t count = 0;
        for (const auto& object : all) {
            auto strong = object.lock();
            if (!strong) {
                expired_ = true;
                return;
            }
            if (count < inline_capacity) {
                held_[count] = std::move(strong);
            } else {
                overflow_.push_back(std::move(strong));
            }
            ++count;
        }
    }

    [[nodiscard]] bool is_expired() const noexcept { return expired_; }

private:
    static constexpr std::size_t inline_capacity = 4;

    std::array<std::shared_ptr<const void>, inline_capacity> held_{};
    std::vector<std::shared_ptr<const void>> overflow_;
    bool expired_ = false;
};

} // namespace detail

} // namespace herald
