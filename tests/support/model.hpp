// Pieces of the model-based fuzz test (stress/model_test.cpp): a seeded generator, events
// that carry their identity and a behaviour word and whose copies can be made to throw,
// the topics they travel on, and a watchdog that explains a hang before it ends the process.
#pragma once

#include <herald/herald.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>

namespace test::model {

/// True in ThreadSanitizer builds: the model then avoids synchronising its own bookkeeping
/// (which would hide races in the bus) and skips the checks that need it.
#if defined(__SANITIZE_THREAD__)
inline constexpr bool thread_sanitized = true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
inline constexpr bool thread_sanitized = true;
#else
inline constexpr bool thread_sanitized = false;
#endif
#else
inline constexpr bool thread_sanitized = false;
#endif

/// True in AddressSanitizer builds: filters and handlers then read their tracked owner even
/// when the model knows it is gone, so that ASan reports the use after free with its stack.
#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool address_sanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
inline constexpr bool address_sanitized = true;
#else
inline constexpr bool address_sanitized = false;
#endif
#else
inline constexpr bool address_sanitized = false;
#endif

// --- randomness -------------------------------------------------------------------------

/// splitmix64's output function: well-spread bits from a counter or a mix of words.
constexpr std::uint64_t mix(std::uint64_t x) noexcept {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30U)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27U)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31U);
}

/// A number in [0, 1000) derived from `h` and a question number `k`: "does this call
/// throw?" and "does it publish?" get independent answers from one behaviour word.
constexpr std::uint32_t roll(std::uint64_t h, std::uint64_t k) noexcept {
    return static_cast<std::uint32_t>(mix(h ^ (k * 0xd1b54a32d192ed03ULL)) % 1000U);
}

/// A small deterministic generator (splitmix64).
class splitmix {
public:
    explicit splitmix(std::uint64_t seed) noexcept : state_(seed) {}

    std::uint64_t next() noexcept {
        const std::uint64_t out = mix(state_);
        state_ += 0x9e3779b97f4a7c15ULL;
        return out;
    }
    /// Uniform enough in [0, n), n > 0.
    std::uint32_t below(std::uint32_t n) noexcept { return static_cast<std::uint32_t>(next() % n); }
    /// True with probability per_mille / 1000.
    bool chance(std::uint32_t per_mille) noexcept { return below(1000) < per_mille; }

private:
    std::uint64_t state_;
};

// --- copies that throw ------------------------------------------------------------------

/// Thrown by a copy of a poisoned event once its budget is spent.
struct poisoned_copy : std::runtime_error {
    poisoned_copy() : std::runtime_error("model: poisoned copy") {}
};

/// The copy budget of the event armed on this thread, and what its copies did.
struct copy_budget {
    std::uint64_t key = 0;    ///< key of the armed event (0: none)
    int left = 0;             ///< copies that may still succeed
    int made = 0;             ///< copies that succeeded
    int threw = 0;            ///< copies that threw
    bool first_threw = false; ///< the very first copy attempt threw
};

inline thread_local copy_budget armed_copies{};

/// Charges one copy of an event with `key` to this thread's budget; throws when it is
/// spent. Copies of other events, and copies on other threads, are free.
inline void charge_copy(std::uint64_t key) {
    copy_budget& budget = armed_copies;
    if (key == 0 || key != budget.key) {
        return;
    }
    if (budget.left == 0) {
        budget.first_threw = budget.first_threw || (budget.made == 0 && budget.threw == 0);
        ++budget.threw;
        throw poisoned_copy{};
    }
    --budget.left;
    ++budget.made;
}

/// For its lifetime, the first `budget` copies of the event with `key` made on this
/// thread succeed and later ones throw. Nests: the outer arming is restored afterwards
/// (a handler publishing from inside a publish).
class arm_copies {
public:
    arm_copies(std::uint64_t key, int budget) noexcept : saved_(armed_copies) {
        armed_copies = copy_budget{key, budget, 0, 0, false};
    }
    ~arm_copies() { armed_copies = saved_; }
    arm_copies(const arm_copies&) = delete;
    arm_copies& operator=(const arm_copies&) = delete;

    /// What the armed event's copies did so far.
    [[nodiscard]] copy_budget now() const noexcept { return armed_copies; }

private:
    copy_budget saved_;
};

/// The first member of the model's events: copying it charges the armed budget, moving
/// it never throws.
struct copy_probe {
    std::uint64_t key = 0;

    copy_probe() = default;
    explicit copy_probe(std::uint64_t k) noexcept : key(k) {}
    copy_probe(const copy_probe& other) : key(other.key) { charge_copy(key); }
    copy_probe(copy_probe&& other) noexcept : key(other.key) {}
    copy_probe& operator=(const copy_probe& other) {
        charge_copy(other.key);
        key = other.key;
        return *this;
    }
    copy_probe& operator=(copy_probe&& other) noexcept {
        key = other.key;
        return *this;
    }
    ~copy_probe() = default;
};

// --- events and topics ------------------------------------------------------------------

/// Who published an event and how filters and handlers treat it.
struct stamp {
    static constexpr std::uint32_t alive = 0x600dcafeU;

