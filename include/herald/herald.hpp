// herald: a header-only C++20 in-process event bus. Include this one header.
#pragma once

#include <herald/bus.hpp>
#include <herald/clock.hpp>
#include <herald/config.hpp>
#include <herald/dead_letter.hpp>
#include <herald/envelope.hpp>
#include <herald/errors.hpp>
#include <herald/executor.hpp>
#include <herald/flow_control.hpp>
#include <herald/fwd.hpp>
#include <herald/idempotent.hpp>
#include <herald/loop_executor.hpp>
#include <herald/outcome.hpp>
#include <herald/policy/at_least_once.hpp>
#include <herald/policy/backoff.hpp>
#include <herald/policy/delivery_policy.hpp>
#include <herald/policy/fire_and_forget.hpp>
#include <herald/policy/priority.hpp>
#include <herald/policy/with_dead_letters.hpp>
#include <herald/publish_result.hpp>
#include <herald/subscribe_options.hpp>
#include <herald/subscription.hpp>
#include <herald/thread_pool.hpp>
#include <herald/topic.hpp>
#include <herald/version.hpp>
