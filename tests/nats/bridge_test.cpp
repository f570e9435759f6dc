// The NATS JetStream bridge against a real nats-server: the envelope on the wire and
// back, loops, malformed messages, the outbox while the server is away, a server killed
// mid-stream, and backpressure from a slow importer.
#include "nats/support.hpp"
#include "support/watchdog.hpp"

#include <atomic>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using shop::order;
using shop::orders;

namespace {

/// Messages a plain core-NATS subscription saw on a subject (headers and body).
struct tap {
    tap(natsConnection* connection, const char* subject) {
        REQUIRE(natsConnection_SubscribeSync(&sub, connection, subject) == NATS_OK);
        // The server knows of the interest once the flush returns.
        REQUIRE(natsConnection_Flush(connection) == NATS_OK);
    }
    ~tap() { natsSubscription_Destroy(sub); }
    tap(const tap&) = delete;
    tap& operator=(const tap&) = delete;
    natsMsg* next() {
        natsMsg* message = nullptr;
        REQUIRE(natsSubscription_NextMsg(&message, sub, 10000) == NATS_OK);
        return message;
    }
    natsSubscription* sub = nullptr;
};

std::string header_of(natsMsg* message, const char* key) {
    const char* value = nullptr;
    return natsMsgHeader_Get(message, key, &value) == NATS_OK ? std::string(value) : std::string("<missing>");
}

} // namespace

TEST_CASE("every envelope attribute crosses as a CloudEvents header and comes back") {
    const test::watchdog guard("envelope round trip", 60s);
    auto server = test::start_server();
    herald::bus shop({.source = "shop/eu west \xc3\xbc \"1\" 100%", .workers = 1});
    herald::bus billing({.source = "billing", .workers = 1});
    herald::nats::bridge out(shop, test::quick(*server));
    herald::nats::bridge in(billing, test::quick(*server));
    out.ensure_stream({.name = "SHOP", .subjects = {"shop.>"}});

    test::raw_client raw(server->url());
    tap wire(raw.connection(), "shop.orders");

    std::mutex mutex;
    std::vector<herald::envelope<order>> seen;
    auto keep = billing.subscribe<orders>([&](const herald::envelope<order>& env) {
        std::lock_guard lock(mutex);
        seen.push_back(env);
    });
    out.export_topic<orders>("shop.orders");
    in.import_topic<orders>("shop.orders", {.durable = "billing"});

    (void)shop.publish<orders>(order{1, "espresso", 2.5});
    const auto cause = shop.publish<orders>(order{2, "latte", 3.75}).id;
    const auto sent = shop.publish<orders>(order{3, "mocha \xe2\x98\x95", 4.0}, {.correlation = cause});
    REQUIRE(sent.accepted());
    REQUIRE(out.flush(10s));

    // On the wire: binary content mode, percent-encoded values, the id as Nats-Msg-Id.
    natsMsg* first = wire.next();
    CHECK(header_of(first, "ce-specversion") == "1.0");
    CHECK(header_of(first, "ce-type") == "shop.orders");
    CHECK(header_of(first, "ce-source") == "shop/eu%20west%20%C3%BC%20%221%22%20100%25");
    CHECK(header_of(first, "content-type") == "application/json");
    CHECK(header_of(first, "Nats-Msg-Id") == header_of(first, "ce-id"));
    CHECK(header_of(first, "ce-correlationid") == "<missing>");
    CHECK(nlohmann::json::parse(
              std::string(natsMsg_GetData(first), static_cast<std::size_t>(natsMsg_GetDataLength(first)))) ==
          nlohmann::json{{"number", 1}, {"item", "espresso"}, {"amount", 2.5}});
    natsMsg_Destroy(first);

    REQUIRE(test::eventually([&] { return billing.stats().delivered == 3; }, 20s));
    billing.drain();
    std::lock_guard lock(mutex);
    REQUIRE(seen.size() == 3);
    const auto& env = seen[2];
    CHECK(env.event().number == 3);
    CHECK(env.event().item == "mocha \xe2\x98\x95");
    CHECK(env.id() == sent.id);
    CHECK(env.sequence() == sent.sequence);
    CHECK(env.source() == shop.source());
    CHECK(env.topic() == "shop.orders");
    CHECK(env.correlation_id() == cause);
    CHECK(env.attempt() == 1);
    CHECK(seen[0].correlation_id().is_nil());
    CHECK(seen[0].sequence() == 1);
    // Nanoseconds survive the RFC 3339 text.
    CHECK(env.time().time_since_epoch().count() != 0);
    const auto stats = in.stats();
    CHECK(stats.imported == 3);
    CHECK(test::eventually([&] { return in.stats().acked == 3; }));
}

