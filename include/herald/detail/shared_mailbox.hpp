// The mailbox of a concurrent subscriber: one moodycamel queue that every worker of
// its pool takes from.
#pragma once

#include <herald/clock.hpp>
#include <herald/detail/concurrentqueue.hpp>
#include <herald/detail/erased.hpp>
#include <herald/envelope.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>

namespace herald::detail {

/// How an envelope waits in a mailbox. Every envelope of a mailbox has the same type,
/// so the mailbox keeps the `envelope_ops`; a slot keeps them too only when it must
/// call them to move or destroy itself.
enum class slot_kind : std::uint8_t {
    plain,     ///< trivially copyable, in place: the slot is the envelope's bytes
    relocated, ///< in place, moved without throwing through the table
    boxed,     ///< behind a pointer (too large, over-aligned, or its move may throw)
};

/// One queued envelope of a moodycamel mailbox for envelopes of `Bytes` bytes aligned
/// to `Align` (`plain` and `relocated`; `boxed` ignores both). Moving a slot relocates
/// its envelope and never throws, which is what moodycamel does when it hands items
/// over.
template <slot_kind Kind, std::size_t Bytes, std::size_t Align>
struct slot;

/// A trivially copyable envelope: nothing to destroy, moved by copying its bytes.
template <std::size_t Bytes, std::size_t Align>
struct slot<slot_kind::plain, Bytes, Align> {
    /// Fills the slot with a copy of `env` (cannot throw: the copy is trivial).
    void fill(const envelope_ops& with, envelope_base& env, bool /*move*/) { with.copy_to(bytes, env); }
    [[nodiscard]] envelope_base& envelope(const envelope_ops& with) noexcept { return *with.at(bytes); }
    static constexpr bool needs_destroy = false;

    alignas(Align) unsigned char bytes[Bytes];
};

/// An envelope kept in place that knows how to move and destroy itself.
template <std::size_t Bytes, std::size_t Align>
struct slot<slot_kind::relocated, Bytes, Align> {
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
struct slot<slot_kind::boxed, Bytes, Align> {
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

    const envelope_ops* ops = nullptr; // null: empty
    envelope_base* ptr = nullptr;

private:
    void clear() noexcept {
        if (ops != nullptr) {
            std::exchange(ops, nullptr)->free(std::exchange(ptr, nullptr));
        }
    }
};

/// How `Event`'s envelopes wait in a moodycamel mailbox. In-place slots are exactly the
/// envelope's size; one queue type is compiled per distinct envelope size and kind,
/// shared by every event type of that size.
template <class Event>
struct slot_of {
    using env = envelope<Event>;
    static constexpr bool in_place = std::is_nothrow_move_constructible_v<env> &&
                                     alignof(env) <= alignof(std::max_align_t) && sizeof(env) <= max_in_place;
    static constexpr slot_kind kind = !in_place                           ? slot_kind::boxed
                                      : std::is_trivially_copyable_v<env> ? slot_kind::plain
                                                                          : slot_kind::relocated;
    using type = slot<kind, in_place ? sizeof(env) : 0, in_place ? alignof(env) : 0>;
};

/// A mailbox on one moodycamel queue, for envelopes of one type (`ops`) held in `Slot`s
/// (see `slot_of`): any number of workers take items out at once (`take_shared`), so a
/// concurrent subscriber's calls overlap. It has no strand, so the strand-side calls
/// find nothing.
template <class Slot>
class shared_mailbox final : public mailbox_base {
public:
    shared_mailbox(const envelope_ops& ops, std::size_t capacity)
        : mailbox_base(kind::shared), ops_(ops), capacity_(capacity), queue_(capacity) {}

    void put(envelope_base& env, bool move, std::size_t /*level*/, clock_source::time_point /*now*/) override {
        Slot fresh;
        fresh.fill(ops_, env, move);
        if (!queue_.enqueue(std::move(fresh))) {
            throw std::bad_alloc();
        }
    }

    std::size_t take_chunk(std::size_t /*want*/, clock_source::time_point /*now*/) noexcept override { return 0; }
    envelope_base& at(std::size_t /*i*/) noexcept override { std::terminate(); }
    void release_chunk(std::size_t /*count*/) noexcept override {}

    bool take_shared(taken_item& out) noexcept override {
        Slot got;
        if (!queue_.try_dequeue(got)) {
            return false;
        }
        out.hold(std::move(got), ops_, {});
        return true;
    }

    [[nodiscard]] bool has_puts() const noexcept override { return queue_.size_approx() != 0; }

    [[nodiscard]] std::size_t size_approx() const noexcept override { return queue_.size_approx(); }

    [[nodiscard]] std::unique_ptr<mailbox_base> fresh() const override {
        return std::make_unique<shared_mailbox>(ops_, capacity_);
    }

private:
    const envelope_ops& ops_;
    const std::size_t capacity_;
    moodycamel::ConcurrentQueue<Slot> queue_;
};

} // namespace herald::detail
