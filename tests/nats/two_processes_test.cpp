// Two buses in two processes exchange events through JetStream: this process exports
// orders and imports receipts; tests/nats/peer.cpp imports the orders and answers each
// with a receipt. Counts are exact: nothing lost, nothing twice.
#include "nats/support.hpp"
#include "support/watchdog.hpp"

#include <mutex>
#include <set>
#include <spawn.h>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

using namespace std::chrono_literals;

TEST_CASE("two processes exchange 100k events through JetStream with exact counts") {
    const test::watchdog guard("two processes", 280s);
    auto server = test::start_server();
    constexpr std::uint64_t total = test::sanitized ? 10000 : 100000;

    herald::bus shop({.source = "shop", .workers = 1});
    herald::nats::bridge bridge(shop, test::quick(*server));
    bridge.ensure_stream({.name = "TP", .subjects = {"tp.>"}});
    bridge.export_topic<shop::orders>("tp.orders");
    std::mutex mutex;
    std::set<std::uint64_t> receipts;
    std::atomic<std::uint64_t> receipt_count{0};
    auto on_receipt = shop.subscribe<shop::receipts>([&](const shop::order& o) {
        ++receipt_count;
        std::lock_guard lock(mutex);
        receipts.insert(o.number);
    });
    bridge.import_topic<shop::receipts>("tp.receipts", {.durable = "shop"});

    int out[2];
    REQUIRE(::pipe(out) == 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, out[0]);
    std::string peer = HERALD_NATS_PEER;
    std::string url = server->url();
    std::string count = std::to_string(total);
    char* argv[] = {peer.data(), url.data(), count.data(), nullptr};
    pid_t child = -1;
    REQUIRE(::posix_spawn(&child, peer.c_str(), &actions, nullptr, argv, environ) == 0);
    posix_spawn_file_actions_destroy(&actions);
    ::close(out[1]);

    for (std::uint64_t i = 1; i <= total; ++i) {
        REQUIRE(shop.publish<shop::orders>(shop::order{i, "coffee", 1.5}).failed_inline == 0);
    }
    REQUIRE(bridge.flush(120s));

    std::string report;
    char buffer[256];
    for (ssize_t n = 0; (n = ::read(out[0], buffer, sizeof buffer)) > 0;) {
        report.append(buffer, static_cast<std::size_t>(n));
    }
    ::close(out[0]);
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    const std::string expected = "handled " + count + " distinct " + count + " exported " + count + "\n";
    CHECK(report == expected);

    REQUIRE(test::eventually([&] { return receipt_count.load() >= total; }, 120s));
    std::this_thread::sleep_for(500ms);
    shop.drain();
    CHECK(receipt_count.load() == total);
    std::lock_guard lock(mutex);
    CHECK(receipts.size() == total);
    CHECK(bridge.stats().acknowledged == total);
}
