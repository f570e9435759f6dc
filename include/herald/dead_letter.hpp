// Dead letters: events a subscriber could not handle, and the topic that carries them.
#pragma once

#include <herald/detail/chrono.hpp>
#include <herald/envelope.hpp>
#include <herald/topic.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>
#include <string_view>

namespace herald {

/// Why an event was dead-lettered.
enum class dead_letter_reason : std::uint8_t {
    attempts_exhausted, ///< the last allowed attempt failed
    rejected,           ///< the handler returned `reject()`, or the policy's `should_retry` said no
    expired,            ///< it waited longer than its priority policy's time-to-live
    shutdown,           ///< a retry was still waiting when the bus shut down with `herald::drain`
    overflow,           ///< the subscriber's mailbox was full (`herald::overflow::dead_letter`)
};

/// The readable name of a reason ("attempts_exhausted", ...).
[[nodiscard]] constexpr std::string_view to_string(dead_letter_reason reason) noexcept {
    switch (reason) {
    case dead_letter_reason::attempts_exhausted:
        return "attempts_exhausted";
    case dead_letter_reason::rejected:
        return "rejected";
    case dead_letter_reason::expired:
        return "expired";
    case dead_letter_reason::shutdown:
        return "shutdown";
    case dead_letter_reason::overflow:
        return "overflow";
    }
    return "unknown";
}

/// An event one subscriber could not handle, with why. Published on
/// `dead_letter_topic<Topic>`; when that topic has no subscriber, kept in the bus's
/// bounded dead-letter store (`bus.dead_letters<Topic>()`).
template <class Event>
struct dead_letter {
    /// The event and its metadata as of the last attempt (`attempt()` is the last one
    /// made). Its `topic()`/`source()` views are valid while the bus exists.
    envelope<Event> original;
    /// Name of the subscription that failed.
    std::string subscriber;
    /// Attempts made (0 for an event that expired before its first attempt).
    std::uint32_t attempts = 0;
    dead_letter_reason reason = dead_letter_reason::attempts_exhausted;
    /// The last error: the exception's `what()`, or the reason the handler returned.
    std::string error;
    /// The last exception thrown, if the last attempt threw (null otherwise).
    std::exception_ptr exception;
    /// When it was dead-lettered (wall clock; the publish time is `original.time()`).
    std::chrono::system_clock::time_point dead_lettered_at;

    /// The event itself.
    [[nodiscard]] const Event& event() const noexcept { return original.event(); }
};

namespace detail {
template <class Topic>
struct dead_letter_name {
    static constexpr std::string_view suffix = ".dead_letters";
    static constexpr std::string_view base = topic_name_v<Topic>;
    static constexpr std::array<char, base.size() + suffix.size() + 1> text = [] {
        std::array<char, base.size() + suffix.size() + 1> out{};
        std::size_t i = 0;
        for (const char c : base) {
            out[i++] = c;
        }
        for (const char c : suffix) {
            out[i++] = c;
        }
        return out;
    }();
    static constexpr std::string_view value{text.data(), base.size() + suffix.size()};
};
} // namespace detail

/// The dead-letter topic of `Topic`: named "<topic name>.dead_letters", carrying
/// `dead_letter<Event>`, fire-and-forget. Subscribe to it like any topic.
template <topic_type Topic>
struct dead_letter_topic : topic<dead_letter<typename Topic::event_type>> {
    static constexpr std::string_view name = detail::dead_letter_name<Topic>::value;
};

} // namespace herald
