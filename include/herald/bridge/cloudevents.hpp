// CloudEvents 1.0 binary content mode: how an envelope's metadata travels as message
// headers (`ce-<attribute>`), independent of the transport. Used by the NATS bridge.
#pragma once

#include <herald/detail/type_name.hpp>
#include <herald/envelope.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

namespace herald::cloudevents {

/// The CloudEvents version herald writes and accepts.
inline constexpr std::string_view spec_version = "1.0";

/// Header names of the attributes herald maps (binary content mode: `ce-` and the
/// attribute's name; `datacontenttype` travels as `content-type`). `sequence` is the
/// CloudEvents sequence extension; `correlationid`, `causationid` and `attempt` are
/// herald's extension attributes; `traceparent` is W3C Trace Context's own header.
namespace header {
inline constexpr std::string_view specversion = "ce-specversion";
inline constexpr std::string_view id = "ce-id";
inline constexpr std::string_view source = "ce-source";
inline constexpr std::string_view type = "ce-type";
inline constexpr std::string_view time = "ce-time";
inline constexpr std::string_view sequence = "ce-sequence";
inline constexpr std::string_view correlationid = "ce-correlationid";
/// herald's causation id: the span id (16 hex digits) of the event that caused this one.
inline constexpr std::string_view causationid = "ce-causationid";
/// The W3C Trace Context header (trace-id = correlation id, parent-id = the event's span).
inline constexpr std::string_view traceparent = "traceparent";
inline constexpr std::string_view attempt = "ce-attempt";
inline constexpr std::string_view content_type = "content-type";
} // namespace header

/// Percent-encodes a header value as the CloudEvents bindings ask: every byte outside
/// printable ASCII (below 0x21 or above 0x7E), and `"` and `%`, becomes `%XX` (uppercase
/// hex of the UTF-8 byte); everything else is kept. Never throws except `std::bad_alloc`.
[[nodiscard]] inline std::string percent_encode(std::string_view value) {
    constexpr char digits[] = "0123456789ABCDEF";
    std::string out;
    out.reserve(value.size());
    for (const char c : value) {
        const auto byte = static_cast<unsigned char>(c);
        if (byte < 0x21 || byte > 0x7e || c == '"' || c == '%') {
            out += '%';
            out += digits[byte >> 4];
            out += digits[byte & 0xf];
        } else {
            out += c;
        }
    }
    return out;
}

namespace detail {
[[nodiscard]] constexpr int hex_value(char c) noexcept {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the "days from civil" method:
/// years counted from March, in 400-year eras).
[[nodiscard]] constexpr std::int64_t days_from_civil(std::int64_t year, int month, int day) noexcept {
    year -= month <= 2 ? 1 : 0;
    const std::int64_t era = (year >= 0 ? year : year - 399) / 400;
    const std::int64_t year_of_era = year - era * 400;
    const std::int64_t day_of_year = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1;
    const std::int64_t day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    return era * 146097 + day_of_era - 719468;
}
} // namespace detail

/// Decodes `%XX` sequences; nullopt when a `%` is not followed by two hex digits.
[[nodiscard]] inline std::optional<std::string> percent_decode(std::string_view value) {
    std::string out;
    out.reserve(value.size());
    for (std::size_t i = 0; i < value.size(); ++i) {
        if (value[i] != '%') {
            out += value[i];
            continue;
        }
        if (i + 2 >= value.size()) {
            return std::nullopt;
        }
        const int high = detail::hex_value(value[i + 1]);
        const int low = detail::hex_value(value[i + 2]);
        if (high < 0 || low < 0) {
            return std::nullopt;
        }
        out += static_cast<char>((high << 4) | low);
        i += 2;
    }
    return out;
}

/// The longest text `format_time` writes, plus its terminating zero.
inline constexpr std::size_t time_text_size = 40;

/// Writes `when` as RFC 3339 text (see `format_time`) into `out`, zero-terminated;
/// returns its length. Allocates nothing.
inline std::size_t write_time(envelope_base::time_point when, char (&out)[time_text_size]) noexcept {
    using namespace std::chrono;
    const auto since = duration_cast<nanoseconds>(when.time_since_epoch());
    const auto days = floor<std::chrono::days>(since);
    const year_month_day date{sys_days{days}};
    const hh_mm_ss<nanoseconds> clock_time{since - days};
    const int length = std::snprintf(
        out, time_text_size, "%04d-%02u-%02uT%02d:%02d:%02d.%09lldZ", static_cast<int>(date.year()),
        static_cast<unsigned>(date.month()), static_cast<unsigned>(date.day()),
        static_cast<int>(clock_time.hours().count()), static_cast<int>(clock_time.minutes().count()),
        static_cast<int>(clock_time.seconds().count()), static_cast<long long>(clock_time.subseconds().count()));
    return length > 0 ? std::min(static_cast<std::size_t>(length), time_text_size - 1) : 0;
}

/// RFC 3339 in UTC with nanoseconds, as CloudEvents' `time`: "2026-12-07T15:04:05.123456789Z".
[[nodiscard]] inline std::string format_time(envelope_base::time_point when) {
    char text[time_text_size];
    const std::size_t length = write_time(when, text);
    return std::string(text, length);
}

/// Parses an RFC 3339 timestamp ("2026-12-07T15:04:05Z", with any number of fractional
/// digits, 'Z' or a "+hh:mm"/"-hh:mm" offset, 't'/'z' accepted); nullopt when malformed.
/// Digits past nanoseconds are ignored; times a time point cannot hold (before 1678 or
/// after 2261) are nullopt too.
[[nodiscard]] inline std::optional<envelope_base::time_point> parse_time(std::string_view text) {
    std::size_t at = 0;
    const auto number = [&](std::size_t digits) -> std::optional<int> {
        if (at + digits > text.size()) {
            return std::nullopt;
        }
        int value = 0;
        for (std::size_t i = 0; i < digits; ++i) {
            const char c = text[at + i];
            if (c < '0' || c > '9') {
                return std::nullopt;
            }
            value = value * 10 + (c - '0');
        }
        at += digits;
        return value;
    };
    const auto expect = [&](char a, char b = '\0') {
        if (at < text.size() && (text[at] == a || (b != '\0' && text[at] == b))) {
            ++at;
            return true;
        }
        return false;
    };
    const auto year = number(4);
    if (!year || !expect('-')) {
        return std::nullopt;
    }
    const auto month = number(2);
    if (!month || !expect('-')) {
        return std::nullopt;
    }
    const auto day = number(2);
    if (!day || !expect('T', 't')) {
        return std::nullopt;
    }
    const auto hour = number(2);
    if (!hour || !expect(':')) {
        return std::nullopt;
    }
    const auto minute = number(2);
    if (!minute || !expect(':')) {
        return std::nullopt;
    }
    const auto second = number(2);
    if (!second || *month < 1 || *month > 12 || *day < 1 || *day > 31 || *hour > 23 || *minute > 59 || *second > 60) {
        return std::nullopt;
    }
    std::int64_t nanos = 0;
    if (expect('.')) {
        int digits = 0;
        while (at < text.size() && text[at] >= '0' && text[at] <= '9') {
            if (digits < 9) {
                nanos = nanos * 10 + (text[at] - '0');
            }
            ++digits;
            ++at;
        }
        if (digits == 0) {
            return std::nullopt;
        }
        for (; digits < 9; ++digits) {
            nanos *= 10;
        }
    }
    std::int64_t offset_minutes = 0;
    if (!expect('Z', 'z')) {
        if (at >= text.size() || (text[at] != '+' && text[at] != '-')) {
            return std::nullopt;
        }
        const bool behind = text[at] == '-';
        ++at;
        const auto offset_hours = number(2);
        if (!offset_hours || !expect(':')) {
            return std::nullopt;
        }
        const auto offset_mins = number(2);
        if (!offset_mins) {
            return std::nullopt;
        }
        offset_minutes = (*offset_hours * 60 + *offset_mins) * (behind ? -1 : 1);
    }
    if (at != text.size()) {
        return std::nullopt;
    }
    const std::int64_t days = detail::days_from_civil(*year, *month, *day);
    const std::int64_t seconds = days * 86400 + *hour * 3600 + *minute * 60 + *second - offset_minutes * 60;
    // A time point counts nanoseconds in 64 bits: years before 1678 or after 2261 do not
    // fit (the text comes from the network, so this is a refusal, not an overflow).
    constexpr std::int64_t limit = std::numeric_limits<std::int64_t>::max() / 1'000'000'000 - 1;
    if (seconds > limit || seconds < -limit) {
        return std::nullopt;
    }
    const std::chrono::nanoseconds since{seconds * 1'000'000'000 + nanos};
    return envelope_base::time_point{std::chrono::duration_cast<envelope_base::time_point::duration>(since)};
}

/// Reads an event id written by `event_id::to_string()` (32 hex digits), or a UUID
/// (32 hex digits with dashes), as herald's 128-bit id. Any other non-empty id (other
/// producers may use any string) maps to a stable 128-bit hash of its text, never nil.
/// nullopt for an empty id.
[[nodiscard]] inline std::optional<event_id> parse_id(std::string_view text) {
    if (text.empty()) {
        return std::nullopt;
    }
    event_id id;
    int digits = 0;
    bool hex = true;
    for (const char c : text) {
        if (c == '-') {
            continue;
        }
        const int value = detail::hex_value(c);
        if (value < 0 || digits == 32) {
            hex = false;
            break;
        }
        auto& half = digits < 16 ? id.high : id.low;
        half = (half << 4) | static_cast<std::uint64_t>(value);
        ++digits;
    }
    if (hex && digits == 32 && !id.is_nil()) {
        return id;
    }
    // herald's FNV-1a over the text, twice with different offsets.
    const std::uint64_t high = herald::detail::fnv1a(text);
    const std::uint64_t low = herald::detail::fnv1a(text, 0x84222325cbf29ce4ULL);
    return event_id{high, low == 0 ? 1 : low};
}

} // namespace herald::cloudevents
