// Calls a handler with an envelope, or with the bare event if that is what it takes.
#pragma once

#include <herald/envelope.hpp>

#include <type_traits>

namespace herald::detail {

/// `handler(env)` if the handler takes the envelope, else `handler(env.event())`; for
/// wrappers (idempotent, faulty) that accept both kinds of handler.
template <class Handler, class Event>
decltype(auto) call_handler(Handler& handler, const envelope<Event>& env) {
    if constexpr (std::is_invocable_v<Handler&, const envelope<Event>&>) {
        return handler(env);
    } else {
        return handler(env.event());
    }
}

} // namespace herald::detail
