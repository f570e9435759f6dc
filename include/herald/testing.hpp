// herald::testing: deterministic execution, virtual time, recorders, expectations, fault injection.
// Independent of any test framework (doctest, GoogleTest, Catch2 all work).
#pragma once

#include <herald/herald.hpp>
#include <herald/testing/expectation.hpp>
#include <herald/testing/faults.hpp>
#include <herald/testing/harness.hpp>
#include <herald/testing/manual_executor.hpp>
#include <herald/testing/recorder.hpp>
