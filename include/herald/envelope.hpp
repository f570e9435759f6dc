// The envelope: an event plus the metadata every delivery carries (CloudEvents-like).
#pragma once

#include <herald/detail/chrono.hpp>

#include <atomic>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace herald {

namespace detail {
/// Appends `value` as 16 lowercase hex digits (how ids and span ids are written).
inline void append_hex16(std::string& out, std::uint64_t value) {
    constexpr char digits[] = "0123456789abcdef";
    for (int i = 15; i >= 0; --i) {
        out += digits[(value >> (4 * i)) & 0xfU];
    }
}
} // namespace detail

/// A 128-bit event id, unique among the events of one process run: the high half is
/// random per bus and topic, the low half counts. Re-published events may keep their id
/// on purpose (that is how an idempotent consumer recognises them). The nil id is zero.
struct event_id {
    std::uint64_t high = 0;
    std::uint64_t low = 0;

    /// True for the default-constructed (nil) id, which no published event has.
    [[nodiscard]] constexpr bool is_nil() const noexcept { return high == 0 && low == 0; }

    /// 32 lowercase hex digits, high half first.
    [[nodiscard]] std::string to_string() const {
        std::string text;
        text.reserve(32);
        detail::append_hex16(text, high);
        detail::append_hex16(text, low);
        return text;
    }

    friend constexpr auto operator<=>(const event_id&, const event_id&) = default;
};

template <class Event>
class envelope;

namespace detail {
/// Where events of one topic on one bus come from; owned by the bus.
struct origin {
    std::string_view topic;
    std::string_view source;
    std::uint64_t id_prefix = 0;
};

/// Numbers the origins alive in the process, so that an envelope names its origin in 32
/// bits instead of a pointer (which keeps the envelope's metadata at 56 bytes). Lookups
/// are lock-free; registration, which happens once per topic and bus, takes a mutex.
/// A number is reused after its topic state is gone (envelopes say their topic and
/// source are valid only while the bus exists).
class origin_table {
public:
    /// The process's table; never destroyed, so envelopes may be read during exit.
    static origin_table& instance() {
        static origin_table* const table = new origin_table;
        return *table;
    }

    /// Registers `where` (which must stay put until `remove`). Throws
    /// std::length_error when 2^20 origins are alive at once.
    [[nodiscard]] std::uint32_t add(const origin* where) {
        std::lock_guard lock(mutex_);
        std::uint32_t index = 0;
        if (!free_.empty()) {
            index = free_.back();
            free_.pop_back();
        } else {
            if (next_ == chunk_size * max_chunks) {
                throw std::length_error("herald: more than 2^20 topic states alive at once");
            }
            index = next_++;
            auto& chunk = chunks_[index / chunk_size];
            if (chunk.load(std::memory_order_relaxed) == nullptr) {
                chunk.store(new std::atomic<const origin*>[chunk_size](), std::memory_order_release);
            }
        }
        chunks_[index / chunk_size].load(std::memory_order_relaxed)[index % chunk_size].store(
            where, std::memory_order_release);
        return index;
    }

    /// Frees a number for reuse.
    void remove(std::uint32_t index) noexcept {
        std::lock_guard lock(mutex_);
        chunks_[index / chunk_size].load(std::memory_order_relaxed)[index % chunk_size].store(
            nullptr, std::memory_order_relaxed);
        try {
            free_.push_back(index);
        } catch (...) {
            // Out of memory: the number is not reused.
        }
    }

    /// The origin registered under `index`. Lock-free.
    [[nodiscard]] const origin& at(std::uint32_t index) const noexcept {
        return *chunks_[index / chunk_size].load(std::memory_order_acquire)[index % chunk_size].load(
            std::memory_order_acquire);
    }

private:
    origin_table() { (void)add(&none_); }

    static constexpr std::uint32_t chunk_size = 1024;
    static constexpr std::uint32_t max_chunks = 1024;

