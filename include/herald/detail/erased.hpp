// What herald keeps per event type, and the queues that hold events of any type.
//
// A topic's event type matters only where an event is constructed, copied, moved or
// destroyed, and where the handler or the filter is called. Everything else (strands,
// gates, counters, retries, lanes, dead-letter plumbing) runs on `envelope_base` and
// is compiled once, not once per topic: `envelope_ops` is the little table through
// which that code reaches the event type, and `mailbox<Bytes>` stores envelopes of any
// type that fits `Bytes`, so one moodycamel queue is instantiated per size class.
#pragma once

#include <herald/clock.hpp>
#include <herald/detail/concurrentqueue.hpp>
#include <herald/envelope.hpp>

#include <algorithm>
#include <chrono>
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

/// How an envelope waits in a mailbox. Every envelope of a mailbox has the same type,
/// so the mailbox keeps the `envelope_ops`; a slot keeps them too only when it must
/// call them to move or destroy itself.
enum class slot_kind : std::uint8_t {
    plain,     ///< trivially copyable, in place: the slot is the envelope's bytes
    relocated, ///< in place, moved without throwing through the table
    boxed,     ///< behind a pointer (too large, over-aligned, or its move may throw)
};

/// One queued envelope of a mailbox for envelopes of `Bytes` bytes aligned to `Align`
/// (`plain` and `relocated`; `boxed` ignores both). Moving a slot relocates its
/// envelope and never throws, which is what moodycamel does when it hands items over.
/// `Timed` slots also keep when they were queued (priority lanes read it for aging and
/// expiry; nothing else does, so other slots do not pay for it).
template <slot_kind Kind, std::size_t Bytes, std::size_t Align, bool Timed>
struct slot;

/// A trivially copyable envelope: nothing to destroy, moved by copying its bytes.
template <std::size_t Bytes, std::size_t Align>
struct slot<slot_kind::plain, Bytes, Align, false> {
    /// Fills the slot with a copy of `env` (cannot throw: the copy is trivial).
    void fill(const envelope_ops& with, envelope_base& env, bool /*move*/) { with.copy_to(bytes, env); }
    [[nodiscard]] envelope_base& envelope(const envelope_ops& with) noexcept { return *with.at(bytes); }
    static constexpr bool needs_destroy = false;
    static constexpr bool is_timed = false;

    alignas(Align) unsigned char bytes[Bytes];
};

/// An envelope kept in place that knows how to move and destroy itself.
template <std::size_t Bytes, std::size_t Align>
struct slot<slot_kind::relocated, Bytes, Align, false> {
    slot() noexcept = default;
    slot(slot&& other) noexcept { take(other); }
    slot& operator=(slot&& other) noexcept {
        if (this != &other) {
            clear();
            take(other);
        }
        return *this;
    }
    slot(const slot&) = delete;
    slot& operator=(const slot&) = delete;
    ~slot() { clear(); }

    /// Fills an empty slot with a copy (or a move) of `env`; may throw, and then stays empty.
    void fill(const envelope_ops& with, envelope_base& env, bool move) {
        if (move) {
            with.move_to(bytes, env);
        } else {
            with.copy_to(bytes, env);
        }
        ops = &with;
    }
    [[nodiscard]] envelope_base& envelope(const envelope_ops& with) noexcept { return *with.at(bytes); }
    static constexpr bool needs_destroy = true;
    static constexpr bool is_timed = false;

    const envelope_ops* ops = nullptr; // null: empty
    union {
        // Initialised so that an empty slot holds no indeterminate bytes (g++'s
        // -Wmaybe-uninitialized sees that).
        unsigned char first = 0;
        alignas(Align) unsigned char bytes[Bytes];
    };

private:
    void clear() noexcept {
        if (ops != nullptr) {
            std::exchange(ops, nullptr)->destroy(bytes);
        }
    }
    void take(slot& other) noexcept {
        ops = std::exchange(other.ops, nullptr);
        if (ops != nullptr) {
            ops->relocate(bytes, other.bytes);
        }
    }
};

/// An envelope on the heap: the slot moves the pointer.
template <std::size_t Bytes, std::size_t Align>
struct slot<slot_kind::boxed, Bytes, Align, false> {
    slot() noexcept = default;
    slot(slot&& other) noexcept : ops(std::exchange(other.ops, nullptr)), ptr(std::exchange(other.ptr, nullptr)) {}
    slot& operator=(slot&& other) noexcept {
        if (this != &other) {
            clear();
            ops = std::exchange(other.ops, nullptr);
            ptr = std::exchange(other.ptr, nullptr);
        }
        return *this;
    }
    slot(const slot&) = delete;
    slot& operator=(const slot&) = delete;
    ~slot() { clear(); }

