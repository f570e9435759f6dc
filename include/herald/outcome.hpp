// What a handler may return to say how a delivery went, instead of throwing.
#pragma once

#include <herald/detail/chrono.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

namespace herald {

/// The result a handler returns instead of `void` when it wants to fail without
/// throwing. On an at-least-once topic: `ack()` is success, `nack()` retries after the
/// policy's backoff, `retry_after(d)` retries after `d` instead, `reject()` dead-letters at
/// once (a poison message). On an at-most-once topic every result but `ack()` is a
/// failure: reported to the error handler and counted, never retried.
class outcome {
public:
    /// Which result it is (see the free functions below).
    enum class kind : std::uint8_t { ack, nack, retry_after, reject };

    /// Success (the same as returning from a `void` handler).
    outcome() = default;

    /// Which result this is.
    [[nodiscard]] kind what() const noexcept { return kind_; }
    /// True for success.
    [[nodiscard]] bool is_ack() const noexcept { return kind_ == kind::ack; }
    /// The delay `retry_after` asked for (zero otherwise).
    [[nodiscard]] std::chrono::nanoseconds wait() const noexcept { return wait_; }
    /// The handler's explanation (empty for `ack`).
    [[nodiscard]] const std::string& reason() const noexcept { return reason_; }

private:
    friend outcome ack() noexcept;
    friend outcome nack(std::string reason);
    friend outcome retry_after(std::chrono::nanoseconds wait, std::string reason);
    friend outcome reject(std::string reason);

    outcome(kind k, std::chrono::nanoseconds wait, std::string reason) noexcept
        : kind_(k), wait_(wait), reason_(std::move(reason)) {}

    kind kind_ = kind::ack;
    std::chrono::nanoseconds wait_{0};
    std::string reason_;
};

/// The event was handled.
[[nodiscard]] inline outcome ack() noexcept { return {}; }
/// The event was not handled; retry it after the policy's backoff.
[[nodiscard]] inline outcome nack(std::string reason = "nack") {
    return {outcome::kind::nack, std::chrono::nanoseconds(0), std::move(reason)};
}
/// The event was not handled; retry it after `wait` (still counted against the attempt
/// limit). Negative waits count as zero.
[[nodiscard]] inline outcome retry_after(std::chrono::nanoseconds wait, std::string reason = "retry_after") {
    return {outcome::kind::retry_after, wait < std::chrono::nanoseconds(0) ? std::chrono::nanoseconds(0) : wait,
            std::move(reason)};
}
/// The event can never be handled: dead-letter it now, without further attempts.
[[nodiscard]] inline outcome reject(std::string reason = "rejected") {
    return {outcome::kind::reject, std::chrono::nanoseconds(0), std::move(reason)};
}

} // namespace herald
