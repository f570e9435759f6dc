# cmake -P script behind the package tests. Builds tests/package/consumer with the outer
# build's generator, compiler and flags, the way a user's project would consume herald.
#
# MODE=subdirectory  consumer does add_subdirectory(HERALD_SOURCE_DIR); built in WORK_DIR
# MODE=install       cmake --install HERALD_BINARY_DIR into a fresh PREFIX, check files
# MODE=package       consumer does find_package(herald) with CMAKE_PREFIX_PATH=PREFIX
#
# The consumer is configured from scratch every run (WORK_DIR is wiped), so a stale
# cache can never hide a broken install.

cmake_minimum_required(VERSION 3.25)

function(run)
    list(JOIN ARGN " " command_line)
    message(STATUS "\$ ${command_line}")
    execute_process(COMMAND ${ARGN} RESULT_VARIABLE result)
    if(NOT result EQUAL 0)
        message(FATAL_ERROR "failed (${result}): ${command_line}")
    endif()
endfunction()

if(NOT CONFIG)
    set(CONFIG Release)
endif()

if(MODE STREQUAL "install")
    file(REMOVE_RECURSE "${PREFIX}")
    run("${CMAKE_COMMAND}" --install "${HERALD_BINARY_DIR}" --config "${CONFIG}"
        --prefix "${PREFIX}")
    file(GLOB_RECURSE config_files "${PREFIX}/*/heraldConfig.cmake")
    if(NOT config_files)
        message(FATAL_ERROR "no heraldConfig.cmake under ${PREFIX}")
    endif()
    list(GET config_files 0 config_file)
    get_filename_component(config_dir "${config_file}" DIRECTORY)
    foreach(file IN ITEMS heraldConfigVersion.cmake heraldTargets.cmake
                          herald_find_concurrentqueue.cmake)
        if(NOT EXISTS "${config_dir}/${file}")
            message(FATAL_ERROR "${file} is not installed next to ${config_file}")
        endif()
    endforeach()
    if(NOT EXISTS "${PREFIX}/include/herald/herald.hpp")
        message(FATAL_ERROR "${PREFIX}/include/herald/herald.hpp is not installed")
    endif()
    return()
endif()

if(MODE STREQUAL "subdirectory")
    set(consume -DHERALD_CONSUME=subdirectory "-DHERALD_SOURCE_DIR=${HERALD_SOURCE_DIR}")
elseif(MODE STREQUAL "package")
    set(consume -DHERALD_CONSUME=package "-DCMAKE_PREFIX_PATH=${PREFIX}"
        # Only the freshly installed copy may satisfy find_package(herald).
        -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
else()
    message(FATAL_ERROR "MODE must be subdirectory, install or package, not `${MODE}`")
endif()

set(generator -G "${GENERATOR}")
if(GENERATOR_PLATFORM)
    list(APPEND generator -A "${GENERATOR_PLATFORM}")
endif()
if(GENERATOR_TOOLSET)
    list(APPEND generator -T "${GENERATOR_TOOLSET}")
endif()
if(MAKE_PROGRAM)
    list(APPEND generator "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}")
endif()

file(REMOVE_RECURSE "${WORK_DIR}")
run("${CMAKE_COMMAND}" -S "${CONSUMER_SOURCE_DIR}" -B "${WORK_DIR}" ${generator}
    "-DCMAKE_BUILD_TYPE=${CONFIG}"
    "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}"
    "-DCMAKE_CXX_FLAGS=${CXX_FLAGS}"
    "-DCMAKE_EXE_LINKER_FLAGS=${EXE_LINKER_FLAGS}"
    "-DHERALD_EXPECTED_VERSION=${HERALD_VERSION}"
    ${consume})
run("${CMAKE_COMMAND}" --build "${WORK_DIR}" --config "${CONFIG}")

file(GLOB_RECURSE consumers "${WORK_DIR}/herald_consumer" "${WORK_DIR}/herald_consumer.exe")
if(NOT consumers)
    message(FATAL_ERROR "the consumer was built, but no herald_consumer binary is in ${WORK_DIR}")
endif()
list(GET consumers 0 consumer)
run("${consumer}")
