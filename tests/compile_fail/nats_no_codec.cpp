// expect: no codec for this event type
// Exporting a topic whose event type has no codec (no nlohmann::json conversion, no
// herald::codec specialization) names the problem. Registered only with herald::nats.
#include <herald/bridge/nats.hpp>

struct opaque {
    int secret = 0;
};
struct opaque_topic : herald::topic<opaque> {};

void export_it(herald::nats::bridge& bridge) { bridge.export_topic<opaque_topic>("shop.opaque"); }
