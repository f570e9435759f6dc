// What herald keeps per event type, and the queues that hold events of any type.
//
// A topic's event type matters only where an event is constructed, copied, moved or
// destroyed, and where the handler or the filter is called. Everything else (strands,
// gates, counters, retries, lanes, dead-letter plumbing) runs on `envelope_base` and
// is compiled once, not once per topic: `envelope_ops` is the little table through
// which that code reaches the event type, and `mailbox_base` is the queue interface
// the delivery code uses (see stream_mailbox.hpp, priority_mailbox.hpp and
// shared_mailbox.hpp for the three kinds).
#pragma once

#include <herald/clock.hpp>
#include <herald/detail/chrono.hpp>
#include <herald/envelope.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <optional>
#include <type_traits>
#include <utility>

namespace herald::detail {

/// How to copy, move and destroy the envelopes of one event type, for code that does not
/// know the type. One constant table per event type (`ops_of<Event>()`).
struct envelope_ops {
    /// sizeof and alignof `envelope<Event>`.
    std::size_t size;
    std::size_t align;
    /// Moving the envelope cannot throw (otherwise queues hold it behind a pointer).
    bool nothrow_move;
    /// Copying is a memcpy (the queue relocates it without calling through the table).
    bool trivial;
    /// The envelope constructed at `storage`.
    envelope_base* (*at)(void* storage) noexcept;
    /// Copy- or move-constructs an envelope at `storage` from `from`; may throw.
    void (*copy_to)(void* storage, const envelope_base& from);
    void (*move_to)(void* storage, envelope_base& from);
    /// Moves the envelope at `from` to `to` and destroys the one at `from`.
    void (*relocate)(void* to, void* from) noexcept;
    /// Destroys the envelope at `storage`.
    void (*destroy)(void* storage) noexcept;
    /// A heap copy (or move) of `from`, freed by `free`; may throw.
    envelope_base* (*clone)(const envelope_base& from);
    envelope_base* (*move_new)(envelope_base& from);
    void (*free)(envelope_base* env) noexcept;
};

template <class Event>
struct ops_table {
    using env = envelope<Event>;
    static env* cast(void* p) noexcept { return std::launder(static_cast<env*>(p)); }
    static constexpr envelope_ops value{
        sizeof(env),
        alignof(env),
        std::is_nothrow_move_constructible_v<env>,
        std::is_trivially_copyable_v<env>,
        [](void* p) noexcept -> envelope_base* { return cast(p); },
        [](void* p, const envelope_base& from) { ::new (p) env(static_cast<const env&>(from)); },
        [](void* p, envelope_base& from) { ::new (p) env(std::move(static_cast<env&>(from))); },
        [](void* to, void* from) noexcept {
            if constexpr (std::is_nothrow_move_constructible_v<env>) {
                ::new (to) env(std::move(*cast(from)));
                cast(from)->~env();
            } else {
                std::terminate(); // never called: such envelopes are queued behind a pointer
            }
        },
        [](void* p) noexcept { cast(p)->~env(); },
        [](const envelope_base& from) -> envelope_base* { return new env(static_cast<const env&>(from)); },
        [](envelope_base& from) -> envelope_base* { return new env(std::move(static_cast<env&>(from))); },
        [](envelope_base* e) noexcept { delete static_cast<env*>(e); },
    };
};

/// The table of `Event`'s envelopes.
template <class Event>
const envelope_ops& ops_of() noexcept {
    return ops_table<Event>::value;
}

/// An envelope on the heap, owned (a retry waiting for its time).
class boxed_envelope {
public:
    boxed_envelope() = default;
    boxed_envelope(const envelope_ops& ops, envelope_base* env) noexcept : ops_(&ops), env_(env) {}
    boxed_envelope(boxed_envelope&& other) noexcept : ops_(other.ops_), env_(std::exchange(other.env_, nullptr)) {}
    boxed_envelope& operator=(boxed_envelope&& other) noexcept {
        if (this != &other) {
            reset();
            ops_ = other.ops_;
            env_ = std::exchange(other.env_, nullptr);
        }
        return *this;
    }
    boxed_envelope(const boxed_envelope&) = delete;
    boxed_envelope& operator=(const boxed_envelope&) = delete;
    ~boxed_envelope() { reset(); }

    /// A heap copy of `env` (or a move, when `move`); may throw.
    static boxed_envelope of(const envelope_ops& ops, envelope_base& env, bool move) {
        return {ops, move ? ops.move_new(env) : ops.clone(env)};
    }

    [[nodiscard]] envelope_base& operator*() const noexcept { return *env_; }
    [[nodiscard]] explicit operator bool() const noexcept { return env_ != nullptr; }

