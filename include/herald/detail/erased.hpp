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

/// One queued envelope, stored in place when it fits `Bytes` and moves without throwing,
/// otherwise (`Bytes` == 0) behind a pointer. Moving a slot relocates its envelope
/// (never throws), which is what moodycamel does when it hands items over.
template <std::size_t Bytes>
struct slot {
    static constexpr bool boxed = Bytes == 0;

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
        if constexpr (boxed) {
            ptr = move ? with.move_new(env) : with.clone(env);
        } else {
            if (move) {
                with.move_to(bytes, env);
            } else {
                with.copy_to(bytes, env);
            }
        }
        ops = &with;
    }

    [[nodiscard]] envelope_base& envelope() noexcept {
        if constexpr (boxed) {
            return *ptr;
        } else {
            return *ops->at(bytes);
        }
    }

    void clear() noexcept {
        if (ops == nullptr) {
            return;
        }
        if constexpr (boxed) {
            ops->free(ptr);
        } else {
            ops->destroy(bytes);
        }
        ops = nullptr;
    }

    const envelope_ops* ops = nullptr; // null: empty
    clock_source::time_point enqueued{};
    union {
        // Initialised so that an empty slot never holds an indeterminate pointer (and
        // g++'s -Wmaybe-uninitialized sees that).
        envelope_base* ptr = nullptr;
        alignas(std::max_align_t) unsigned char bytes[Bytes == 0 ? 1 : Bytes];
    };

private:
    void take(slot& other) noexcept {
        ops = std::exchange(other.ops, nullptr);
        enqueued = other.enqueued;
        if (ops == nullptr) {
            return;
        }
        if constexpr (boxed) {
            ptr = other.ptr;
        } else if (ops->trivial) {
            std::memcpy(bytes, other.bytes, ops->size);
        } else {
            ops->relocate(bytes, other.bytes);
        }
    }
};

/// The size classes of in-place storage: an envelope goes in the smallest that fits.
/// Larger envelopes (and those whose move may throw) wait behind a pointer, which costs
/// one allocation per queued copy.
inline constexpr std::size_t size_classes[] = {64, 96, 128, 192, 256, 384, 512};

template <class Event>
constexpr std::size_t size_class_of() {
    using env = envelope<Event>;
    if constexpr (!std::is_nothrow_move_constructible_v<env> || alignof(env) > alignof(std::max_align_t)) {
        return 0;
    } else {
        for (const std::size_t bytes : size_classes) {
            if (sizeof(env) <= bytes) {
                return bytes;
            }
        }
        return 0;
    }
}

/// The largest slot, so a caller can hold any mailbox's item on its stack.
inline constexpr std::size_t max_slot_size = sizeof(slot<512>);

/// One item taken out of a mailbox, owned by whoever took it (a slot moved into
/// storage large enough for any size class).
class taken_item {
public:
    taken_item() noexcept = default;
    taken_item(const taken_item&) = delete;
    taken_item& operator=(const taken_item&) = delete;
    ~taken_item() { reset(); }

    [[nodiscard]] explicit operator bool() const noexcept { return env_ != nullptr; }
    [[nodiscard]] envelope_base& envelope() const noexcept { return *env_; }
    [[nodiscard]] clock_source::time_point enqueued() const noexcept { return enqueued_; }

    void reset() noexcept {
        if (env_ != nullptr) {
            destroy_(storage_);
            env_ = nullptr;
        }
    }

