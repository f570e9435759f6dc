# Locates moodycamel ConcurrentQueue and defines the IMPORTED target
# herald::concurrentqueue, the one name herald links to. Used both by herald's own
# build and by the installed heraldConfig.cmake, so a consumer resolves the queue the
# same way herald did.
#
# Packagers disagree on the layout: upstream CMake, vcpkg and Conan ship a config
# package with the target concurrentqueue::concurrentqueue and headers under
# <moodycamel/...>; Debian 1.0.3 ships no config and puts the headers under
# <concurrentqueue/...>. The C++ side (herald/detail/concurrentqueue.hpp) tries each
# spelling with __has_include, so all CMake has to provide is the include directory.
#
# Sets herald_concurrentqueue_FOUND. Set HERALD_CONCURRENTQUEUE_INCLUDE_DIR to point
# at a copy the search does not find (the directory that contains concurrentqueue/ or
# moodycamel/).

if(TARGET herald::concurrentqueue)
    set(herald_concurrentqueue_FOUND TRUE)
    return()
endif()

set(herald_concurrentqueue_FOUND FALSE)

if(NOT HERALD_CONCURRENTQUEUE_INCLUDE_DIR)
    find_package(concurrentqueue CONFIG QUIET)
endif()

if(TARGET concurrentqueue::concurrentqueue)
    add_library(herald::concurrentqueue INTERFACE IMPORTED)
    target_link_libraries(herald::concurrentqueue INTERFACE concurrentqueue::concurrentqueue)
    set(herald_concurrentqueue_FOUND TRUE)
else()
    find_path(HERALD_CONCURRENTQUEUE_INCLUDE_DIR
        NAMES concurrentqueue/blockingconcurrentqueue.h moodycamel/blockingconcurrentqueue.h
        DOC "Directory containing concurrentqueue/ or moodycamel/ (moodycamel ConcurrentQueue)")
    mark_as_advanced(HERALD_CONCURRENTQUEUE_INCLUDE_DIR)
    if(HERALD_CONCURRENTQUEUE_INCLUDE_DIR)
        add_library(herald::concurrentqueue INTERFACE IMPORTED)
        set_target_properties(herald::concurrentqueue PROPERTIES
            INTERFACE_INCLUDE_DIRECTORIES "${HERALD_CONCURRENTQUEUE_INCLUDE_DIR}"
            INTERFACE_SYSTEM_INCLUDE_DIRECTORIES "${HERALD_CONCURRENTQUEUE_INCLUDE_DIR}")
        set(herald_concurrentqueue_FOUND TRUE)
    endif()
endif()
