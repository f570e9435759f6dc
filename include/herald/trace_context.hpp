// W3C Trace Context for herald's events: the `traceparent` text that carries an event's
// chain (trace-id = correlation id, parent-id = span id) across process boundaries.
#pragma once

#include <herald/envelope.hpp>
#include <herald/publish_result.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace herald {

/// A W3C Trace Context (`traceparent`, version 00): which trace an operation belongs to
/// and which span caused it. herald maps it onto envelopes: trace-id = the correlation id
/// (`envelope_base::trace_id()`), parent-id = the causing event's span id.
struct trace_context {
    event_id trace_id{};         ///< 128-bit trace-id (nil: invalid)
    std::uint64_t parent_id = 0; ///< 64-bit parent-id, the span that caused it (0: invalid)
    bool sampled = true;         ///< the `sampled` flag

    /// The context to send along with `event` to whoever handles it elsewhere: its trace
    /// and, as parent, the event's own span.
    [[nodiscard]] static trace_context of(const envelope_base& event) noexcept {
        return {event.trace_id(), event.span_id(), event.sampled()};
    }

    /// Parses a `traceparent` header value ("00-<32 hex>-<16 hex>-<2 hex>", lowercase).
    /// Returns nothing for text that is not a valid version-00 value (wrong length or
    /// separators, uppercase or non-hex digits, an all-zero trace-id or parent-id, version
    /// ff); a later version is read by its version-00 prefix, as the standard says.
    [[nodiscard]] static std::optional<trace_context> parse(std::string_view text) noexcept {
        constexpr std::size_t length = 55;
        if (text.size() < length || (text.size() > length && text[length] != '-')) {
            return std::nullopt;
        }
        std::uint64_t version = 0;
        std::uint64_t flags = 0;
        trace_context out;
        if (!hex(text.substr(0, 2), version) || version == 0xff || (version == 0 && text.size() != length) ||
            text[2] != '-' || !hex(text.substr(3, 16), out.trace_id.high) ||
            !hex(text.substr(19, 16), out.trace_id.low) || text[35] != '-' ||
            !hex(text.substr(36, 16), out.parent_id) || text[52] != '-' || !hex(text.substr(53, 2), flags) ||
            out.trace_id.is_nil() || out.parent_id == 0) {
            return std::nullopt;
        }
        out.sampled = (flags & 1U) != 0;
        return out;
    }

    /// The `traceparent` value: "00-" trace-id "-" parent-id "-" flags, lowercase hex.
    [[nodiscard]] std::string traceparent() const {
        std::string out = "00-";
        out += trace_id.to_string();
        out += '-';
        detail::append_hex16(out, parent_id);
        out += sampled ? "-01" : "-00";
        return out;
    }

    /// Publish options that continue this trace: the event gets the trace-id as its
    /// correlation id and the parent-id as its causation id.
    [[nodiscard]] publish_options options() const noexcept {
        publish_options o;
        o.correlation = trace_id;
        o.causation = parent_id;
        o.sampled = sampled;
        return o;
    }

private:
    static bool hex(std::string_view digits, std::uint64_t& out) noexcept {
        out = 0;
        for (const char c : digits) {
            std::uint64_t v = 0;
            if (c >= '0' && c <= '9') {
                v = static_cast<std::uint64_t>(c - '0');
            } else if (c >= 'a' && c <= 'f') {
                v = static_cast<std::uint64_t>(c - 'a' + 10);
            } else {
                return false;
            }
            out = (out << 4U) | v;
        }
        return true;
    }
};

} // namespace herald