    void reset() noexcept {
        if (env_ != nullptr) {
            ops_->free(std::exchange(env_, nullptr));
        }
    }

private:
    const envelope_ops* ops_ = nullptr;
    envelope_base* env_ = nullptr;
};

/// Envelopes up to this size wait in place in a mailbox (larger or over-aligned ones
/// behind a pointer, which costs one allocation per queued copy).
inline constexpr std::size_t max_in_place = 512;

/// Room for any slot, so a caller can hold any mailbox's item on its stack.
inline constexpr std::size_t max_slot_size = max_in_place + 2 * sizeof(void*) + alignof(std::max_align_t);

/// One item taken out of a mailbox, owned by whoever took it (a slot moved into
/// storage large enough for any kind).
class taken_item {
public:
    taken_item() noexcept = default;
    taken_item(const taken_item&) = delete;
    taken_item& operator=(const taken_item&) = delete;
    ~taken_item() { reset(); }

    [[nodiscard]] explicit operator bool() const noexcept { return env_ != nullptr; }
    [[nodiscard]] envelope_base& envelope() const noexcept { return *env_; }
    /// When it was queued (priority lanes only; otherwise the epoch).
    [[nodiscard]] clock_source::time_point enqueued() const noexcept { return enqueued_; }

    void reset() noexcept {
        if (env_ != nullptr) {
            if (destroy_ != nullptr) {
                destroy_(storage_);
            }
            env_ = nullptr;
        }
    }

    /// Moves `from` in (this must be empty); `with` are its mailbox's envelope operations.
    template <class Slot>
    void hold(Slot&& from, const envelope_ops& with, clock_source::time_point enqueued) noexcept {
        static_assert(sizeof(Slot) <= max_slot_size && alignof(Slot) <= alignof(std::max_align_t));
        auto* s = ::new (static_cast<void*>(storage_)) Slot(std::move(from));
        env_ = &s->envelope(with);
        enqueued_ = enqueued;
        if constexpr (Slot::needs_destroy) {
            destroy_ = [](void* p) noexcept { std::launder(static_cast<Slot*>(p))->~Slot(); };
        } else {
            destroy_ = nullptr;
        }
    }

private:
    envelope_base* env_ = nullptr;
    clock_source::time_point enqueued_{};
    void (*destroy_)(void*) noexcept = nullptr;
    alignas(std::max_align_t) unsigned char storage_[max_slot_size];
};

/// What a priority mailbox needs to pick the next lane (one lane: FIFO).
struct lane_rules {
    std::size_t levels = 1;
    std::int64_t aging_ns = 0;
    std::int64_t ttl_ns = 0;
};

/// A subscriber's queue of envelopes, of any event type. `put` may be called by any
/// number of threads at once. A strand (one consumer at a time) reads with
/// `take_chunk`/`at`/`release_chunk`, handling items in place; concurrent subscribers'
/// workers take items out with `take_shared`.
class mailbox_base {
public:
    /// Which implementation this is (the publish path calls a stream's put directly).
    enum class kind : std::uint8_t { shared, stream, priority, ring, keyed };

    virtual ~mailbox_base() = default;
    explicit mailbox_base(kind k) noexcept : what(k) {}
    mailbox_base(const mailbox_base&) = delete;
    mailbox_base& operator=(const mailbox_base&) = delete;

    /// Queues a copy (or a move) of `env`, an envelope of the mailbox's event type, on
    /// lane `level`; throws when the copy or the queue's memory fails, and then nothing
    /// was queued. `now` is kept on timed (priority) lanes only.
    virtual void put(envelope_base& env, bool move, std::size_t level, clock_source::time_point now) = 0;
    /// Strand only: makes the next items readable through `at(i)` and `enqueued(i)`
    /// until `release_chunk`: up to `want` (> 0) items of one publisher in a FIFO
    /// mailbox, one item chosen by the lane rules at `now` in a priority mailbox.
    /// Returns how many (0: nothing waits).
    virtual std::size_t take_chunk(std::size_t want, clock_source::time_point now) noexcept = 0;
    [[nodiscard]] virtual envelope_base& at(std::size_t i) noexcept = 0;
    /// When item `i` of the chunk was queued (timed lanes; otherwise the epoch).
    [[nodiscard]] virtual clock_source::time_point enqueued(std::size_t /*i*/) const noexcept { return {}; }
    /// Destroys the first `count` items of the chunk and removes them.
    virtual void release_chunk(std::size_t count) noexcept = 0;
    /// Any worker (concurrent subscribers): the next item of the only lane.
    virtual bool take_shared(taken_item& out) noexcept = 0;
    /// Nothing waits.
    [[nodiscard]] virtual bool looks_empty() const noexcept { return !has_puts(); }
    /// Any thread: items were put and not yet taken out by the strand (reads only
    /// counts that puts and takes update atomically).
    [[nodiscard]] virtual bool has_puts() const noexcept = 0;
    /// How many items wait, all lanes together (exact when no put or take is running).
    [[nodiscard]] virtual std::size_t size_approx() const noexcept = 0;
    /// A new, empty mailbox of the same kind.
    [[nodiscard]] virtual std::unique_ptr<mailbox_base> fresh() const = 0;

    const kind what;
};

} // namespace herald::detail