    /// Moves `from` in (this must be empty).
    template <std::size_t Bytes>
    void hold(slot<Bytes>&& from) noexcept {
        static_assert(sizeof(slot<Bytes>) <= max_slot_size);
        auto* s = ::new (static_cast<void*>(storage_)) slot<Bytes>(std::move(from));
        env_ = &s->envelope();
        enqueued_ = s->enqueued;
        destroy_ = [](void* p) noexcept { std::launder(static_cast<slot<Bytes>*>(p))->~slot(); };
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

/// A subscriber's queue of envelopes, of any event type: one lane, or one per priority
/// level. `put` may be called by any number of threads at once; taking is either one
/// strand at a time (`strand` mailboxes, which keep moodycamel's consumer tokens) or
/// any number of workers (`take_shared`).
class mailbox_base {
public:
    /// Items one `take_chunk` returns at most.
    static constexpr std::size_t chunk = 16;

    virtual ~mailbox_base() = default;
    mailbox_base() = default;
    mailbox_base(const mailbox_base&) = delete;
    mailbox_base& operator=(const mailbox_base&) = delete;

    /// Queues a copy (or a move) of `env` on lane `level`; throws when the copy or the
    /// queue's memory fails, and then nothing was queued.
    virtual void put(const envelope_ops& ops, envelope_base& env, bool move, std::size_t level,
                     clock_source::time_point now) = 0;
    /// Strand only: takes up to `want` (<= `chunk`) items of the only lane into the
    /// mailbox's own buffer; `at(i)` reads them until `release_chunk`.
    virtual std::size_t take_chunk(std::size_t want) noexcept = 0;
    [[nodiscard]] virtual envelope_base& at(std::size_t i) noexcept = 0;
    virtual void release_chunk(std::size_t count) noexcept = 0;
    /// Strand only: the next item (the lane `rules` pick among the heads of all lanes).
    virtual bool take(taken_item& out, clock_source::time_point now) noexcept = 0;
    /// Any worker: the next item of the only lane.
    virtual bool take_shared(taken_item& out) noexcept = 0;
    /// Nothing waits, as far as the strand can tell.
    [[nodiscard]] virtual bool looks_empty() const noexcept = 0;
    /// Something waits in the only lane (a cheap poll).
    [[nodiscard]] virtual bool has_more() const noexcept = 0;
    /// A new, empty mailbox of the same kind.
    [[nodiscard]] virtual std::unique_ptr<mailbox_base> fresh() const = 0;
};

/// The mailbox for envelopes stored in `Bytes` (0: behind a pointer).
template <std::size_t Bytes>
class mailbox final : public mailbox_base {
    using item = slot<Bytes>;

public:
    mailbox(bool strand, const lane_rules& rules, std::size_t capacity)
        : strand_(strand), rules_(rules), capacity_(capacity), lanes_(new lane[rules.levels]) {
        for (std::size_t i = 0; i < rules_.levels; ++i) {
            lanes_[i].queue.emplace(capacity);
            if (strand) {
                // A strand has one consumer at a time, so it may keep moodycamel's
                // consumer token; without it every dequeue re-scans the producers.
                lanes_[i].consumer.emplace(*lanes_[i].queue);
            }
        }
    }

    ~mailbox() override { release_chunk(taken_); }

    void put(const envelope_ops& ops, envelope_base& env, bool move, std::size_t level,
             clock_source::time_point now) override {
        item fresh;
        fresh.fill(ops, env, move);
        fresh.enqueued = now;
        if (!lanes_[level].queue->enqueue(std::move(fresh))) {
            throw std::bad_alloc();
        }
    }

    std::size_t take_chunk(std::size_t want) noexcept override {
        lane& only = lanes_[0];
        taken_ = only.queue->try_dequeue_bulk(*only.consumer, output_iterator{chunk_}, std::min(want, chunk));
        return taken_;
    }

    envelope_base& at(std::size_t i) noexcept override { return chunk_item(i).envelope(); }

    void release_chunk(std::size_t count) noexcept override {
        for (std::size_t i = 0; i < count; ++i) {
            chunk_item(i).~item();
        }
        taken_ = 0;
    }

    bool take(taken_item& out, clock_source::time_point now) noexcept override {
        if (rules_.levels == 1) {
            item got;
            if (!lanes_[0].queue->try_dequeue(*lanes_[0].consumer, got)) {
                return false;
            }
            out.hold(std::move(got));
            return true;
        }
        return take_priority(out, now);
    }

    bool take_shared(taken_item& out) noexcept override {
        item got;
        if (!lanes_[0].queue->try_dequeue(got)) {
            return false;
        }
        out.hold(std::move(got));
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

    [[nodiscard]] bool has_more() const noexcept override { return lanes_[0].queue->size_approx() != 0; }

    [[nodiscard]] std::unique_ptr<mailbox_base> fresh() const override {
        return std::make_unique<mailbox>(strand_, rules_, capacity_);
    }

private:
    struct lane {
        std::optional<moodycamel::ConcurrentQueue<item>> queue;
        std::optional<moodycamel::ConsumerToken> consumer;
        /// Priority only: the first item of the lane, taken out so the strand can
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

    /// Picks the lane to serve among the heads: without aging or expiry the highest
    /// non-empty lane (lower lanes are not even polled); otherwise an expired head goes
    /// first (so it leaves the queue at once), and an aged head below the top level
    /// goes before every higher level, oldest first. (The top level needs no
    /// promotion; letting its aged events compete by age would starve the lower levels
    /// again under overload.)
    bool take_priority(taken_item& out, clock_source::time_point now) noexcept {
        const std::size_t levels = rules_.levels;
        std::size_t chosen = levels;
        if (rules_.aging_ns == 0 && rules_.ttl_ns == 0) {
            for (std::size_t i = levels; i-- > 0;) {
                if (lanes_[i].fill_head()) {
                    chosen = i;
                    break;
                }
            }
        } else {
            clock_source::time_point oldest = clock_source::time_point::max();
            for (std::size_t i = 0; i < levels; ++i) {
                if (!lanes_[i].fill_head()) {
                    continue;
                }
                const auto waited = (now - lanes_[i].head->enqueued).count();
                const bool due = (rules_.ttl_ns > 0 && waited >= rules_.ttl_ns) ||
                                 (rules_.aging_ns > 0 && i + 1 < levels && waited >= rules_.aging_ns);
                if (due && lanes_[i].head->enqueued < oldest) {
                    oldest = lanes_[i].head->enqueued;
                    chosen = i;
                }
            }
            if (chosen == levels) {
                for (std::size_t i = levels; i-- > 0;) {
                    if (lanes_[i].head) {
                        chosen = i;
                        break;
                    }
                }
            }
        }
        if (chosen == levels) {
            return false;
        }
        out.hold(std::move(*lanes_[chosen].head));
        lanes_[chosen].head.reset();
        return true;
    }

    /// moodycamel move-assigns through the output iterator; this one constructs in
    /// place in the chunk buffer instead (which holds no live items between chunks).
    struct output_iterator {
        unsigned char* at;
        output_iterator& operator*() noexcept { return *this; }
        output_iterator& operator++() noexcept {
            at += sizeof(item);
            return *this;
        }
        output_iterator operator++(int) noexcept {
            output_iterator before = *this;
            at += sizeof(item);
            return before;
        }
        output_iterator& operator=(item&& from) noexcept {
            ::new (static_cast<void*>(at)) item(std::move(from));
            return *this;
        }
    };

    item& chunk_item(std::size_t i) noexcept {
        return *std::launder(reinterpret_cast<item*>(chunk_ + i * sizeof(item)));
    }

    const bool strand_;
    const lane_rules rules_;
    const std::size_t capacity_;
    std::unique_ptr<lane[]> lanes_;
    std::size_t taken_ = 0;
    alignas(item) unsigned char chunk_[chunk * sizeof(item)];
};

/// A mailbox for `Event`'s envelopes.
template <class Event>
std::unique_ptr<mailbox_base> make_mailbox(bool strand, const lane_rules& rules, std::size_t capacity) {
    return std::make_unique<mailbox<size_class_of<Event>()>>(strand, rules, capacity);
}

} // namespace herald::detail
