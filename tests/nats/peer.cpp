// The second process of tests/nats/two_processes_test.cpp: a billing service that
// imports orders from JetStream and exports one receipt per order.
//   nats_peer <url> <orders expected>
// Prints "handled <n> distinct <d> exported <e>" once it has handled the expected count
// and the receipts are acknowledged (then waits a second more for any duplicate).
#include "nats/shop.hpp"

#include <herald/bridge/nats.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <set>
#include <string>
#include <thread>

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: nats_peer <url> <count>\n");
        return 2;
    }
    const std::string url = argv[1];
    const std::uint64_t expected = std::stoull(argv[2]);
    herald::bus billing({.source = "billing", .workers = 1});
    herald::nats::bridge_options options;
    options.url = url;
    options.reconnect_wait = std::chrono::milliseconds(50);
    options.flush_timeout = std::chrono::seconds(60);
    herald::nats::bridge bridge(billing, options);
    bridge.export_topic<shop::receipts>("tp.receipts");

    std::mutex mutex;
    std::set<std::uint64_t> distinct;
    std::atomic<std::uint64_t> handled{0};
    auto handler = billing.subscribe<shop::orders>([&](const shop::order& o) {
        {
            std::lock_guard lock(mutex);
            distinct.insert(o.number);
        }
        (void)billing.publish<shop::receipts>(o);
        ++handled;
    });
    bridge.import_topic<shop::orders>("tp.orders", {.durable = "billing"});
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(4);
    while (handled.load() < expected && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    billing.drain();
    std::this_thread::sleep_for(std::chrono::seconds(1));
    billing.drain();
    std::lock_guard lock(mutex);
    std::printf("handled %llu distinct %zu exported %llu\n", static_cast<unsigned long long>(handled.load()),
                distinct.size(), static_cast<unsigned long long>(bridge.stats().acknowledged));
    std::fflush(stdout);
    return 0;
}
