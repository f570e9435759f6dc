// The order service of the two-process shop (run both with examples/two_processes/run.sh):
// it places orders on its own bus, the NATS bridge stores them in a JetStream stream for
// the billing service, and the payments billing sends back arrive as local events.
//   example_two_processes_orders [nats-url] [orders]
#include "shop_events.hpp"

#include <herald/bridge/nats.hpp>

#include <array>
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
#include <vector>

namespace {

using namespace std::chrono_literals;

constexpr auto payments_deadline = 60s;

/// What the payments that came back say, filled in by the bus's workers.
struct ledger {
    std::mutex mutex;
    std::condition_variable changed;
    std::vector<bool> paid; // by order id
    std::uint64_t payments = 0;
    std::uint64_t duplicates = 0;
    std::uint64_t unknown = 0;
    std::int64_t cents = 0;
};

void print_nats_event(const herald::nats::bridge_event& e) {
    std::printf("order-service: nats %s %s%s%s\n", std::string(to_string(e.kind)).c_str(), e.subject.c_str(),
                e.subject.empty() ? "" : ": ", e.message.c_str());
}

std::string dollars(std::int64_t cents) {
    return "$" + std::to_string(cents / 100) + "." + (cents % 100 < 10 ? "0" : "") + std::to_string(cents % 100);
}

int run(const std::string& url, std::uint64_t count) {
    herald::bus bus{{.source = "order-service", .workers = 2}};

    // Subscribe before importing, so that no payment arrives on a topic nobody hears.
    ledger book;
    book.paid.assign(count + 1, false);
    auto on_payment = bus.subscribe<shop::payments>(
        [&book, count](const shop::payment_taken& p) {
            std::lock_guard lock(book.mutex);
            if (p.order_id == 0 || p.order_id > count) {
                ++book.unknown; // not one of ours (another run against the same stream)
                return;
            }
            if (book.paid[p.order_id]) {
                ++book.duplicates; // JetStream delivers at least once: the order id tells
                return;
            }
            book.paid[p.order_id] = true;
            ++book.payments;
            book.cents += p.amount_cents;
            book.changed.notify_all();
        },
        {.name = "order-service.payments"});

    // Declared after the bus, so destroyed before it: the bridge flushes its outbox and
    // stops importing while the bus still runs.
    herald::nats::bridge bridge(bus, {.url = url, .name = "order-service", .on_event = print_nats_event});
    const auto connect_deadline = std::chrono::steady_clock::now() + 10s;
    while (!bridge.connected() && std::chrono::steady_clock::now() < connect_deadline) {
        std::this_thread::sleep_for(20ms);
    }
    if (!bridge.connected()) {
        std::fprintf(stderr, "order-service: no NATS server at %s\n", url.c_str());
        return 2;
    }
    // Either service may start first: both declare the stream (the second call finds it).
    bridge.ensure_stream({.name = "SHOP", .subjects = {"shop.>"}});
    // A full outbox (JetStream slower than we place orders) makes publish wait for room.
    bridge.export_topic<shop::orders>("shop.orders",
                                      {.capacity = 10000, .on_full = herald::overflow::block, .block_timeout = 10s});
    bridge.import_topic<shop::payments>("shop.payments", {.durable = "order-service"});

    constexpr std::array<std::string_view, 5> customers{"Ada", "Alan", "Grace", "Edsger", "Barbara"};
    const auto started = std::chrono::steady_clock::now();
    std::int64_t placed_cents = 0;
    std::uint64_t not_exported = 0;
    for (std::uint64_t id = 1; id <= count; ++id) {
        const shop::order_placed order{id, std::string(customers[id % customers.size()]),
                                       static_cast<std::int64_t>(500 + (id * 7919) % 20000)};
        placed_cents += order.amount_cents;
        // The export is an inline subscriber: a refused export is a failed inline delivery.
        const auto result = bus.publish<shop::orders>(order);
        if (!result || result.failed_inline != 0) {
            ++not_exported;
        }
    }

    bool all_paid = false;
    if (not_exported == 0) {
        std::unique_lock lock(book.mutex);
        all_paid = book.changed.wait_for(lock, payments_deadline, [&] { return book.payments == count; });
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

    const auto s = bridge.stats();
    std::lock_guard lock(book.mutex);
    std::printf("order-service: placed %llu orders (%s), %llu paid (%s) in %.2f s; %llu duplicate and %llu unknown "
                "payments\n",
                static_cast<unsigned long long>(count), dollars(placed_cents).c_str(),
                static_cast<unsigned long long>(book.payments), dollars(book.cents).c_str(), seconds,
                static_cast<unsigned long long>(book.duplicates), static_cast<unsigned long long>(book.unknown));
    std::printf("order-service: bridge exported %llu (acknowledged %llu, resent %llu, refused %llu), imported %llu "
                "(dead letters %llu)\n",
                static_cast<unsigned long long>(s.exported), static_cast<unsigned long long>(s.acknowledged),
                static_cast<unsigned long long>(s.resent), static_cast<unsigned long long>(s.refused),
                static_cast<unsigned long long>(s.imported), static_cast<unsigned long long>(s.dead_letters));
    if (not_exported != 0) {
        std::fprintf(stderr, "order-service: %llu orders could not be exported\n",
                     static_cast<unsigned long long>(not_exported));
        return 1;
    }
    if (!all_paid || book.cents != placed_cents) {
        std::fprintf(stderr, "order-service: %llu orders still unpaid after %lld s\n",
                     static_cast<unsigned long long>(count - book.payments),
                     static_cast<long long>(payments_deadline.count()));
        return 1;
    }
    return 0;
}

} // namespace

int main(int argc, char** argv) { return shop::service_main(argc, argv, "order-service", run); }
