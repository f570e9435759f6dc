// Lets `.track` take boost::shared_ptr and boost::weak_ptr owners (Boost.SmartPtr).
#pragma once

#include <herald/track.hpp>

#include <boost/shared_ptr.hpp>
#include <boost/weak_ptr.hpp>

#include <memory>

namespace herald {

namespace detail {
/// Tracks a Boost owner: a lock holds a `boost::shared_ptr` inside the returned
/// `std::shared_ptr` (one allocation per lock; std owners need none).
template <class T>
class boost_tracker final : public tracked_object::foreign {
public:
    explicit boost_tracker(boost::weak_ptr<T> owner) noexcept : owner_(std::move(owner)) {}

    [[nodiscard]] std::shared_ptr<const void> lock() const override {
        boost::shared_ptr<T> strong = owner_.lock();
        if (!strong) {
            return {};
        }
        const void* raw = strong.get();
        return std::shared_ptr<const void>(raw, [keep = std::move(strong)](const void*) mutable { keep.reset(); });
    }
    [[nodiscard]] bool expired() const noexcept override { return owner_.expired(); }

private:
    boost::weak_ptr<T> owner_;
};
} // namespace detail

template <class T>
struct track_traits<boost::shared_ptr<T>> {
    static tracked_object make(const boost::shared_ptr<T>& owner) {
        return tracked_object(std::shared_ptr<const tracked_object::foreign>(
            std::make_shared<const detail::boost_tracker<T>>(boost::weak_ptr<T>(owner))));
    }
};

template <class T>
struct track_traits<boost::weak_ptr<T>> {
    static tracked_object make(const boost::weak_ptr<T>& owner) {
        return tracked_object(
            std::shared_ptr<const tracked_object::foreign>(std::make_shared<const detail::boost_tracker<T>>(owner)));
    }
};

} // namespace herald
