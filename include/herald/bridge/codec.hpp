// How a bridge turns an event into message bytes and back: the `codec<Event>`
// customization point, and the ready JSON codec for types nlohmann::json can convert.
#pragma once

#include <concepts>
#include <string>
#include <string_view>
#include <type_traits>

#if __has_include(<nlohmann/json.hpp>)
#include <nlohmann/json.hpp>
#define HERALD_DETAIL_HAS_NLOHMANN_JSON 1
#else
#define HERALD_DETAIL_HAS_NLOHMANN_JSON 0
#endif

namespace herald {

namespace detail {
template <class>
inline constexpr bool no_codec = false;
} // namespace detail

/// The codec of `Event`: how bridges write it as a message body and read it back.
/// Specialize it for your event types:
///
///     template <> struct herald::codec<price_tick> {
///         static constexpr std::string_view content_type = "application/octet-stream";
///         static std::string encode(const price_tick& tick);  // may throw: a failed export
///         static price_tick decode(std::string_view body);    // may throw: a dead letter
///     };
///
/// Without a specialization, a type that nlohmann::json can convert (it has `to_json` /
/// `from_json`, or an `adl_serializer`) uses `json_codec<Event>`. Anything else is a
/// compile error naming the type.
template <class Event, class = void>
struct codec {
    static_assert(detail::no_codec<Event>,
                  "herald: no codec for this event type: give it to_json/from_json for nlohmann::json "
                  "(see <herald/bridge/codec.hpp>) or specialize herald::codec<Event>");
};

/// A type with a usable `codec`: `encode(const Event&)` returns the body as a string,
/// `decode(std::string_view)` returns the event, `content_type` names the format.
template <class Event>
concept has_codec = requires(const Event& event, std::string_view body) {
    { codec<Event>::encode(event) } -> std::convertible_to<std::string>;
    { codec<Event>::decode(body) } -> std::convertible_to<Event>;
    { codec<Event>::content_type } -> std::convertible_to<std::string_view>;
};

#if HERALD_DETAIL_HAS_NLOHMANN_JSON
/// Types nlohmann::json can build from and convert back to.
template <class Event>
concept json_convertible = std::is_default_constructible_v<Event> && requires(nlohmann::json& out, const Event& in) {
    nlohmann::to_json(out, in);
} && requires(const nlohmann::json& in, Event& out) {
    nlohmann::from_json(in, out);
};

/// The JSON codec: the body is the event as compact UTF-8 JSON ("application/json").
/// `decode` throws `nlohmann::json::exception` for text that is not JSON or does not fit
/// the type (a bridge makes such a message a dead letter).
template <class Event>
struct json_codec {
    static constexpr std::string_view content_type = "application/json";
    static std::string encode(const Event& event) { return nlohmann::json(event).dump(); }
    static Event decode(std::string_view body) { return nlohmann::json::parse(body).template get<Event>(); }
};

template <class Event>
struct codec<Event, std::enable_if_t<json_convertible<Event>>> : json_codec<Event> {};
#endif

} // namespace herald

#undef HERALD_DETAIL_HAS_NLOHMANN_JSON
