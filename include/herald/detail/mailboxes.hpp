// Which mailbox a subscriber gets.
#pragma once

#include <herald/detail/chrono.hpp>
#include <herald/detail/erased.hpp>
#include <herald/detail/flow_gate.hpp>
#include <herald/detail/keyed_mailbox.hpp>
#include <herald/detail/priority_mailbox.hpp>
#include <herald/detail/ring_mailbox.hpp>
#include <herald/detail/shared_mailbox.hpp>
#include <herald/detail/stream_mailbox.hpp>
#include <herald/detail/subscriber_core.hpp>
#include <herald/errors.hpp>
#include <herald/flow_control.hpp>

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

namespace herald::detail {

/// The mailbox for an async subscriber of `Event`: per-publisher streams read by its
/// strand (serial subscribers; one stream per level on priority topics, with queue
/// times when the topic ages or expires events), one moodycamel queue shared by the
/// workers of a concurrent subscriber, or one queue per key (keyed subscribers).
template <class Event>
std::unique_ptr<mailbox_base> make_mailbox(ordering order, const lane_rules& rules, std::size_t capacity,
                                           std::size_t batch) {
    if (order == ordering::by_key) {
        return std::make_unique<keyed_mailbox>(ops_of<Event>(), stream_layout_of<Event>(false), batch);
    }
    if (order == ordering::concurrent) {
        return std::make_unique<shared_mailbox<typename slot_of<Event>::type>>(ops_of<Event>(), capacity);
    }
    if (rules.levels > 1) {
        const bool timed = rules.aging_ns > 0 || rules.ttl_ns > 0;
        return std::make_unique<priority_mailbox>(ops_of<Event>(), stream_layout_of<Event>(timed), rules);
    }
    return std::make_unique<stream_mailbox>(ops_of<Event>(), stream_layout_of<Event>(false));
}

/// A subscription's flow-control options, before they are checked.
struct flow_options {
    std::size_t capacity = unbounded;
    overflow rule = overflow::block;
    std::chrono::nanoseconds block_timeout{0};
    std::shared_ptr<const key_rules> keys;
};

/// Checks an async subscription's flow-control options against its topic and ordering,
/// and sets its mailbox up accordingly: a ring mailbox for `drop_oldest` and `conflate`
/// (it counts its own capacity), a flow gate in front of any other bounded mailbox.
/// Throws `usage_error` for a combination herald does not offer. Compiled once.
[[gnu::noinline]] inline void configure_flow(subscriber_setup& setup, std::string_view topic, flow_options flow) {
    const bool serial = setup.order == ordering::serial;
    const bool lanes = setup.policy->prioritised;
    const auto refuse = [&](std::string_view what) {
        throw usage_error("herald: subscription '" + setup.name + "' to topic '" + std::string(topic) +
                          "': " + std::string(what));
    };
    if (setup.order == ordering::by_key) {
        if (!flow.keys) {
            refuse("ordering::by_key needs a key (subscribe_options::key)");
        }
        if (flow.rule == overflow::drop_oldest || flow.rule == overflow::conflate) {
            refuse("ordering::by_key takes overflow::block, reject, drop_newest or dead_letter");
        }
        setup.keys = flow.keys;
    }
    if (flow.capacity == 0) {
        refuse("capacity 0 (use herald::unbounded for no bound, or at least 1)");
    }
    switch (flow.rule) {
    case overflow::conflate:
        if (!flow.keys) {
            refuse("overflow::conflate needs a key (subscribe_options::key)");
        }
        [[fallthrough]];
    case overflow::drop_oldest:
        if (!serial || lanes) {
            refuse("overflow::drop_oldest and overflow::conflate need a serial subscriber on a topic without "
                   "priorities");
        }
        if (flow.rule == overflow::conflate || flow.capacity != unbounded) {
            setup.box = std::make_unique<ring_mailbox>(*setup.ops, flow.capacity, flow.rule == overflow::conflate);
            setup.keys = flow.rule == overflow::conflate ? std::move(flow.keys) : nullptr;
        }
        return;
    case overflow::dead_letter:
        if (!setup.policy->has_dead_letters) {
            refuse("overflow::dead_letter needs a topic with dead letters (at_least_once, or a policy wrapped "
                   "in herald::with_dead_letters<>)");
        }
        break;
    case overflow::block:
    case overflow::drop_newest:
    case overflow::reject:
        break;
    }
    if (flow.capacity != unbounded) {
        setup.flow = std::make_unique<flow_gate>(flow.capacity, flow.rule, flow.block_timeout);
    }
}

} // namespace herald::detail
