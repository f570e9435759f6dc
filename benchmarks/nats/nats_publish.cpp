// Bridged publish throughput: events published on a herald topic exported through the
// NATS bridge, against the raw C client publishing the same bytes (the same CloudEvents
// headers and JSON body, prepared beforehand) with the same asynchronous JetStream
// acknowledgements, in one binary against one nats-server (started here on a free
// loopback port, in-memory stream). Both legs count an event once JetStream has
// acknowledged it. `bridged` sends prepared bytes too (its codec copies them);
// `bridged_json` encodes each event with nlohmann::json, what the default codec costs.
#include "nats/shop.hpp"
#include "support/bench_support.hpp"
#include "support/nats_server.hpp"

#include <herald/bridge/nats.hpp>
#include <herald/herald.hpp>

#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace {

using shop::order;

struct orders : herald::topic<order> {
    static constexpr std::string_view name = "bench.orders";
};

/// An order already encoded: its codec copies the bytes, so the bridge sends exactly
/// what the raw client sends and the comparison is the bridge's own cost.
struct encoded_order {
    std::string json;
};
struct encoded_orders : herald::topic<encoded_order> {
    static constexpr std::string_view name = "bench.orders";
};

std::unique_ptr<test::nats_server> server;

} // namespace

template <>
struct herald::codec<encoded_order> {
    static constexpr std::string_view content_type = "application/json";
    static std::string encode(const encoded_order& e) { return e.json; }
    static encoded_order decode(std::string_view body) { return {std::string(body)}; }
};

namespace {

/// Events per timed iteration.
std::uint64_t events() { return herald_bench::scaled<std::uint64_t>(50'000, 5'000); }

/// One message as the bridge writes it: headers and body.
struct prepared {
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;
    std::string id;
};

/// The bytes of `n` orders as the bridge would send them, made before the clock runs.
std::vector<prepared> prepare(std::uint64_t n, std::uint64_t salt) {
    namespace ce = herald::cloudevents;
    std::vector<prepared> out;
    out.reserve(n);
    const auto now = std::chrono::system_clock::now();
    for (std::uint64_t i = 0; i < n; ++i) {
        prepared p;
        p.id = herald::event_id{salt, i + 1}.to_string();
        p.body = herald::codec<order>::encode(order{i, "espresso", 2.5});
        p.headers = {{"ce-specversion", "1.0"},
                     {"ce-id", p.id},
                     {"ce-source", "bench"},
                     {"ce-type", "bench.orders"},
                     {"ce-time", ce::format_time(now)},
                     {"ce-sequence", std::to_string(i + 1)},
                     {"ce-attempt", "1"},
                     {"content-type", "application/json"}};
        out.push_back(std::move(p));
    }
    return out;
}

void ensure_stream(natsConnection* connection) {
    jsCtx* js = nullptr;
    natsConnection_JetStream(&js, connection, nullptr);
    const char* subjects[] = {"bench.>"};
    jsStreamConfig config;
    jsStreamConfig_Init(&config);
    config.Name = "BENCH";
    config.Subjects = subjects;
    config.SubjectsLen = 1;
    config.Storage = js_MemoryStorage;
    config.MaxMsgs = 1'000'000;
    jsStreamInfo* info = nullptr;
    jsErrCode code{};
    if (js_AddStream(&info, js, &config, nullptr, &code) == NATS_OK) {
        jsStreamInfo_Destroy(info);
    }
    jsCtx_Destroy(js);
}

/// The raw C client: create each message, set its headers, publish asynchronously with
/// its id; wait for every acknowledgement.
void raw_client(benchmark::State& state) {
    natsConnection* connection = nullptr;
    if (natsConnection_ConnectTo(&connection, server->url().c_str()) != NATS_OK) {
        state.SkipWithError("cannot connect");
        return;
    }
    ensure_stream(connection);
    jsOptions options;
    jsOptions_Init(&options);
    options.PublishAsync.MaxPending = 1024 + 16; // the bridge's default max_in_flight
    jsCtx* js = nullptr;
    natsConnection_JetStream(&js, connection, &options);
    const std::uint64_t n = events();
    std::uint64_t salt = 1;
    for (auto _ : state) {
        state.PauseTiming();
        const auto batch = prepare(n, salt++);
        state.ResumeTiming();
        for (const auto& p : batch) {
            natsMsg* message = nullptr;
            natsMsg_Create(&message, "bench.orders", nullptr, p.body.data(), static_cast<int>(p.body.size()));
            for (const auto& [key, value] : p.headers) {
                natsMsgHeader_Set(message, key.c_str(), value.c_str());
            }
            jsPubOptions publish;
            jsPubOptions_Init(&publish);
            publish.MsgId = p.id.c_str();
            publish.MaxWait = 5000;
            if (js_PublishMsgAsync(js, &message, &publish) != NATS_OK) {
                state.SkipWithError("publish failed");
            }
            natsMsg_Destroy(message);
        }
        jsPubOptions wait;
        jsPubOptions_Init(&wait);
        wait.MaxWait = 60000;
        if (js_PublishAsyncComplete(js, &wait) != NATS_OK) {
            state.SkipWithError("acknowledgements missing");
        }
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
    jsCtx_Destroy(js);
    natsConnection_Destroy(connection);
}

/// herald: publish on the exported topic `T` (the headers, the outbox and its sending
/// thread included, and the codec: copying prepared bytes, or nlohmann JSON); flush
/// waits for every acknowledgement.
template <class T, class Make>
void bridged(benchmark::State& state, Make make) {
    herald::bus bus({.source = "bench", .workers = 1});
    herald::nats::bridge_options options;
    options.url = server->url();
    herald::nats::bridge bridge(bus, options);
    bridge.ensure_stream({.name = "BENCH", .subjects = {"bench.>"}, .in_memory = true, .max_messages = 1'000'000});
    bridge.export_topic<T>("bench.orders", {.capacity = 1'000'000});
    const std::uint64_t n = events();
    for (auto _ : state) {
        for (std::uint64_t i = 0; i < n; ++i) {
            (void)bus.publish<T>(make(i));
        }
        if (!bridge.flush(std::chrono::seconds(60))) {
            state.SkipWithError("acknowledgements missing");
        }
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
}

void bridged_bytes(benchmark::State& state) {
    // The body the raw client sends, prepared once; each event copies it (the raw
    // client's batch is prepared outside the clock, so this leg pays one copy more).
    const std::string body = herald::codec<order>::encode(order{0, "espresso", 2.5});
    bridged<encoded_orders>(state, [&](std::uint64_t) { return encoded_order{body}; });
}

void bridged_json(benchmark::State& state) {
    bridged<orders>(state, [](std::uint64_t i) { return order{i, "espresso", 2.5}; });
}

BENCHMARK(raw_client)->Name("nats_publish/raw_client")->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(bridged_bytes)->Name("nats_publish/bridged")->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(bridged_json)->Name("nats_publish/bridged_json")->UseRealTime()->Unit(benchmark::kMillisecond);

} // namespace

int main(int argc, char** argv) {
    if (!test::nats_server::binary()) {
        std::fprintf(stderr, "bench_nats_publish: nats-server is not installed; nothing to measure\n");
        return 0;
    }
    server = std::make_unique<test::nats_server>();
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
        return 1;
    }
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    server.reset();
    return 0;
}