    /// Fills an empty slot with a heap copy (or move) of `env`; may throw, and then stays empty.
    void fill(const envelope_ops& with, envelope_base& env, bool move) {
        ptr = move ? with.move_new(env) : with.clone(env);
        ops = &with;
    }
    [[nodiscard]] envelope_base& envelope(const envelope_ops& /*with*/) const noexcept { return *ptr; }
    static constexpr bool needs_destroy = true;
    static constexpr bool is_timed = false;

    const envelope_ops* ops = nullptr; // null: empty
    envelope_base* ptr = nullptr;

private:
    void clear() noexcept {
        if (ops != nullptr) {
            std::exchange(ops, nullptr)->free(std::exchange(ptr, nullptr));
        }
    }
};

/// A slot of a priority lane: the envelope, and when it was queued.
template <slot_kind Kind, std::size_t Bytes, std::size_t Align>
struct slot<Kind, Bytes, Align, true> : slot<Kind, Bytes, Align, false> {
    static constexpr bool is_timed = true;
    clock_source::time_point enqueued{};
};

/// Envelopes up to this size wait in place (larger ones behind a pointer, which costs
/// one allocation per queued copy).
inline constexpr std::size_t max_in_place = 512;

/// How `Event`'s envelopes wait in a mailbox. In-place slots are exactly the envelope's
/// size, so a queued event costs its size plus the 56 bytes of metadata (and
/// moodycamel's few bytes of bookkeeping); one queue type is compiled per distinct
/// envelope size and kind, shared by every event type of that size.
template <class Event, bool Timed>
struct slot_of {
    using env = envelope<Event>;
    static constexpr bool in_place = std::is_nothrow_move_constructible_v<env> &&
                                     alignof(env) <= alignof(std::max_align_t) && sizeof(env) <= max_in_place;
    static constexpr slot_kind kind = !in_place                           ? slot_kind::boxed
                                      : std::is_trivially_copyable_v<env> ? slot_kind::plain
                                                                          : slot_kind::relocated;
    using type = slot<kind, in_place ? sizeof(env) : 0, in_place ? alignof(env) : 0, Timed>;
};

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

/// What a priority mailbox needs to pick the next lane.
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
    enum class kind : std::uint8_t { moodycamel, stream };

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
    /// Nothing waits, as far as the strand can tell.
    [[nodiscard]] virtual bool looks_empty() const noexcept = 0;
    /// Strand only: items taken out of the queues but not yet released (priority heads).
    [[nodiscard]] virtual bool holds_items() const noexcept { return false; }
    /// Any thread: items were put and not yet taken out by the strand (reads only
    /// counts that puts and takes update atomically).
    [[nodiscard]] virtual bool has_puts() const noexcept = 0;
    /// Something waits (a cheap poll).
    [[nodiscard]] virtual bool has_more() const noexcept = 0;
    /// How many items wait, all lanes together (exact when no put or take is running).
    [[nodiscard]] virtual std::size_t size_approx() const noexcept = 0;
    /// A new, empty mailbox of the same kind.
    [[nodiscard]] virtual std::unique_ptr<mailbox_base> fresh() const = 0;

    const kind what;
};

/// A mailbox on moodycamel queues, for envelopes of one type (`ops`) held in `Slot`s
/// (see `slot_of`): one lane for concurrent subscribers (any worker takes), or one lane
/// per priority level for a strand.
template <class Slot>
class mailbox final : public mailbox_base {
    using item = Slot;
    static constexpr bool timed = Slot::is_timed;

public:
    mailbox(const envelope_ops& ops, bool strand, const lane_rules& rules, std::size_t capacity)
        : mailbox_base(kind::moodycamel),
          ops_(ops),
          strand_(strand),
          rules_(rules),
          capacity_(capacity),
          lanes_(new lane[rules.levels]) {
        for (std::size_t i = 0; i < rules_.levels; ++i) {
            lanes_[i].queue.emplace(capacity);
            if (strand) {
                // A strand has one consumer at a time, so it may keep moodycamel's
                // consumer token; without it every dequeue re-scans the producers.
                lanes_[i].consumer.emplace(*lanes_[i].queue);
            }
        }
    }

    void put(envelope_base& env, bool move, std::size_t level, clock_source::time_point now) override {
        item fresh;
        fresh.fill(ops_, env, move);
        if constexpr (timed) {
            fresh.enqueued = now;
        } else {
            (void)now;
        }
        if (!lanes_[level].queue->enqueue(std::move(fresh))) {
            throw std::bad_alloc();
        }
    }

