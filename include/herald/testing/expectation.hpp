// The result of a test expectation: true, or false with a message saying what happened.
#pragma once

#include <ostream>
#include <string>
#include <utility>

namespace herald::testing {

/// What an expectation found. Converts to `true` when it holds; otherwise `message()`
/// says what was expected and shows what was actually published. Streams as its message,
/// so `CHECK(rec.published_exactly(1))` in doctest (or `EXPECT_TRUE` in GoogleTest with
/// `<< e`) prints it on failure.
class expectation {
public:
    /// An expectation that holds.
    [[nodiscard]] static expectation pass() { return expectation(true, "satisfied"); }
    /// An expectation that does not hold, and why.
    [[nodiscard]] static expectation fail(std::string why) { return expectation(false, std::move(why)); }

    /// True when the expectation holds (for frameworks that want a plain bool).
    [[nodiscard]] bool holds() const noexcept { return ok_; }
    /// True when the expectation holds.
    explicit operator bool() const noexcept { return ok_; }
    /// "satisfied", or what went wrong with what was seen.
    [[nodiscard]] const std::string& message() const noexcept { return message_; }

    friend std::ostream& operator<<(std::ostream& out, const expectation& e) { return out << e.message_; }

private:
    expectation(bool ok, std::string message) : ok_(ok), message_(std::move(message)) {}

    bool ok_;
    std::string message_;
};

} // namespace herald::testing
