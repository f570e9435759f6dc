// A handler that blocks inside its call until the test lets it go, and the check that
// unsubscribe() waits for such a call: shared by the async and inline variants.
#pragma once

#include <doctest/doctest.h>

#include <herald/subscription.hpp>

#include <atomic>
#include <chrono>
#include <semaphore>
#include <thread>

namespace test {

/// State of a handler that blocks in its call; `handler()` makes the callable.
struct blocking_call {
    std::binary_semaphore entered{0};
    std::binary_semaphore release{0};
    std::atomic<bool> running{false};
    std::atomic<int> calls{0};

    template <class Event>
    auto handler() {
        return [this](const Event&) {
            running = true;
            ++calls;
            entered.release();
            release.acquire();
            running = false;
        };
    }
};

/// With `call` blocked inside its handler on another thread: unsubscribe() from a third
/// thread must not return while the call runs, and must find it finished when it does.
inline void check_unsubscribe_waits(herald::subscription& sub, blocking_call& call) {
    call.entered.acquire();
    std::atomic<bool> unsubscribed{false};
    std::thread unsubscriber([&] {
        sub.unsubscribe();
        unsubscribed = true;
        CHECK_FALSE(call.running.load());
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    CHECK_FALSE(unsubscribed.load()); // still waiting for the running call
    call.release.release();
    unsubscriber.join();
    CHECK(unsubscribed.load());
}

} // namespace test