    std::size_t take_chunk(std::size_t /*want*/, clock_source::time_point now) noexcept override {
        chosen_ = choose(now);
        return chosen_ < rules_.levels ? 1 : 0;
    }

    envelope_base& at(std::size_t /*i*/) noexcept override { return lanes_[chosen_].head->envelope(ops_); }

    [[nodiscard]] clock_source::time_point enqueued(std::size_t /*i*/) const noexcept override {
        return enqueued_of(*lanes_[chosen_].head);
    }

    void release_chunk(std::size_t count) noexcept override {
        if (count != 0) {
            lanes_[chosen_].head.reset();
        }
    }

    bool take_shared(taken_item& out) noexcept override {
        item got;
        if (!lanes_[0].queue->try_dequeue(got)) {
            return false;
        }
        out.hold(std::move(got), ops_, enqueued_of(got));
        return true;
    }

    [[nodiscard]] bool looks_empty() const noexcept override {
        for (std::size_t i = 0; i < rules_.levels; ++i) {
            if (lanes_[i].queue->size_approx() != 0 || lanes_[i].head) {
                return false;
            }
        }
        return true;
    }

    [[nodiscard]] bool has_more() const noexcept override { return !looks_empty(); }

    [[nodiscard]] bool holds_items() const noexcept override {
        for (std::size_t i = 0; i < rules_.levels; ++i) {
            if (lanes_[i].head) {
                return true;
            }
        }
        return false;
    }

    [[nodiscard]] bool has_puts() const noexcept override {
        for (std::size_t i = 0; i < rules_.levels; ++i) {
            if (lanes_[i].queue->size_approx() != 0) {
                return true;
            }
        }
        return false;
    }

    [[nodiscard]] std::size_t size_approx() const noexcept override {
        std::size_t total = 0;
        for (std::size_t i = 0; i < rules_.levels; ++i) {
            total += lanes_[i].queue->size_approx() + (lanes_[i].head ? 1 : 0);
        }
        return total;
    }

    [[nodiscard]] std::unique_ptr<mailbox_base> fresh() const override {
        return std::make_unique<mailbox>(ops_, strand_, rules_, capacity_);
    }

private:
    struct lane {
        std::optional<moodycamel::ConcurrentQueue<item>> queue;
        std::optional<moodycamel::ConsumerToken> consumer;
        /// Strand only: the first item of the lane, taken out so the strand can
        /// compare lanes (moodycamel has no peek).
        std::optional<item> head;

        bool fill_head() noexcept {
            if (!head) {
                head.emplace();
                if (!queue->try_dequeue(*consumer, *head)) {
                    head.reset();
                }
            }
            return head.has_value();
        }
    };

    /// Picks the lane to serve among the heads (`rules_.levels` when all are empty):
    /// without aging or expiry the highest non-empty lane (lower lanes are not even
    /// polled); otherwise an expired head goes first (so it leaves the queue at once),
    /// and an aged head below the top level goes before every higher level, oldest
    /// first. (The top level needs no promotion; letting its aged events compete by age
    /// would starve the lower levels again under overload.)
    std::size_t choose(clock_source::time_point now) noexcept {
        const std::size_t levels = rules_.levels;
        if (rules_.aging_ns == 0 && rules_.ttl_ns == 0) {
            for (std::size_t i = levels; i-- > 0;) {
                if (lanes_[i].fill_head()) {
                    return i;
                }
            }
            return levels;
        }
        std::size_t chosen = levels;
        clock_source::time_point oldest = clock_source::time_point::max();
        for (std::size_t i = 0; i < levels; ++i) {
            if (!lanes_[i].fill_head()) {
                continue;
            }
            const clock_source::time_point since = enqueued_of(*lanes_[i].head);
            const auto waited = (now - since).count();
            const bool due = (rules_.ttl_ns > 0 && waited >= rules_.ttl_ns) ||
                             (rules_.aging_ns > 0 && i + 1 < levels && waited >= rules_.aging_ns);
            if (due && since < oldest) {
                oldest = since;
                chosen = i;
            }
        }
        if (chosen == levels) {
            for (std::size_t i = levels; i-- > 0;) {
                if (lanes_[i].head) {
                    return i;
                }
            }
        }
        return chosen;
    }

    static clock_source::time_point enqueued_of(const item& it) noexcept {
        if constexpr (timed) {
            return it.enqueued;
        } else {
            (void)it;
            return {};
        }
    }

    const envelope_ops& ops_;
    const bool strand_;
    const lane_rules rules_;
    const std::size_t capacity_;
    std::unique_ptr<lane[]> lanes_;
    /// Strand only: the lane whose head is the current chunk.
    std::size_t chosen_ = 0;
};

} // namespace herald::detail
