// The billing service of the two-process shop (run both with examples/two_processes/run.sh):
// orders arrive from JetStream through the NATS bridge as local events; each is charged
// once, even when JetStream delivers it again (herald::idempotent, keyed on the event id
// the order kept across the wire), and a payment goes back on an exported topic.
//   example_two_processes_billing [nats-url] [orders to handle]
#include "shop_events.hpp"

#include <herald/bridge/nats.hpp>

#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

namespace {

using namespace std::chrono_literals;

constexpr auto orders_deadline = 90s;

void print_nats_event(const herald::nats::bridge_event& e) {
    std::printf("billing-service: nats %s %s%s%s\n", std::string(to_string(e.kind)).c_str(), e.subject.c_str(),
                e.subject.empty() ? "" : ": ", e.message.c_str());
}

std::string dollars(std::int64_t cents) {
    return "$" + std::to_string(cents / 100) + "." + (cents % 100 < 10 ? "0" : "") + std::to_string(cents % 100);
}

int run(const std::string& url, std::uint64_t count) {
    herald::bus bus{{.source = "billing-service", .workers = 2}};

    std::mutex mutex;
    std::condition_variable changed;
    std::uint64_t charged = 0;
    std::int64_t charged_cents = 0;

    // A redelivered order has the id of the first delivery: the wrapper skips it.
    auto charge_once = herald::idempotent([&](const herald::envelope<shop::order_placed>& e) {
        const shop::order_placed& order = e.event();
        // The payment names the order that caused it (CloudEvents `correlationid`).
        (void)bus.publish<shop::payments>({order.order_id, order.amount_cents}, {.correlation = e.id()});
        std::lock_guard lock(mutex);
        ++charged;
        charged_cents += order.amount_cents;
        changed.notify_all();
    });
    // Subscribe before importing, so that no order arrives on a topic nobody hears.
    auto billing = bus.subscribe<shop::orders>(charge_once, {.name = "billing"});

    herald::nats::bridge bridge(bus, {.url = url, .name = "billing-service", .on_event = print_nats_event});
    const auto connect_deadline = std::chrono::steady_clock::now() + 10s;
    while (!bridge.connected() && std::chrono::steady_clock::now() < connect_deadline) {
        std::this_thread::sleep_for(20ms);
    }
    if (!bridge.connected()) {
        std::fprintf(stderr, "billing-service: no NATS server at %s\n", url.c_str());
        return 2;
    }
    bridge.ensure_stream({.name = "SHOP", .subjects = {"shop.>"}});
    bridge.export_topic<shop::payments>("shop.payments");
    // The durable consumer "billing" remembers what was acknowledged: a restarted billing
    // service continues with the first order it had not finished.
    bridge.import_topic<shop::orders>("shop.orders", {.durable = "billing"});

    bool done = false;
    {
        std::unique_lock lock(mutex);
        done = changed.wait_for(lock, orders_deadline, [&] { return charged >= count; });
    }
    // Waits for the last payments to be handled and acknowledged by JetStream.
    bus.drain();

    const auto s = bridge.stats();
    std::lock_guard lock(mutex);
    std::printf("billing-service: charged %llu orders (%s), skipped %llu redelivered\n",
                static_cast<unsigned long long>(charged), dollars(charged_cents).c_str(),
                static_cast<unsigned long long>(charge_once.skipped()));
    std::printf("billing-service: bridge imported %llu (dead letters %llu), exported %llu (acknowledged %llu, "
                "resent %llu, refused %llu)\n",
                static_cast<unsigned long long>(s.imported), static_cast<unsigned long long>(s.dead_letters),
                static_cast<unsigned long long>(s.exported), static_cast<unsigned long long>(s.acknowledged),
                static_cast<unsigned long long>(s.resent), static_cast<unsigned long long>(s.refused));
    if (!done) {
        std::fprintf(stderr, "billing-service: only %llu of %llu orders arrived within %lld s\n",
                     static_cast<unsigned long long>(charged), static_cast<unsigned long long>(count),
                     static_cast<long long>(orders_deadline.count()));
        return 1;
    }
    return 0;
}

} // namespace

int main(int argc, char** argv) { return shop::service_main(argc, argv, "billing-service", run); }
