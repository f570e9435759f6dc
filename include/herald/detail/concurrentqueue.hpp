// Finds moodycamel's ConcurrentQueue (and its semaphore) under the include path each
// packager uses. Not `blockingconcurrentqueue.h`: it includes all of <chrono>, which
// costs every translation unit about a second (see detail/chrono.hpp); `thread_pool`
// pairs the queue with the semaphore itself.
#pragma once

// Debian installs <concurrentqueue/...>; upstream CMake, vcpkg and Conan install
// <moodycamel/...>; a vendored copy sits at the top of the include path.
#if __has_include(<concurrentqueue/lightweightsemaphore.h>)
#include <concurrentqueue/concurrentqueue.h>
#include <concurrentqueue/lightweightsemaphore.h>
#elif __has_include(<moodycamel/lightweightsemaphore.h>)
#include <moodycamel/concurrentqueue.h>
#include <moodycamel/lightweightsemaphore.h>
#elif __has_include(<lightweightsemaphore.h>)
#include <concurrentqueue.h>
#include <lightweightsemaphore.h>
#else
#error "herald needs moodycamel ConcurrentQueue (Debian: libconcurrentqueue-dev)"
#endif