    std::atomic<std::atomic<const origin*>*> chunks_[max_chunks]{};
    std::mutex mutex_;
    std::vector<std::uint32_t> free_;
    std::uint32_t next_ = 0;
    /// Number 0: what an envelope that never came from a bus names.
    const origin none_{};
};

struct envelope_access;

/// The most attempts a retrying policy may allow (the envelope counts them in 16 bits).
inline constexpr std::uint32_t max_attempts_limit = 65535;
} // namespace detail

/// The metadata every envelope carries, whatever its event type (CloudEvents-like):
/// what `envelope<Event>` adds to the event. Handlers see it through `envelope<Event>`.
class envelope_base {
public:
    /// Wall-clock time, as CloudEvents' `time`.
    using time_point = std::chrono::system_clock::time_point;

    /// Unique id of the event (CloudEvents `id`).
    [[nodiscard]] event_id id() const noexcept { return id_; }
    /// Position in the topic: 1 for the first event published on it by this bus, then
    /// consecutive. Sequence order is publish order for one publishing thread; events
    /// published concurrently by several threads get distinct, arbitrary-order numbers.
    [[nodiscard]] std::uint64_t sequence() const noexcept { return sequence_; }
    /// When the event was published, by the bus's clock.
    [[nodiscard]] time_point time() const noexcept { return time_; }
    /// Name of the topic it was published on (CloudEvents `type`).
    [[nodiscard]] std::string_view topic() const noexcept { return detail::origin_table::instance().at(origin_).topic; }
    /// The publishing bus's source string (CloudEvents `source`).
    [[nodiscard]] std::string_view source() const noexcept {
        return detail::origin_table::instance().at(origin_).source;
    }
    /// 1 for the first delivery; retrying policies count redeliveries up from there.
    [[nodiscard]] std::uint32_t attempt() const noexcept { return attempt_; }
    /// The id that groups a chain of events (CloudEvents extension `correlationid`, the
    /// W3C trace-id): given by the publisher, or filled in when a handler publishes (the
    /// handled event's `trace_id()`); nil for an event that starts a chain.
    [[nodiscard]] event_id correlation_id() const noexcept { return correlation_; }
    /// Whether the event has a correlation id (given, or inherited from a handled event).
    [[nodiscard]] bool has_correlation_id() const noexcept { return !correlation_.is_nil(); }
    /// The span id (`span_id()`) of the event whose handler published this one, filled in
    /// when a handler publishes (or given in `publish_options::causation`); 0 for an event
    /// that nothing caused. The chain is reassembled by matching it with `span_id()`.
    [[nodiscard]] std::uint64_t causation_id() const noexcept { return causation_; }
    /// This event's 64-bit span id (the W3C parent-id of what it causes): a hash of its id.
    [[nodiscard]] std::uint64_t span_id() const noexcept;
    /// The chain's id: the correlation id, or the event's own id when it starts a chain.
    [[nodiscard]] event_id trace_id() const noexcept { return correlation_.is_nil() ? id_ : correlation_; }
    /// The W3C `sampled` trace flag: true unless the publisher (or the event that caused
    /// this one) said that its trace is not recorded.
    [[nodiscard]] bool sampled() const noexcept { return (bits_ & unsampled_bit) == 0; }
    /// The priority level it was published with (always 0 on topics without priorities).
    [[nodiscard]] std::uint8_t priority() const noexcept { return priority_; }

protected:
    explicit envelope_base(std::uint32_t from) noexcept : origin_(from) {}

private:
    friend struct detail::envelope_access;

    static constexpr std::uint8_t epoch_bit = 1;     // which drain epoch the queued copy is counted in
    static constexpr std::uint8_t unsampled_bit = 2; // the W3C trace flag `sampled` is off

    // 64 bytes of metadata: an event waiting in a queue costs its size plus these.
    event_id id_{};
    event_id correlation_{};
    std::uint64_t causation_ = 0;
    std::uint64_t sequence_ = 0;
    time_point time_{};
    std::uint32_t origin_ = 0; // number in detail::origin_table
    std::uint16_t attempt_ = 1;
    std::uint8_t priority_ = 0;
    std::uint8_t bits_ = 0; // epoch_bit | unsampled_bit
};

