// Executors users already run: an application-driven loop, and Boost.Asio.
#include "support/events.hpp"

#include <doctest/doctest.h>

#include <herald/asio.hpp>
#include <herald/herald.hpp>
#include <herald/loop_executor.hpp>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

TEST_CASE("loop_executor: handlers run only on the thread that runs the loop, in order") {
    herald::bus bus{{.workers = 1}};
    auto loop = std::make_shared<herald::loop_executor>();
    std::vector<int> seen;
    std::vector<std::thread::id> where;
    auto sub = bus.subscribe<test::ticks>(
        [&](const test::tick& t) {
            seen.push_back(t.value);
            where.push_back(std::this_thread::get_id());
        },
        {.pool = loop});
    std::thread publisher([&] {
        for (int i = 0; i < 100; ++i) {
            bus.publish<test::ticks>({0, i});
        }
    });
    publisher.join();
    CHECK(seen.empty()); // nothing runs until the loop does
    CHECK(loop->has_waiting_tasks());
    while (seen.size() < 100) {
        loop->run_pending();
    }
    CHECK(seen.size() == 100);
    for (int i = 0; i < 100; ++i) {
        CHECK(seen[static_cast<std::size_t>(i)] == i);
    }
    for (const auto& id : where) {
        CHECK(id == std::this_thread::get_id());
    }
    bus.drain(); // on the loop's thread: runs what is left here
}

TEST_CASE("loop_executor: run_for serves events as they come, and drain from another thread waits for the loop") {
    herald::bus bus{{.workers = 1}};
    auto loop = std::make_shared<herald::loop_executor>();
    std::atomic<int> handled{0};
    auto sub = bus.subscribe<test::ticks>([&](const test::tick&) { handled.fetch_add(1); }, {.pool = loop});
    std::atomic<bool> done{false};
    std::thread other([&] {
        for (int i = 0; i < 50; ++i) {
            bus.publish<test::ticks>({0, i});
        }
        bus.drain(); // the loop below runs the work
        done.store(true);
    });
    while (!done.load()) {
        loop->run_for(std::chrono::milliseconds(5));
    }
    other.join();
    CHECK(handled.load() == 50);
    bus.shutdown();
    CHECK(loop->run_pending() == 0);
}

TEST_CASE("asio_executor: a real io_context run by two threads delivers serial subscribers in order") {
    boost::asio::io_context io;
    auto guard = boost::asio::make_work_guard(io);
    std::vector<std::thread> runners;
    for (int i = 0; i < 2; ++i) {
        runners.emplace_back([&io] { io.run(); });
    }
    {
        herald::bus bus{{.workers = 1}};
        auto on_io = herald::make_asio_executor(io.get_executor(), 2);
        std::vector<int> serial_seen;
        std::atomic<int> inside{0};
        std::atomic<int> overlap{0};
        std::atomic<int> concurrent_handled{0};
        auto serial = bus.subscribe<test::ticks>(
            [&](const test::tick& t) {
                if (inside.fetch_add(1) != 0) {
                    overlap.fetch_add(1);
                }
                serial_seen.push_back(t.value);
                inside.fetch_sub(1);
            },
            {.pool = on_io});
        auto concurrent = bus.subscribe<test::ticks>([&](const test::tick&) { concurrent_handled.fetch_add(1); },
                                                     {.order = herald::ordering::concurrent, .pool = on_io});
        auto on_strand = herald::make_asio_executor(boost::asio::make_strand(io), 1);
        std::atomic<int> strand_handled{0};
        auto stranded = bus.subscribe<test::ticks>([&](const test::tick&) { strand_handled.fetch_add(1); },
                                                   {.order = herald::ordering::concurrent, .pool = on_strand});
        for (int i = 0; i < 2000; ++i) {
            bus.publish<test::ticks>({0, i});
        }
        bus.drain();
        CHECK(overlap.load() == 0);
        REQUIRE(serial_seen.size() == 2000);
        for (int i = 0; i < 2000; ++i) {
            CHECK(serial_seen[static_cast<std::size_t>(i)] == i);
        }
        CHECK(concurrent_handled.load() == 2000);
        CHECK(strand_handled.load() == 2000);
    } // ~bus stops the executors while io still runs
    guard.reset();
    for (auto& t : runners) {
        t.join();
    }
}
