// Flow control: how many events may wait for a subscriber, what a full mailbox does with
// one more, and the key that orders or conflates events.
#pragma once

#include <herald/detail/chrono.hpp>
#include <herald/envelope.hpp>

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <new>
#include <string_view>
#include <type_traits>
#include <utility>

namespace herald {

/// A mailbox capacity meaning "no bound" (`subscribe_options::capacity`,
/// `bus_options::default_capacity`).
inline constexpr std::size_t unbounded = std::numeric_limits<std::size_t>::max();

/// What a subscriber's full mailbox does with one more event (see docs/flow-control.md).
/// Whatever it does is counted in the subscription's statistics; nothing is lost
/// silently.
enum class overflow : std::uint8_t {
    /// The publisher waits for room, up to `subscribe_options::block_timeout`, then the
    /// event is refused as with `reject`. A publish from inside a handler, filter or error
    /// handler of the same bus never waits (its own worker may be the one that would make
    /// room): it is refused at once.
    block,
    /// The oldest waiting event is dropped (counted `dropped`) to make room.
    drop_oldest,
    /// The new event is dropped for this subscriber (counted `dropped`).
    drop_newest,
    /// The new event is refused (counted `rejected`); `publish_result::refused` says how
    /// many subscribers refused it and `refused_by` which.
    reject,
    /// The new event becomes a dead letter with reason `overflow` on the topic's
    /// dead-letter topic. The topic's policy must have dead letters (`at_least_once`,
    /// `priority` with `dead_letter_expired`, or any policy wrapped in
    /// `herald::with_dead_letters<>`); otherwise `subscribe` throws `usage_error`.
    dead_letter,
    /// While events wait, only the newest of each key is kept: a new event replaces the
    /// waiting one with the same key in its place in the queue (the replaced one is
    /// counted `conflated`). Needs `subscribe_options::key`. A new key arriving when
    /// `capacity` keys wait drops the oldest waiting event (counted `dropped`).
    conflate,
};

namespace detail {
/// A subscription's key extractor, with the key type erased: extracts the key of an
/// event and keeps it in a `stored_key`, which the keyed structures hash and compare.
class stored_key {
public:
    virtual ~stored_key() = default;
    [[nodiscard]] virtual std::size_t hash() const noexcept = 0;
    [[nodiscard]] virtual bool same(const stored_key& other) const noexcept = 0;
    /// A heap copy, for a structure that keeps the key; throws what the copy throws.
    [[nodiscard]] virtual std::unique_ptr<stored_key> clone() const = 0;
};

/// A key extracted for one lookup: built in place when it is small (an integer, a
/// string), so that finding a key's queue allocates nothing; on the heap otherwise.
class extracted_key {
public:
    static constexpr std::size_t room_size = 64;

    extracted_key() noexcept = default;
    ~extracted_key() {
        if (in_room_) {
            get().~stored_key();
        }
    }
    extracted_key(const extracted_key&) = delete;
    extracted_key& operator=(const extracted_key&) = delete;

    /// Builds a `Key` (a `stored_key`) from `args`, in place when it fits.
    template <class Key, class... Args>
    void emplace(Args&&... args) {
        if constexpr (sizeof(Key) <= room_size && alignof(Key) <= alignof(std::max_align_t)) {
            ::new (static_cast<void*>(room_)) Key(std::forward<Args>(args)...);
            in_room_ = true;
        } else {
            heap_ = std::make_unique<Key>(std::forward<Args>(args)...);
        }
    }

