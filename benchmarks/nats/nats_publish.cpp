// Bridged publish throughput: events published on a herald topic exported through the
// NATS bridge, against the raw C client publishing the same bytes (the same CloudEvents
// headers and JSON body, prepared beforehand) with the same asynchronous JetStream
// acknowledgements, in one binary against one nats-server (started here on a free
// loopback port, in-memory stream). Both legs count an event once JetStream has
// acknowledged it.
#include "support/bench_support.hpp"
#include "support/nats_server.hpp"

#include <herald/bridge/nats.hpp>
#include <herald/herald.hpp>

#include <benchmark/benchmark.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace {

struct order {
    std::uint64_t number = 0;
    std::string item;
    double amount = 0;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(order, number, item, amount)

struct orders : herald::topic<order> {
    static constexpr std::string_view name = "bench.orders";
};

std::unique_ptr<test::nats_server> server;

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

/// herald: publish on the exported topic (encoding, headers, the outbox and its sending
/// thread included); flush waits for every acknowledgement.
void bridged(benchmark::State& state) {
    herald::bus bus({.source = "bench", .workers = 1});
    herald::nats::bridge_options options;
    options.url = server->url();
    herald::nats::bridge bridge(bus, options);
    bridge.ensure_stream({.name = "BENCH", .subjects = {"bench.>"}, .in_memory = true, .max_messages = 1'000'000});
    bridge.export_topic<orders>("bench.orders", {.capacity = 1'000'000});
    const std::uint64_t n = events();
    for (auto _ : state) {
        for (std::uint64_t i = 0; i < n; ++i) {
            (void)bus.publish<orders>(order{i, "espresso", 2.5});
        }
        if (!bridge.flush(std::chrono::seconds(60))) {
            state.SkipWithError("acknowledgements missing");
        }
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
}

BENCHMARK(raw_client)->Name("nats_publish/raw_client")->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(bridged)->Name("nats_publish/bridged")->UseRealTime()->Unit(benchmark::kMillisecond);

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
