// Which mailbox a subscriber gets.
#pragma once

#include <herald/detail/erased.hpp>
#include <herald/detail/priority_mailbox.hpp>
#include <herald/detail/shared_mailbox.hpp>
#include <herald/detail/stream_mailbox.hpp>

#include <cstddef>
#include <memory>

namespace herald::detail {

/// The mailbox for an async subscriber of `Event`: per-publisher streams read by its
/// strand (serial subscribers; one stream per level on priority topics, with queue
/// times when the topic ages or expires events), or one moodycamel queue shared by the
/// workers of a concurrent subscriber.
template <class Event>
std::unique_ptr<mailbox_base> make_mailbox(bool strand, const lane_rules& rules, std::size_t capacity) {
    if (!strand) {
        return std::make_unique<shared_mailbox<typename slot_of<Event>::type>>(ops_of<Event>(), capacity);
    }
    if (rules.levels > 1) {
        const bool timed = rules.aging_ns > 0 || rules.ttl_ns > 0;
        return std::make_unique<priority_mailbox>(ops_of<Event>(), stream_layout_of<Event>(timed), rules);
    }
    return std::make_unique<stream_mailbox>(ops_of<Event>(), stream_layout_of<Event>(false));
}

} // namespace herald::detail
