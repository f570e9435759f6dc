# herald_target_warnings(<target>)
#
# Turns on the warnings herald's own targets (tests, examples, benchmarks, the header
# check) are held to, and makes them errors when HERALD_WERROR is ON. Never applied to
# the herald INTERFACE target: a consumer's warning flags are the consumer's business.

function(herald_target_warnings target)
    if(MSVC)
        target_compile_options(${target} PRIVATE /W4 /permissive-)
        if(HERALD_WERROR)
            target_compile_options(${target} PRIVATE /WX)
        endif()
    else()
        target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic)
        if(HERALD_WERROR)
            target_compile_options(${target} PRIVATE -Werror)
        endif()
    endif()
endfunction()
