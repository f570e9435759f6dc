# cmake -P script behind the compile_fail tests: passes only if SOURCE fails to compile
# AND the compiler's diagnostics match the regex on the snippet's first line,
#     // expect: <CMake regex>
# so a snippet that fails for an unrelated reason (a typo, a missing include) fails the
# test instead of passing it.
#
# Inputs (-D):
#   COMPILER               the C++ compiler of the outer build
#   COMPILER_ID            its CMAKE_CXX_COMPILER_ID (GNU, Clang, ...)
#   SOURCE                 the snippet
#   FLAGS                  the outer CMAKE_CXX_FLAGS (optional)
#   OWN_INCLUDE_DIR        herald's include/ (passed with -I)
#   INCLUDE_DIRS           herald's transitive include dirs, separated by "|"; all but
#                          OWN_INCLUDE_DIR are passed with -isystem
#   IMPLICIT_INCLUDE_DIRS  the compiler's own include dirs, separated by "|"; skipped,
#                          since -isystem /usr/include breaks #include_next in libstdc++

cmake_minimum_required(VERSION 3.25)

foreach(var IN ITEMS COMPILER SOURCE)
    if(NOT DEFINED ${var})
        message(FATAL_ERROR "herald_expect_compile_error.cmake: ${var} is not set")
    endif()
endforeach()

file(STRINGS "${SOURCE}" first_line LIMIT_COUNT 1)
if(NOT first_line MATCHES "^//[ \t]*expect:[ \t]*(.+)$")
    message(FATAL_ERROR "${SOURCE}: the first line must be `// expect: <regex>`, "
                        "found `${first_line}`")
endif()
string(STRIP "${CMAKE_MATCH_1}" expected)

string(REPLACE "|" ";" include_dirs "${INCLUDE_DIRS}")
string(REPLACE "|" ";" implicit_dirs "${IMPLICIT_INCLUDE_DIRS}")
set(include_flags "")
if(OWN_INCLUDE_DIR)
    list(APPEND include_flags "-I${OWN_INCLUDE_DIR}")
endif()
foreach(dir IN LISTS include_dirs)
    if(dir STREQUAL OWN_INCLUDE_DIR OR dir IN_LIST implicit_dirs OR dir STREQUAL "")
        continue()
    endif()
    list(APPEND include_flags -isystem "${dir}")
endforeach()

separate_arguments(extra_flags UNIX_COMMAND "${FLAGS}")

# Plain ASCII quotes and no source excerpts: the regex must match what the compiler
# says, not a line of herald's source that it happens to print under a diagnostic.
set(ENV{LC_ALL} C)
if(COMPILER_ID MATCHES "Clang")
    set(no_caret -fno-caret-diagnostics)
else()
    set(no_caret -fno-diagnostics-show-caret)
endif()

set(command "${COMPILER}" ${extra_flags} -std=c++20 -fsyntax-only ${no_caret}
    ${include_flags} "${SOURCE}")
execute_process(
    COMMAND ${command}
    RESULT_VARIABLE result
    OUTPUT_VARIABLE output
    ERROR_VARIABLE output)

list(JOIN command " " command_line)
if(result EQUAL 0)
    message(FATAL_ERROR "${SOURCE} compiled, but it must not.\n"
                        "command: ${command_line}")
endif()
if(NOT output MATCHES "${expected}")
    message("${output}")
    message(FATAL_ERROR "${SOURCE} failed to compile, but no diagnostic matches "
                        "`${expected}` (compiler output above).\n"
                        "command: ${command_line}")
endif()
message(STATUS "${SOURCE}: rejected as expected (matched `${expected}`)")
