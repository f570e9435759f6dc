// Finds moodycamel's ConcurrentQueue under the include path each packager uses.
#pragma once

// Debian installs <concurrentqueue/...>; upstream CMake, vcpkg and Conan install
// <moodycamel/...>; a vendored copy sits at the top of the include path.
#if __has_include(<concurrentqueue/blockingconcurrentqueue.h>)
#include <concurrentqueue/blockingconcurrentqueue.h>
#include <concurrentqueue/concurrentqueue.h>
#elif __has_include(<moodycamel/blockingconcurrentqueue.h>)
#include <moodycamel/blockingconcurrentqueue.h>
#include <moodycamel/concurrentqueue.h>
#elif __has_include(<blockingconcurrentqueue.h>)
#include <blockingconcurrentqueue.h>
#include <concurrentqueue.h>
#else
#error "herald needs moodycamel ConcurrentQueue (Debian: libconcurrentqueue-dev)"
#endif
