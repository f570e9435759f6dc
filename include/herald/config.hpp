// Compile-time defaults of herald that a bus's traits can override.
#pragma once

#include <herald/detail/chrono.hpp>

#include <cstddef>
#include <cstdint>

namespace herald {

/// Default settings of `basic_bus`. Derive from it and override a member to change one
/// setting, then use `basic_bus<your_traits>`; every member is read at compile time.
struct default_bus_traits {
    /// Clock that stamps envelopes. Its `time_point` must be
    /// `std::chrono::system_clock::time_point` (envelope times are wall-clock, as in
    /// CloudEvents).
    using clock = std::chrono::system_clock;

    /// How many queued events a worker handles for one serial subscriber before it
    /// yields the worker to other subscribers (fairness versus per-event overhead).
    static constexpr std::size_t batch_size = 64;

    /// Events an async subscriber's queue has room for before it allocates more blocks
    /// (blocks are recycled, so a steady load stops allocating). Small by default,
    /// because every async subscriber has its own queue.
    static constexpr std::size_t initial_queue_capacity = 64;

    /// After a backlog of more than this many events has drained, a serial subscriber
    /// replaces its queue with a fresh one, so the memory a burst took goes back to the
    /// allocator instead of staying with the subscriber (moodycamel queues never free
    /// their blocks). 0 keeps the peak for the subscriber's lifetime. Concurrent
    /// subscribers keep their queue's peak.
    static constexpr std::size_t queue_shrink_threshold = 16384;

    /// The shortest time between two such replacements of one subscriber's queue: each
    /// costs a process-wide memory barrier and fresh blocks, so a subscriber whose
    /// backlog comes and goes all the time does not pay it on every batch. A backlog
    /// that drains sooner after the previous replacement keeps its memory until a
    /// later batch (of that subscriber) finds the interval passed.
    static constexpr std::chrono::milliseconds queue_shrink_interval{100};

    /// How many publishes may nest on one thread (an inline handler publishing, whose
    /// inline handler publishes, ...). Each level costs roughly a kilobyte of stack; the
    /// publish one level deeper throws `herald::usage_error` before anything happens, so
    /// a cycle of inline handlers ends in a reported handler failure, not a stack
    /// overflow. Publishes from async handlers start again at depth 1.
    static constexpr std::uint32_t max_publish_depth = 64;

    /// Latency histograms per subscriber (time waiting in the mailbox, time in the
    /// handler; see `basic_bus::metrics()`). `false` removes their cost entirely: the
    /// delivery path then reads no clock for them and subscribers allocate no cells.
    static constexpr bool latency_metrics = true;

    /// One event in this many is timed (chosen by a hash of its sequence number, the
    /// same events for every subscriber); the others cost one multiplication and one
    /// predictable branch. A timed call reads the clock two or three times (tens of ns
    /// each), so 1 (every event: exact histograms) suits tests and low rates; the default
    /// keeps the cost of an inline publish within a few percent (docs/observability.md).
    static constexpr std::uint32_t latency_sample_every = 64;
};

} // namespace herald
