// CloudEvents binary-mode helpers (<herald/bridge/cloudevents.hpp>): the header value
// encoding, RFC 3339 times and event ids, at their edges.
#include <doctest/doctest.h>

#include <herald/bridge/cloudevents.hpp>

#include <chrono>
#include <string>

namespace ce = herald::cloudevents;
using namespace std::chrono;

TEST_CASE("percent-encoding keeps printable ASCII and encodes the rest, byte by byte") {
    CHECK(ce::percent_encode("shop.orders") == "shop.orders");
    CHECK(ce::percent_encode("a b") == "a%20b");
    CHECK(ce::percent_encode("100%") == "100%25");
    CHECK(ce::percent_encode("say \"hi\"") == "say%20%22hi%22");
    CHECK(ce::percent_encode("\xc3\xbc") == "%C3%BC");
    CHECK(ce::percent_encode(std::string("nul\0x", 5)) == "nul%00x");
    CHECK(ce::percent_encode("tab\there\x7f") == "tab%09here%7F");
    CHECK(ce::percent_encode("") == "");
}

TEST_CASE("percent-decoding inverts encoding and refuses broken escapes") {
    for (const std::string text : {"", "plain", "a b", "100%", "\xc3\xbc \xe2\x98\x95", "\"%\"", "x\x01y"}) {
        CAPTURE(text);
        CHECK(ce::percent_decode(ce::percent_encode(text)) == text);
    }
    CHECK(ce::percent_decode("%41%62") == "Ab");
    CHECK(ce::percent_decode("%c3%bc") == "\xc3\xbc"); // lowercase hex too
    CHECK_FALSE(ce::percent_decode("%"));
    CHECK_FALSE(ce::percent_decode("%4"));
    CHECK_FALSE(ce::percent_decode("abc%"));
    CHECK_FALSE(ce::percent_decode("%G1"));
    CHECK_FALSE(ce::percent_decode("%1G"));
}

TEST_CASE("times are RFC 3339 in UTC with nanoseconds, and parse back exactly") {
    const sys_time<nanoseconds> when = sys_days{2026y / 12 / 7} + 15h + 4min + 5s + 123456789ns;
    const auto point = time_point_cast<system_clock::duration>(when);
    CHECK(ce::format_time(point) == "2026-12-07T15:04:05.123456789Z");
    CHECK(ce::parse_time("2026-12-07T15:04:05.123456789Z") == point);
    CHECK(ce::format_time(system_clock::time_point{}) == "1970-01-01T00:00:00.000000000Z");
    // Before 1970, leap days, the end of a year.
    for (const auto day : {sys_days{1969y / 12 / 31}, sys_days{2000y / 2 / 29}, sys_days{2024y / 12 / 31},
                           sys_days{1900y / 3 / 1}, sys_days{2261y / 12 / 31}}) {
        const auto t = time_point_cast<system_clock::duration>(day + 23h + 59min + 59s + 999999999ns);
        CAPTURE(ce::format_time(t));
        CHECK(ce::parse_time(ce::format_time(t)) == t);
    }
}

TEST_CASE("parsing accepts what RFC 3339 allows and refuses the rest") {
    const auto base = time_point_cast<system_clock::duration>(sys_days{2026y / 12 / 7} + 15h + 4min + 5s);
    CHECK(ce::parse_time("2026-12-07T15:04:05Z") == base);
    CHECK(ce::parse_time("2026-12-07t15:04:05z") == base);
    CHECK(ce::parse_time("2026-12-07T16:04:05+01:00") == base);
    CHECK(ce::parse_time("2026-12-07T10:34:05-04:30") == base);
    CHECK(ce::parse_time("2026-12-07T15:04:05.5Z") == base + 500ms);
    // Digits past nanoseconds are ignored, not rounded.
    CHECK(ce::parse_time("2026-12-07T15:04:05.1234567899Z") == base + 123456789ns);
    for (const char* bad :
         {"", "yesterday", "2026-12-07", "2026-12-07T15:04:05", "2026-12-07 15:04:05Z", "2026-13-07T15:04:05Z",
          "2026-12-32T15:04:05Z", "2026-12-07T24:04:05Z", "2026-12-07T15:60:05Z", "2026-12-07T15:04:05.Z",
          "2026-12-07T15:04:05+0100", "2026-12-07T15:04:05Zjunk", "26-12-07T15:04:05Z",
          // Not representable in 64-bit nanoseconds: refused, not overflowed.
          "9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "2262-04-12T00:00:00Z"}) {
        CAPTURE(bad);
        CHECK_FALSE(ce::parse_time(bad));
    }
}

TEST_CASE("event ids: herald's hex form and UUIDs parse to the same 128 bits; other ids hash stably") {
    const herald::event_id id{0x0123456789abcdefULL, 0xfedcba9876543210ULL};
    CHECK(ce::parse_id(id.to_string()) == id);
    CHECK(ce::parse_id("01234567-89ab-cdef-fedc-ba9876543210") == id);
    CHECK(ce::parse_id("0123456789ABCDEFFEDCBA9876543210") == id);
    const auto other = ce::parse_id("order-42");
    REQUIRE(other);
    CHECK_FALSE(other->is_nil());
    CHECK(ce::parse_id("order-42") == other);
    CHECK(ce::parse_id("order-43") != other);
    // Not 32 digits, or 32 zeros (the nil id): hashed, never nil.
    CHECK(ce::parse_id("abc") != std::nullopt);
    CHECK_FALSE(ce::parse_id("00000000000000000000000000000000")->is_nil());
    CHECK_FALSE(ce::parse_id("0123456789abcdef0123456789abcdef0")->is_nil());
    CHECK_FALSE(ce::parse_id(""));
}