/// The 64-bit span id of the event with id `id` (never 0): what `envelope_base::span_id()`
/// returns and what the events it causes carry as `causation_id()`.
[[nodiscard]] constexpr std::uint64_t span_of(event_id id) noexcept {
    std::uint64_t x = id.high ^ (id.low * 0x9e3779b97f4a7c15ULL);
    x = (x ^ (x >> 30U)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27U)) * 0x94d049bb133111ebULL;
    x ^= x >> 31U;
    return x == 0 ? 1 : x;
}

inline std::uint64_t envelope_base::span_id() const noexcept { return span_of(id_); }

/// What a handler receives: the event and its metadata (`envelope_base`). Handlers may
/// take `const envelope<Event>&` instead of `const Event&` to read the metadata.
///
/// Copying an envelope copies the event. `topic()` and `source()` view strings owned by
/// the bus: they stay valid while the bus exists (copy them to keep them longer).
template <class Event>
class envelope : public envelope_base {
public:
    using event_type = Event;

    /// The event itself.
    [[nodiscard]] const Event& event() const& noexcept { return event_; }
    /// The event itself, mutable: every async subscriber owns its copy.
    [[nodiscard]] Event& event() & noexcept { return event_; }
    /// The event, moved out of an expiring envelope.
    [[nodiscard]] Event&& event() && noexcept { return std::move(event_); }

private:
    friend struct detail::envelope_access;

    template <class... Args>
    explicit envelope(std::uint32_t from, std::in_place_t, Args&&... args)
        : envelope_base(from), event_(std::forward<Args>(args)...) {}

    Event event_;
};

namespace detail {
/// The bus's back door to the envelope's private state.
struct envelope_access {
    template <class Event, class... Args>
    static envelope<Event> make(std::uint32_t from, Args&&... args) {
        return envelope<Event>(from, std::in_place, std::forward<Args>(args)...);
    }
    static void stamp(envelope_base& env, event_id id, std::uint64_t sequence, envelope_base::time_point time,
                      event_id correlation) noexcept {
        env.id_ = id;
        env.sequence_ = sequence;
        env.time_ = time;
        env.correlation_ = correlation;
    }
    /// Policies allow at most `max_attempts_limit` attempts, so the count fits.
    static void set_attempt(envelope_base& env, std::uint32_t attempt) noexcept {
        env.attempt_ = static_cast<std::uint16_t>(attempt);
    }
    static void set_priority(envelope_base& env, std::uint8_t level) noexcept { env.priority_ = level; }
    static void set_epoch(envelope_base& env, std::uint8_t epoch) noexcept {
        env.bits_ = static_cast<std::uint8_t>((env.bits_ & ~envelope_base::epoch_bit) | (epoch & 1U));
    }
    /// The correlation id, the causation id and the `sampled` flag.
    static void set_cause(envelope_base& env, event_id correlation, std::uint64_t causation, bool sampled) noexcept {
        env.correlation_ = correlation;
        env.causation_ = causation;
        env.bits_ = static_cast<std::uint8_t>((env.bits_ & ~envelope_base::unsampled_bit) |
                                              (sampled ? 0U : envelope_base::unsampled_bit));
    }
    static void set_origin(envelope_base& env, std::uint32_t from) noexcept { env.origin_ = from; }
    static std::uint8_t epoch(const envelope_base& env) noexcept {
        return static_cast<std::uint8_t>(env.bits_ & envelope_base::epoch_bit);
    }
    /// The envelope's number in `origin_table` (which topic and source it came from).
    static std::uint32_t origin(const envelope_base& env) noexcept { return env.origin_; }
};

/// Metadata an event brings from elsewhere (a bridge importing it from another
/// process): published with these instead of this bus's own.
struct foreign_stamp {
    std::uint32_t origin = 0; ///< number in `origin_table`: the topic and the remote source
    std::uint64_t sequence = 0;
    envelope_base::time_point time{};
    std::uint32_t attempt = 1;
};
} // namespace detail

} // namespace herald

/// Hashing for unordered containers keyed by event id (idempotent consumers).
template <>
struct std::hash<herald::event_id> {
    std::size_t operator()(const herald::event_id& id) const noexcept {
        return static_cast<std::size_t>(id.low * 0x9e3779b97f4a7c15ULL ^ id.high);
    }
};