TEST_CASE("the trace context crosses as traceparent: correlation, causation and sampled come back") {
    const test::watchdog guard("trace context", 60s);
    auto server = test::start_server();
    herald::bus shop({.source = "shop", .workers = 1});
    herald::bus billing({.source = "billing", .workers = 1});
    herald::nats::bridge out(shop, test::quick(*server));
    herald::nats::bridge in(billing, test::quick(*server));
    out.ensure_stream({.name = "SHOP", .subjects = {"shop.>"}});
    test::raw_client raw(server->url());
    tap wire(raw.connection(), "shop.orders");

    std::mutex mutex;
    std::vector<herald::envelope<order>> seen;
    auto keep = billing.subscribe<orders>([&](const herald::envelope<order>& env) {
        std::lock_guard lock(mutex);
        seen.push_back(env);
    });
    out.export_topic<orders>("shop.orders");
    in.import_topic<orders>("shop.orders", {.durable = "billing"});

    const herald::event_id trace{0x1111, 0x2222};
    const auto root = shop.publish<orders>(order{1, "espresso", 2.5});
    const auto traced =
        shop.publish<orders>(order{2, "latte", 3.0}, {.correlation = trace, .causation = 0x4d, .sampled = false});
    REQUIRE(out.flush(10s));

    natsMsg* first = wire.next();
    // A chain's first event: its own id is the trace-id, its span the parent-id.
    CHECK(header_of(first, "traceparent") ==
          herald::trace_context{root.id, herald::span_of(root.id), true}.traceparent());
    CHECK(header_of(first, "ce-causationid") == "<missing>");
    natsMsg_Destroy(first);
    natsMsg* second = wire.next();
    CHECK(header_of(second, "traceparent") ==
          "00-00000000000011110000000000002222-" +
              herald::trace_context{{}, herald::span_of(traced.id), false}.traceparent().substr(36));
    CHECK(header_of(second, "ce-causationid") == "000000000000004d");
    natsMsg_Destroy(second);

    // A message from a sender that knows only W3C Trace Context.
    raw.store("shop.orders",
              {{"ce-specversion", "1.0"},
               {"ce-id", "0123456789abcdef0123456789abcdef"},
               {"ce-source", "elsewhere"},
               {"ce-type", "shop.orders"},
               {"traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}},
              R"({"number":3,"item":"tea","amount":1})");

    REQUIRE(test::eventually([&] { return billing.stats().delivered == 3; }, 20s));
    billing.drain();
    std::lock_guard lock(mutex);
    REQUIRE(seen.size() == 3);
    CHECK_FALSE(seen[0].has_correlation_id());
    CHECK(seen[0].causation_id() == 0);
    CHECK(seen[0].sampled());
    CHECK(seen[1].correlation_id() == trace);
    CHECK(seen[1].causation_id() == 0x4d);
    CHECK_FALSE(seen[1].sampled());
    CHECK(seen[2].correlation_id() == herald::event_id{0x0af7651916cd43dd, 0x8448eb211c80319c});
    CHECK(seen[2].causation_id() == 0xb7ad6b7169203331);
    CHECK(seen[2].sampled());
}

TEST_CASE("the time of an event survives to the nanosecond") {
    auto server = test::start_server();
    herald::bus a({.source = "a", .workers = 1});
    herald::bus b({.source = "b", .workers = 1});
    herald::nats::bridge out(a, test::quick(*server));
    herald::nats::bridge in(b, test::quick(*server));
    out.ensure_stream({.name = "SHOP", .subjects = {"shop.>"}});
    std::atomic<std::int64_t> sent_time{0};
    std::atomic<std::int64_t> got_time{0};
    auto watch = a.subscribe<orders>(
        [&](const herald::envelope<order>& env) { sent_time = env.time().time_since_epoch().count(); },
        {.mode = herald::delivery::immediate});
    auto keep = b.subscribe<orders>(
        [&](const herald::envelope<order>& env) { got_time = env.time().time_since_epoch().count(); });
    out.export_topic<orders>("shop.orders");
    in.import_topic<orders>("shop.orders", {.durable = "b"});
    (void)a.publish<orders>(order{7, "tea", 1});
    REQUIRE(test::eventually([&] { return got_time.load() != 0; }, 20s));
    CHECK(got_time.load() == sent_time.load());
}

TEST_CASE("an imported event is not exported again, so two bridged processes do not loop") {
    const test::watchdog guard("no loops", 60s);
    auto server = test::start_server();
    herald::bus a({.source = "a", .workers = 1});
    herald::bus b({.source = "b", .workers = 1});
    herald::nats::bridge bridge_a(a, test::quick(*server));
    herald::nats::bridge bridge_b(b, test::quick(*server));
    bridge_a.ensure_stream({.name = "SHOP", .subjects = {"shop.>"}});
    // Both export and import the same subject: each sees the other's events once.
    for (auto* br : {&bridge_a, &bridge_b}) {
        br->export_topic<orders>("shop.orders");
    }
    bridge_a.import_topic<orders>("shop.orders", {.durable = "a"});
    bridge_b.import_topic<orders>("shop.orders", {.durable = "b"});
    std::atomic<int> at_a{0};
    std::atomic<int> at_b{0};
    auto sa = a.subscribe<orders>([&](const order&) { ++at_a; });
    auto sb = b.subscribe<orders>([&](const order&) { ++at_b; });
    for (std::uint64_t i = 0; i < 10; ++i) {
        (void)a.publish<orders>(order{i, "from a", 1});
        (void)b.publish<orders>(order{100 + i, "from b", 1});
    }
    REQUIRE(bridge_a.flush(10s));
    REQUIRE(bridge_b.flush(10s));
    // Each bus: its own 10 locally, plus the other's 10 imported, plus its own 10 echoed
    // back from the stream (it imports the subject it exports to).
    REQUIRE(test::eventually([&] { return at_a == 30 && at_b == 30; }, 20s));
    std::this_thread::sleep_for(500ms);
    test::raw_client raw(server->url());
    CHECK(raw.stored("SHOP") == 20);
    CHECK(at_a == 30);
    CHECK(at_b == 30);
    CHECK(bridge_a.stats().not_exported == 20);
    CHECK(bridge_a.stats().exported == 10);
}

TEST_CASE("a malformed message becomes a dead letter with the raw message kept, and the next one still arrives") {
    const test::watchdog guard("malformed", 60s);
    auto server = test::start_server();
    herald::bus bus({.source = "billing", .workers = 1});
    herald::nats::bridge in(bus, test::quick(*server));
    in.ensure_stream({.name = "SHOP", .subjects = {"shop.>"}});
    test::raw_client raw(server->url());

    std::mutex mutex;
    std::vector<herald::nats::dead_message> dead;
    auto on_dead = bus.subscribe<herald::nats::dead_messages>([&](const herald::nats::dead_message& m) {
        std::lock_guard lock(mutex);
        dead.push_back(m);
    });
    std::atomic<int> good{0};
    auto keep = bus.subscribe<orders>([&](const order& o) {
        if (o.number == 42) {
            ++good;
        }
    });
    const std::vector<std::pair<std::string, std::string>> ce{{"ce-specversion", "1.0"},
                                                              {"ce-id", "0123456789abcdef0123456789abcdef"},
                                                              {"ce-source", "elsewhere"},
                                                              {"ce-type", "shop.orders"},
                                                              {"content-type", "application/json"}};
    raw.store("shop.orders", ce, "{not json");                             // body does not decode
    raw.store("shop.orders", {}, R"({"number":1,"item":"x","amount":1})"); // no CloudEvents headers
    auto wrong_type = ce;
    wrong_type[3].second = "shop.refunds";
    raw.store("shop.orders", wrong_type, R"({"number":1,"item":"x","amount":1})"); // another topic's event
    auto bad_time = ce;
    bad_time.emplace_back("ce-time", "yesterday");
    raw.store("shop.orders", bad_time, R"({"number":1,"item":"x","amount":1})");
    auto fine = ce;
    fine[1].second = "a-uuid-or-any-other-id";
    raw.store("shop.orders", fine, R"({"number":42,"item":"ok","amount":1})");

    in.import_topic<orders>("shop.orders", {.durable = "billing"});
    REQUIRE(test::eventually([&] { return good == 1; }, 20s));
    bus.drain();
    std::lock_guard lock(mutex);
    REQUIRE(dead.size() == 4);
    CHECK(dead[0].data == "{not json");
    CHECK(dead[0].reason.find("decode failed") == 0);
    CHECK(dead[0].durable == "billing");
    CHECK(dead[0].stream_sequence == 1);
    CHECK(dead[1].reason.find("CloudEvents") != std::string::npos);
    CHECK(dead[2].reason.find("shop.refunds") != std::string::npos);
    CHECK(dead[3].reason.find("RFC 3339") != std::string::npos);
    bool has_source = false;
    for (const auto& [key, value] : dead[0].headers) {
        has_source = has_source || (key == "ce-source" && value == "elsewhere");
    }
    CHECK(has_source);
    CHECK(in.stats().dead_letters == 4);
    CHECK(in.dead_messages().empty()); // a subscriber took them
}

TEST_CASE("dead messages nobody subscribes to are kept by the bridge") {
    auto server = test::start_server();
    herald::bus bus({.source = "billing", .workers = 1});
    herald::nats::bridge in(bus, test::quick(*server));
    in.ensure_stream({.name = "SHOP", .subjects = {"shop.>"}});
    test::raw_client raw(server->url());
    raw.store("shop.orders", {}, "garbage");
    in.import_topic<orders>("shop.orders", {.durable = "billing"});
    REQUIRE(test::eventually([&] { return in.dead_messages().size() == 1; }, 20s));
    CHECK(in.dead_messages()[0].data == "garbage");
}

TEST_CASE("the outbox keeps exports while the server is away, applies its bound, and sends them in order") {
    const test::watchdog guard("outbox", 120s);
    auto server = test::start_server();
    herald::bus shop({.source = "shop", .workers = 1});
    auto options = test::quick(*server);
    options.flush_timeout = 300ms;
    std::atomic<int> timed_out{0};
    std::atomic<int> disconnects{0};
    options.on_event = [&](const herald::nats::bridge_event& e) {
        timed_out += e.kind == herald::nats::event_kind::flush_timed_out ? 1 : 0;
        disconnects += e.kind == herald::nats::event_kind::disconnected ? 1 : 0;
    };
    herald::nats::bridge out(shop, options);
    out.ensure_stream({.name = "SHOP", .subjects = {"shop.>"}});
    out.export_topic<orders>("shop.orders", {.capacity = 100});
    std::atomic<int> failures{0};
    shop.set_error_handler([&](const herald::delivery_error&) { ++failures; });

    server->kill();
    REQUIRE(test::eventually([&] { return disconnects > 0; }));
    int refused = 0;
    for (std::uint64_t i = 1; i <= 150; ++i) {
        const auto result = shop.publish<orders>(order{i, "queued", 1});
        REQUIRE(result.accepted());
        refused += static_cast<int>(result.failed_inline);
    }
    CHECK(refused == 50);
    CHECK(failures == 50);
    CHECK(out.stats().refused == 50);
    CHECK(out.stats().outbox == 100);

    // drain() waits for the outbox only up to flush_timeout, and says so.
    const auto before = std::chrono::steady_clock::now();
    shop.drain();
    CHECK(std::chrono::steady_clock::now() - before < 5s);
    CHECK(timed_out == 1);

    server->start();
    REQUIRE(out.flush(30s));
    CHECK(out.stats().acknowledged == 100);
    test::raw_client raw(server->url());
    CHECK(raw.stored("SHOP") == 100);
    // In order: the stream holds numbers 1..100 in sequence.
    natsSubscription* sub = nullptr;
    REQUIRE(js_SubscribeSync(&sub, raw.js(), "shop.orders", nullptr, nullptr, nullptr) == NATS_OK);
    for (std::uint64_t i = 1; i <= 100; ++i) {
        natsMsg* message = nullptr;
        REQUIRE(natsSubscription_NextMsg(&message, sub, 5000) == NATS_OK);
        const auto body = nlohmann::json::parse(
            std::string(natsMsg_GetData(message), static_cast<std::size_t>(natsMsg_GetDataLength(message))));
        CHECK(body.at("number").get<std::uint64_t>() == i);
        natsMsg_Destroy(message);
    }
    natsSubscription_Destroy(sub);
}

TEST_CASE("drop_oldest and drop_newest outboxes count what they drop") {
    auto server = test::start_server();
    herald::bus shop({.source = "shop", .workers = 1});
    auto options = test::quick(*server);
    std::atomic<int> disconnects{0};
    options.on_event = [&](const herald::nats::bridge_event& e) {
        disconnects += e.kind == herald::nats::event_kind::disconnected ? 1 : 0;
    };
    herald::nats::bridge out(shop, options);
    out.ensure_stream({.name = "SHOP", .subjects = {"shop.>"}});
    SUBCASE("drop_oldest") {
        out.export_topic<orders>("shop.orders", {.capacity = 10, .on_full = herald::overflow::drop_oldest});
    }
    SUBCASE("drop_newest") {
        out.export_topic<orders>("shop.orders", {.capacity = 10, .on_full = herald::overflow::drop_newest});
    }
    server->kill();
    REQUIRE(test::eventually([&] { return disconnects > 0; }));
    for (std::uint64_t i = 1; i <= 25; ++i) {
        CHECK(shop.publish<orders>(order{i, "x", 1}).failed_inline == 0);
    }
    CHECK(out.stats().dropped == 15);
    CHECK(out.stats().outbox == 10);
    server->start();
    REQUIRE(out.flush(30s));
    CHECK(out.stats().acknowledged == 10);
}

TEST_CASE("an overflow rule the outbox does not have is a usage_error") {
    CHECK_THROWS_AS(
        [] {
            auto server = test::start_server();
            herald::bus shop({.source = "shop", .workers = 1});
            herald::nats::bridge out(shop, test::quick(*server));
            out.export_topic<orders>("shop.orders", {.on_full = herald::overflow::conflate});
        }(),
        herald::usage_error);
}

TEST_CASE("a server killed mid-stream and restarted loses nothing acknowledged; an idempotent consumer acts once") {
    const test::watchdog guard("kill and restart", 240s);
    auto server = test::start_server();
    herald::bus shop({.source = "shop", .workers = 1});
    herald::bus billing({.source = "billing", .workers = 1});
    herald::nats::bridge out(shop, test::quick(*server));
    herald::nats::bridge in(billing, test::quick(*server));
    out.ensure_stream({.name = "SHOP", .subjects = {"shop.>"}});
    out.export_topic<orders>("shop.orders");
    in.import_topic<orders>("shop.orders", {.durable = "billing", .batch = 64, .ack_wait = 2s});

    constexpr std::uint64_t total = test::sanitized ? 4000 : 20000;
    std::mutex mutex;
    std::set<std::uint64_t> charged;
    std::atomic<std::uint64_t> effects{0};
    std::atomic<std::uint64_t> deliveries{0};
    auto charge = billing.subscribe<orders>(herald::idempotent([&](const order& o) {
        ++effects;
        std::lock_guard lock(mutex);
        charged.insert(o.number);
    }));
    auto count = billing.subscribe<orders>([&](const order&) { ++deliveries; });

    std::thread publisher([&] {
        for (std::uint64_t i = 1; i <= total; ++i) {
            REQUIRE(shop.publish<orders>(order{i, "coffee", 1}).failed_inline == 0);
            if (i % 1000 == 0) {
                std::this_thread::sleep_for(5ms);
            }
        }
    });
    REQUIRE(test::eventually([&] { return out.stats().acknowledged > total / 4; }, 60s));
    server->kill();
    std::this_thread::sleep_for(300ms);
    server->start();
    publisher.join();
    REQUIRE(out.flush(60s));
    const auto exported = out.stats();
    CHECK(exported.acknowledged == total);
    CHECK(exported.abandoned == 0);
    REQUIRE(test::eventually(
        [&] {
            std::lock_guard lock(mutex);
            return charged.size() == total;
        },
        120s));
    billing.drain();
    CHECK(effects == total);    // once per id, whatever was redelivered
    CHECK(deliveries >= total); // at least once
    test::raw_client raw(server->url());
    CHECK(raw.stored("SHOP") == total); // resends deduplicated by Nats-Msg-Id
    MESSAGE("resent " << exported.resent << ", duplicates " << exported.duplicates << ", deliveries "
                      << deliveries.load());
}

TEST_CASE("a slow importer with a bounded mailbox holds the stream back instead of growing memory") {
    const test::watchdog guard("backpressure", 180s);
    auto server = test::start_server();
    herald::bus shop({.source = "shop", .workers = 1});
    herald::bus billing({.source = "billing", .workers = 1});
    herald::nats::bridge out(shop, test::quick(*server));
    out.ensure_stream({.name = "SHOP", .subjects = {"shop.>"}});
    out.export_topic<orders>("shop.orders");
    constexpr std::uint64_t total = 2000;
    for (std::uint64_t i = 1; i <= total; ++i) {
        (void)shop.publish<orders>(order{i, "x", 1});
    }
    REQUIRE(out.flush(30s));

    std::atomic<std::uint64_t> handled{0};
    std::atomic<std::size_t> deepest{0};
    herald::subscription slow;
    slow = billing.subscribe<orders>(
        [&](const order&) {
            std::this_thread::sleep_for(200us);
            ++handled;
        },
        {.capacity = 8, .overflow = herald::overflow::block});
    herald::nats::bridge in(billing, test::quick(*server));
    in.import_topic<orders>("shop.orders", {.durable = "billing", .batch = 32});

    test::raw_client raw(server->url());
    std::int64_t most_unacked = 0;
    std::uint64_t most_held_back = 0;
    while (handled < total) {
        jsConsumerInfo* info = nullptr;
        if (js_GetConsumerInfo(&info, raw.js(), "SHOP", "billing", nullptr, nullptr) == NATS_OK) {
            most_unacked = std::max(most_unacked, info->NumAckPending);
            most_held_back = std::max(most_held_back, info->NumPending);
            jsConsumerInfo_Destroy(info);
        }
        deepest = std::max(deepest.load(), slow.stats().waiting);
        std::this_thread::sleep_for(2ms);
    }
    // One batch on loan, plus the one before while its acknowledgements travel.
    CHECK(most_unacked <= 2 * 32);
    CHECK(most_held_back > total / 2); // the rest waited in the stream
    CHECK(deepest.load() <= 8);        // the mailbox bound held
    billing.drain();
    CHECK(handled == total);
    CHECK(in.stats().redeliveries_asked == 0);
}

TEST_CASE("a message delivered more than max_deliver times becomes a dead letter of its topic") {
    const test::watchdog guard("max_deliver", 120s);
    auto server = test::start_server();
    herald::bus shop({.source = "shop", .workers = 1});
    herald::nats::bridge out(shop, test::quick(*server));
    out.ensure_stream({.name = "SHOP", .subjects = {"shop.>"}});
    out.export_topic<orders>("shop.orders");
    (void)shop.publish<orders>(order{9, "refused", 1});
    REQUIRE(out.flush(10s));

    {
        // A process that cannot take the message: its bus has stopped, so the importer
        // gives it back for redelivery, again and again.
        herald::bus stopped({.source = "billing", .workers = 1});
        stopped.shutdown();
        herald::nats::bridge failing(stopped, test::quick(*server));
        failing.import_topic<shop::retried_orders>("shop.orders",
                                                   {.durable = "billing", .max_deliver = 100, .retry_delay = 20ms});
        REQUIRE(test::eventually([&] { return failing.stats().redeliveries_asked >= 3; }, 30s));
    }
    const std::uint64_t delivered_before = [&] {
        test::raw_client raw(server->url());
        jsConsumerInfo* info = nullptr;
        REQUIRE(js_GetConsumerInfo(&info, raw.js(), "SHOP", "billing", nullptr, nullptr) == NATS_OK);
        const std::uint64_t n = info->Delivered.Consumer;
        jsConsumerInfo_Destroy(info);
        return n;
    }();
    REQUIRE(delivered_before >= 3);

    herald::bus billing({.source = "billing", .workers = 1});
    std::mutex mutex;
    std::vector<herald::dead_letter<order>> letters;
    std::atomic<int> handled{0};
    auto never = billing.subscribe<shop::retried_orders>([&](const order&) { ++handled; });
    auto dead = billing.subscribe<herald::dead_letter_topic<shop::retried_orders>>(
        [&](const herald::dead_letter<order>& letter) {
            std::lock_guard lock(mutex);
            letters.push_back(letter);
        });
    herald::nats::bridge in(billing, test::quick(*server));
    in.import_topic<shop::retried_orders>("shop.orders", {.durable = "billing", .max_deliver = 3});
    REQUIRE(test::eventually(
        [&] {
            std::lock_guard lock(mutex);
            return !letters.empty();
        },
        60s));
    billing.drain();
    std::lock_guard lock(mutex);
    REQUIRE(letters.size() == 1);
    CHECK(handled == 0);
    CHECK(letters[0].event().number == 9);
    CHECK(letters[0].attempts >= 4);
    CHECK(letters[0].reason == herald::dead_letter_reason::attempts_exhausted);
    CHECK(letters[0].subscriber == "nats:billing");
    CHECK(letters[0].error.find("max_deliver") != std::string::npos);
    CHECK(letters[0].original.source() == "shop");
    CHECK(in.stats().dead_letters == 1);
    CHECK(in.stats().imported == 0);
}

TEST_CASE("shutdown(drain) of the bus flushes the outbox before it returns") {
    auto server = test::start_server();
    herald::bus shop({.source = "shop", .workers = 1});
    herald::nats::bridge out(shop, test::quick(*server));
    out.ensure_stream({.name = "SHOP", .subjects = {"shop.>"}});
    out.export_topic<orders>("shop.orders");
    for (std::uint64_t i = 1; i <= 2000; ++i) {
        (void)shop.publish<orders>(order{i, "x", 1});
    }
    shop.shutdown(herald::drain);
    CHECK(out.stats().acknowledged == 2000);
    CHECK(out.stats().abandoned == 0);
    test::raw_client raw(server->url());
    CHECK(raw.stored("SHOP") == 2000);
}

TEST_CASE("a bridge to a server that is not there yet connects later, and exports wait for it") {
    const test::watchdog guard("late server", 60s);
    auto server = test::start_server();
    server->kill();
    herald::bus shop({.source = "shop", .workers = 1});
    auto options = test::quick(*server);
    herald::nats::bridge out(shop, options);
    CHECK_FALSE(out.connected());
    out.export_topic<orders>("shop.orders");
    (void)shop.publish<orders>(order{1, "early", 1});
    CHECK(out.stats().outbox == 1);
    server->start();
    REQUIRE(test::eventually([&] { return out.connected(); }, 20s));
    out.ensure_stream({.name = "SHOP", .subjects = {"shop.>"}});
    REQUIRE(out.flush(30s));
    test::raw_client raw(server->url());
    CHECK(raw.stored("SHOP") == 1);
}