    /// The key (after `emplace`).
    [[nodiscard]] const stored_key& get() const noexcept {
        return in_room_ ? *std::launder(reinterpret_cast<const stored_key*>(room_)) : *heap_;
    }

private:
    alignas(std::max_align_t) unsigned char room_[room_size];
    bool in_room_ = false;
    std::unique_ptr<stored_key> heap_;
};

/// Extracts keys of one event type (through `envelope_base`, so that the code that uses
/// them is compiled once).
class key_rules {
public:
    virtual ~key_rules() = default;
    /// The key of `env` (an envelope of the rules' event type); may throw what the
    /// extractor or the key's copy throws.
    [[nodiscard]] virtual std::unique_ptr<stored_key> extract(const envelope_base& env) const = 0;
    /// The key of `env` into `out`, without allocating when it is small; throws like
    /// `extract`.
    virtual void extract_into(const envelope_base& env, extracted_key& out) const = 0;
};

template <class K>
class typed_key final : public stored_key {
public:
    explicit typed_key(K k) : key_(std::move(k)) {}
    [[nodiscard]] std::size_t hash() const noexcept override { return std::hash<K>{}(key_); }
    [[nodiscard]] bool same(const stored_key& other) const noexcept override {
        return key_ == static_cast<const typed_key&>(other).key_;
    }
    [[nodiscard]] std::unique_ptr<stored_key> clone() const override { return std::make_unique<typed_key>(key_); }

private:
    K key_;
};

template <class Event, class F>
class typed_key_rules final : public key_rules {
public:
    using key_type = std::decay_t<std::invoke_result_t<const F&, const Event&>>;

    explicit typed_key_rules(F extract) : extract_(std::move(extract)) {}
    [[nodiscard]] std::unique_ptr<stored_key> extract(const envelope_base& env) const override {
        return std::make_unique<typed_key<key_type>>(extract_(static_cast<const envelope<Event>&>(env).event()));
    }
    void extract_into(const envelope_base& env, extracted_key& out) const override {
        out.emplace<typed_key<key_type>>(extract_(static_cast<const envelope<Event>&>(env).event()));
    }

private:
    F extract_;
};
} // namespace detail

/// What a key extractor must return: a copyable type with `std::hash` and `==` (an id,
/// a string, an enum...). Keys of two events of one subscription are compared with `==`
/// under a short internal lock, so `==` and `std::hash` must be cheap and must not
/// publish.
template <class K>
concept event_key = std::copy_constructible<K> && std::equality_comparable<K> && requires(const K& k) {
    { std::hash<K>{}(k) } -> std::convertible_to<std::size_t>;
};

/// The key of a subscription's events (`subscribe_options::key`): for
/// `ordering::by_key` (events with equal keys are handled one at a time, in each
/// publisher's order; different keys in parallel) and for `overflow::conflate` (only the
/// newest waiting event per key is kept). Built from a callable `const Event& -> K`;
/// it runs on the publisher's thread, once per event, and one that throws is a failed
/// delivery of that subscriber.
///
///     bus.subscribe<quotes>(show, {.capacity = 64, .overflow = herald::overflow::conflate,
///                                  .key = [](const quote& q) { return q.symbol; }});
template <class Event>
class key_of {
public:
    /// No key.
    key_of() = default;

    /// Extracts keys with `extract`, a callable `const Event& -> K` (see `event_key`).
    template <class F>
        requires(!std::same_as<std::remove_cvref_t<F>, key_of>)
    key_of(F extract) // NOLINT(google-explicit-constructor): designated-initializer friendly
        : rules_(make_rules(std::move(extract))) {}

    /// True when no extractor was given.
    [[nodiscard]] bool is_empty() const noexcept { return !rules_; }

    /// The type-erased extractor (null when empty).
    [[nodiscard]] const std::shared_ptr<const detail::key_rules>& rules() const noexcept { return rules_; }

private:
    template <class F>
    static std::shared_ptr<const detail::key_rules> make_rules(F extract) {
        static_assert(std::invocable<const F&, const Event&>,
                      "herald: subscribe_options::key must be callable with the topic's event (const Event&)");
        if constexpr (std::invocable<const F&, const Event&>) {
            using key = std::decay_t<std::invoke_result_t<const F&, const Event&>>;
            static_assert(event_key<key>, "herald: subscribe_options::key must return a copyable key with "
                                          "std::hash and == (herald::event_key), such as an integer or a string");
            if constexpr (event_key<key>) {
                return std::make_shared<const detail::typed_key_rules<Event, F>>(std::move(extract));
            }
        }
        return nullptr;
    }

    std::shared_ptr<const detail::key_rules> rules_;
};

} // namespace herald
