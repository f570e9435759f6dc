// What herald reports when handlers fail, and the exceptions it throws on misuse.
#pragma once

#include <herald/envelope.hpp>

#include <cstdint>
#include <exception>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace herald {

namespace detail {
/// What failed, in words: the exception's `what()`, else the reason a handler returned,
/// else a placeholder.
inline std::string failure_message(const std::exception_ptr& error, std::string_view reason) {
    if (!error) {
        return reason.empty() ? std::string("no exception") : std::string(reason);
    }
    try {
        std::rethrow_exception(error);
    } catch (const std::exception& e) {
        return e.what();
    } catch (...) {
        return "unknown exception (not derived from std::exception)";
    }
}
} // namespace detail

/// A handler (or filter) that threw, or a handler that returned a failed `herald::outcome`. Passed to the bus's error
/// handler on the thread that ran the handler; the views are valid only during that call.
struct delivery_error {
    std::string_view topic{};      ///< topic name
    std::string_view subscriber{}; ///< the subscription's name
    event_id id{};                 ///< the event's id
    std::uint64_t sequence = 0;    ///< the event's sequence number on its topic
    std::uint32_t attempt = 1;     ///< which delivery attempt failed
    std::exception_ptr error{};    ///< what the handler threw (null if it returned a failure)
    std::string_view reason{};     ///< the reason of a failure the handler returned (`herald::nack`...)

    /// The exception's `what()`, the returned failure's reason, or a placeholder for
    /// exceptions not derived from `std::exception`.
    [[nodiscard]] std::string message() const { return detail::failure_message(error, reason); }
};

/// Receives every handler failure. Called on the thread that ran the failed handler,
/// possibly from several threads at once; it must be thread-safe. Whatever it throws is
/// swallowed (and counted as a failure of the error handler).
using error_handler = std::function<void(const delivery_error&)>;

/// Thrown for a misuse the compiler cannot see, such as calling `drain()` from inside a
/// handler (the call would wait for itself) or mixing two topic types with one name.
class usage_error : public std::logic_error {
public:
    using std::logic_error::logic_error;
};

} // namespace herald
