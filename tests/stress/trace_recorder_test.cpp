// The trace recorder under load: many threads publish and handle while another starts,
// stops and writes recordings; every recording stays within its capacity and every file
// it writes is a valid trace (also run under ThreadSanitizer).
#include "support/events.hpp"
#include "support/watchdog.hpp"

#include <doctest/doctest.h>

#include <herald/herald.hpp>
#include <herald/trace_recorder.hpp>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

struct hop {
    int n = 0;
};
struct outer : herald::topic<hop> {
    static constexpr std::string_view name = "stress.outer";
};
struct inner : herald::topic<hop> {
    static constexpr std::string_view name = "stress.inner";
};

constexpr int publishers = 3;
constexpr int per_publisher = test::scaled(20000, 2000);
constexpr std::size_t capacity = 4096;

bool checks_out(const std::filesystem::path& trace) {
    const auto script = std::filesystem::path(__FILE__).parent_path().parent_path() / "support" / "check_trace.py";
    const std::string command = "python3 \"" + script.string() + "\" \"" + trace.string() + "\"";
    return std::system(command.c_str()) == 0;
}

} // namespace

TEST_CASE("recording, stopping and writing while many threads publish and handle") {
    const test::watchdog guard("trace recorder stress", std::chrono::seconds(120));
    auto recorder = std::make_shared<herald::trace_recorder>(capacity);
    herald::bus bus{{.workers = 2, .observers = {recorder}}};
    // outer: async, concurrent, on two workers; each call publishes inner, handled inline.
    auto on_outer = bus.subscribe<outer>([&](const hop& h) { bus.publish<inner>({h.n}); },
                                         {.name = "outer", .order = herald::ordering::concurrent});
    std::atomic<int> handled{0};
    auto on_inner =
        bus.subscribe<inner>([&](const hop&) { ++handled; }, {.name = "inner", .mode = herald::inline_delivery});

    std::atomic<bool> done{false};
    std::random_device random;
    const auto file = std::filesystem::temp_directory_path() /
                      ("herald-trace-stress-" + std::to_string(random()) + std::to_string(random()) + ".json");
    std::atomic<int> recordings{0};
    std::atomic<std::size_t> largest{0};
    std::atomic<bool> wrote_file{false};
    std::thread toggler([&] {
        while (!done.load()) {
            recorder->start();
            std::this_thread::sleep_for(std::chrono::microseconds(300));
            std::ostringstream while_recording;
            recorder->write(while_recording); // while the hooks run
            if (!wrote_file && recorder->size() > 100) {
                recorder->write(file); // for the checker
                wrote_file = true;
            }
            recorder->stop();
            largest = std::max(largest.load(), recorder->size());
            ++recordings;
        }
    });

    std::atomic<int> published{0};
    std::vector<std::thread> threads;
    for (int p = 0; p < publishers; ++p) {
        threads.emplace_back([&] {
            // At least per_publisher, and until the checker's file is written.
            for (int i = 0; i < per_publisher || !wrote_file.load(); ++i) {
                bus.publish<outer>({i});
                ++published;
            }
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    bus.drain();
    done = true;
    toggler.join();
    bus.drain();
    CHECK(handled.load() == published.load());
    CHECK(recordings.load() > 0);
    CHECK(largest.load() <= capacity);
    REQUIRE(wrote_file.load());
    CHECK(checks_out(file));
    std::error_code ignored;
    std::filesystem::remove(file, ignored);
}
