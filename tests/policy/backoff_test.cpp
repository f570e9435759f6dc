// Backoff schedules: exact delays, the cap, list repetition, jitter bounds.
#include <doctest/doctest.h>

#include <herald/policy/at_least_once.hpp>
#include <herald/policy/backoff.hpp>

#include <chrono>
#include <cstdint>
#include <limits>
#include <random>

using namespace std::chrono_literals;
using herald::delay;

TEST_CASE("fixed backoff waits the same before every retry") {
    using b = herald::fixed_backoff<delay::ms(250)>;
    for (std::uint32_t retry = 1; retry < 10; ++retry) {
        CHECK(b::delay_before(retry, retry * 7919U) == 250ms);
    }
}

TEST_CASE("exponential backoff doubles from the initial delay and stops at the cap") {
    using b = herald::exponential_backoff<delay::ms(100), delay::s(1)>;
    CHECK(b::delay_before(1, 0) == 100ms);
    CHECK(b::delay_before(2, 0) == 200ms);
    CHECK(b::delay_before(3, 0) == 400ms);
    CHECK(b::delay_before(4, 0) == 800ms);
    CHECK(b::delay_before(5, 0) == 1000ms);
    CHECK(b::delay_before(60, 0) == 1000ms); // no overflow on a long run of failures
    using tripled = herald::exponential_backoff<delay::us(10), delay::ms(1), 3>;
    CHECK(tripled::delay_before(3, 0) == 90us);
    static_assert(b::delay_before(2, 0) == 200ms, "schedules are usable at compile time");
}

TEST_CASE("a backoff list is used in order and its last delay repeats") {
    using b = herald::backoff_list<delay::ms(10), delay::ms(50), delay::s(1)>;
    CHECK(b::delay_before(1, 0) == 10ms);
    CHECK(b::delay_before(2, 0) == 50ms);
    CHECK(b::delay_before(3, 0) == 1s);
    CHECK(b::delay_before(4, 0) == 1s);
    CHECK(b::length == 3);
}

TEST_CASE("full jitter stays between zero and the exponential ceiling, and uses the range") {
    using b = herald::jittered_backoff<delay::ms(10), delay::ms(80)>;
    std::mt19937_64 random(42);
    for (std::uint32_t retry = 1; retry <= 6; ++retry) {
        const std::chrono::nanoseconds ceiling = std::min(10ms * (1 << (retry - 1)), std::chrono::milliseconds(80));
        std::chrono::nanoseconds low = ceiling, high{0};
        for (int i = 0; i < 2000; ++i) {
            const auto d = b::delay_before(retry, random());
            REQUIRE(d >= 0ns);
            REQUIRE(d <= ceiling);
            low = std::min(low, d);
            high = std::max(high, d);
        }
        // 2000 uniform draws: the extremes land in the outer 5% of the range.
        CHECK(low < ceiling / 20);
        CHECK(high > ceiling - ceiling / 20);
    }
}

TEST_CASE("at_least_once exposes its attempt limit and schedule") {
    using p = herald::at_least_once<herald::max_attempts<3>, herald::backoff_list<delay::ms(1), delay::ms(2)>>;
    static_assert(herald::retrying_policy<p>);
    static_assert(herald::delivery_policy<p>);
    CHECK(p::attempts == 3);
    CHECK(p::backoff(1, 0) == 1ms);
    CHECK(p::backoff(2, 0) == 2ms);
}

TEST_CASE("delays saturate instead of overflowing, even as template arguments") {
    constexpr std::int64_t most = std::numeric_limits<std::int64_t>::max();
    constexpr std::int64_t least = std::numeric_limits<std::int64_t>::min();
    // Each of these overflowed 64-bit nanoseconds (undefined behaviour at run time, an
    // "overflow in constant expression" error as a template argument).
    static_assert(delay::s(most).nanoseconds == most);
    static_assert(delay::s(10'000'000'000).nanoseconds == most); // about 317 years
    static_assert(delay::ms(most / 1000).nanoseconds == most);
    static_assert(delay::us(most).nanoseconds == most);
    static_assert(delay::s(least).nanoseconds == least);
    static_assert(delay::ms(-most).nanoseconds == least);
    // In range they stay exact, up to the last representable value.
    static_assert(delay::s(9'223'372'036).nanoseconds == 9'223'372'036'000'000'000);
    static_assert(delay::us(most / 1000).nanoseconds == most / 1000 * 1000);
    static_assert(delay::ms(-5).nanoseconds == -5'000'000);

    using forever = herald::fixed_backoff<delay::s(most)>;
    static_assert(forever::delay_before(1, 0) == std::chrono::nanoseconds::max());
    using growing = herald::exponential_backoff<delay::s(1), delay::s(most), 10>;
    CHECK(growing::delay_before(9, 0) == 100'000'000s);
    CHECK(growing::delay_before(64, 0) == std::chrono::nanoseconds::max()); // capped, no overflow
    CHECK(growing::delay_before(65535, 0) == std::chrono::nanoseconds::max());
    using wide = herald::jittered_backoff<delay::ms(1), delay::s(most)>;
    CHECK(wide::delay_before(100, ~std::uint64_t{0}) >= 0ns);
    CHECK(wide::delay_before(100, ~std::uint64_t{0}) == std::chrono::nanoseconds::max());
    CHECK(wide::delay_before(100, 12345) == 12345ns);
    using retrying = herald::at_least_once<herald::max_attempts<3>, forever>;
    CHECK(retrying::backoff(2, 0) == std::chrono::nanoseconds::max());
}