    std::uint64_t uid = 0;       ///< unique in a run: publisher << 40 | counter
    std::uint64_t dice = 0;      ///< behaviour word: what filters and handlers do with it
    std::uint64_t counter = 0;   ///< per publishing thread, from 1, in publish order
    std::uint32_t publisher = 0; ///< the publishing thread's number in the model
    std::uint16_t depth = 0;     ///< publishes of that thread this one is nested in
    std::uint8_t generation = 0; ///< 0: published by a driver; n: by a handler of generation n - 1
    std::uint8_t flags = 0;      ///< `rendezvous`
    std::uint32_t magic = alive; ///< cleared by the event's destructor
};

/// Flag: the subscribers of a pair meet on this event (see model_test.cpp).
inline constexpr std::uint8_t rendezvous = 1;

/// The payload an event with this stamp carries; sometimes longer than the small-string
/// buffer, so that a use after free or a moved-from copy shows.
inline std::string payload_of(const stamp& s) {
    return std::string(6 + s.counter % 37, static_cast<char>('a' + (s.uid + s.publisher) % 26));
}

/// Whether `payload` is the one `s` was published with, and the event is not destroyed.
inline bool intact(const stamp& s, const std::string& payload) noexcept {
    if (s.magic != stamp::alive || payload.size() != 6 + s.counter % 37) {
        return false;
    }
    const char c = static_cast<char>('a' + (s.uid + s.publisher) % 26);
    for (const char p : payload) {
        if (p != c) {
            return false;
        }
    }
    return true;
}

/// An event with a noexcept move: the bus may move it for free; its copies are charged.
struct plain_event {
    copy_probe probe;
    stamp s;
    std::string payload;

    plain_event() = default;
    plain_event(const stamp& st, std::uint64_t poison_key) : probe(poison_key), s(st), payload(payload_of(st)) {}
    plain_event(const plain_event&) = default;
    plain_event(plain_event&&) noexcept = default;
    plain_event& operator=(const plain_event&) = default;
    plain_event& operator=(plain_event&&) noexcept = default;
    ~plain_event() { s.magic = 0; }
};
static_assert(std::is_nothrow_move_constructible_v<plain_event>);

/// A rule-of-three event (user copy constructor, copy assignment and destructor, no move
/// constructor): every "move" the bus makes is a copy, and may throw.
struct legacy_event {
    copy_probe probe;
    stamp s;
    std::string payload;

    legacy_event() = default;
    legacy_event(const stamp& st, std::uint64_t poison_key) : probe(poison_key), s(st), payload(payload_of(st)) {}
    legacy_event(const legacy_event& other) : probe(other.probe), s(other.s), payload(other.payload) {}
    legacy_event& operator=(const legacy_event& other) {
        probe = other.probe;
        s = other.s;
        payload = other.payload;
        return *this;
    }
    ~legacy_event() { s.magic = 0; }
};
static_assert(std::is_move_constructible_v<legacy_event> && !std::is_nothrow_move_constructible_v<legacy_event>);

struct plain_topic : herald::topic<plain_event> {
    static constexpr std::string_view name = "model.plain";
};
struct legacy_topic : herald::topic<legacy_event> {
    static constexpr std::string_view name = "model.legacy";
};
using retry_policy = herald::at_least_once<herald::max_attempts<3>, herald::fixed_backoff<herald::delay::ms(1)>>;
inline constexpr std::uint32_t retry_attempts = 3;
struct retry_topic : herald::topic<plain_event, retry_policy> {
    static constexpr std::string_view name = "model.retry";
};
using dead_topic = herald::dead_letter_topic<retry_topic>;
using dead_event = herald::dead_letter<plain_event>;

// --- hangs ------------------------------------------------------------------------------

/// Watches one armed section at a time (one seed): if it is still armed `limit` after
/// `arm`, runs the section's explanation on the watchdog thread, then ends the process
/// with exit code 1 (a hang cannot be unwound, and CTest's timeout would say nothing).
class seed_watchdog {
public:
    explicit seed_watchdog(std::chrono::milliseconds limit) : limit_(limit), thread_([this] { watch(); }) {}
    ~seed_watchdog() {
        {
            std::lock_guard lock(mutex_);
            quit_ = true;
        }
        wake_.notify_all();
        thread_.join();
    }
    seed_watchdog(const seed_watchdog&) = delete;
    seed_watchdog& operator=(const seed_watchdog&) = delete;

    /// Starts the clock for a section; `explain` prints what it was doing.
    void arm(std::function<void()> explain) {
        std::lock_guard lock(mutex_);
        explain_ = std::move(explain);
        deadline_ = std::chrono::steady_clock::now() + limit_;
        armed_ = true;
    }

    /// The section finished in time.
    void disarm() {
        std::lock_guard lock(mutex_);
        armed_ = false;
        explain_ = nullptr;
    }

private:
    void watch() {
        std::unique_lock lock(mutex_);
        while (!quit_) {
            wake_.wait_for(lock, std::chrono::milliseconds(100));
            if (armed_ && std::chrono::steady_clock::now() > deadline_) {
                std::fprintf(stderr, "\nwatchdog: no progress for %lld ms\n", static_cast<long long>(limit_.count()));
                if (explain_) {
                    explain_();
                }
                std::fflush(stdout);
                std::fflush(stderr);
                std::_Exit(1);
            }
        }
    }

    const std::chrono::milliseconds limit_;
    std::mutex mutex_;
    std::condition_variable wake_;
    std::function<void()> explain_;
    std::chrono::steady_clock::time_point deadline_{};
    bool armed_ = false;
    bool quit_ = false;
    std::thread thread_;
};

} // namespace test::model
