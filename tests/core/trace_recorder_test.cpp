#include <doctest/doctest.h>

#include <herald/herald.hpp>
#include <herald/trace_recorder.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <pthread.h>
#endif
#if defined(_WIN32)
#define popen _popen
#define pclose _pclose
#endif

namespace {

struct step {
    int n = 0;
};
struct first : herald::topic<step> {
    static constexpr std::string_view name = "trace.first";
};
struct second : herald::topic<step> {
    static constexpr std::string_view name = "trace.second";
};
struct third : herald::topic<step> {
    static constexpr std::string_view name = "trace.third";
};
struct flaky
    : herald::topic<step, herald::at_least_once<herald::max_attempts<2>, herald::fixed_backoff<herald::delay::ms(1)>>> {
    static constexpr std::string_view name = "trace.flaky";
};

/// A file in the temporary directory, removed at the end of the test.
struct temp_file {
    std::filesystem::path path;

    temp_file() {
        std::random_device random;
        path = std::filesystem::temp_directory_path() /
               ("herald-trace-" + std::to_string(random()) + std::to_string(random()) + ".json");
    }
    temp_file(const temp_file&) = delete;
    temp_file& operator=(const temp_file&) = delete;
    ~temp_file() {
        std::error_code ignored;
        std::filesystem::remove(path, ignored);
    }

    [[nodiscard]] std::string read() const {
        std::ifstream in(path, std::ios::binary);
        std::ostringstream text;
        text << in.rdbuf();
        return text.str();
    }
    void write(const std::string& text) const {
        std::ofstream out(path, std::ios::binary | std::ios::trunc);
        out << text;
    }
};

/// What tests/support/check_trace.py said about a trace.
struct verdict {
    bool passed = false;
    std::string output;
};

/// Runs tests/support/check_trace.py on `trace` with `options`.
verdict check_trace(const std::filesystem::path& trace, const std::string& options = {}) {
    const auto script = std::filesystem::path(__FILE__).parent_path().parent_path() / "support" / "check_trace.py";
    const std::string command = "python3 \"" + script.string() + "\" \"" + trace.string() + "\" " + options + " 2>&1";
    verdict out;
    FILE* pipe = popen(command.c_str(), "r");
    if (pipe == nullptr) {
        out.output = "cannot run " + command;
        return out;
    }
    char buffer[4096];
    while (const std::size_t got = std::fread(buffer, 1, sizeof buffer, pipe)) {
        out.output.append(buffer, got);
    }
    out.passed = pclose(pipe) == 0;
    return out;
}

/// Checks that tests/support/check_trace.py accepts `trace`, showing what it said if not.
void check_valid(const std::filesystem::path& trace, const std::string& options = {}) {
    const verdict said = check_trace(trace, options);
    INFO(said.output);
    CHECK(said.passed);
}

std::size_t count(std::string_view text, std::string_view what) {
    std::size_t found = 0;
    for (auto at = text.find(what); at != std::string_view::npos; at = text.find(what, at + what.size())) {
        ++found;
    }
    return found;
}

/// `trace` without the events that `drop` picks (the recorder writes one event a line).
std::string without_events(const std::string& trace, const std::function<bool(std::string_view)>& drop) {
    std::istringstream in(trace);
    std::string head;
    std::string line;
    std::vector<std::string> events;
    bool in_events = false;
    std::string tail;
    while (std::getline(in, line)) {
        if (!in_events) {
            head += line + "\n";
            in_events = line.ends_with("\"traceEvents\":[");
        } else if (line == "]}") {
            tail = line + "\n";
            break;
        } else {
            if (line.ends_with(',')) {
                line.pop_back();
            }
            if (!drop(line)) {
                events.push_back(line);
            }
        }
    }
    std::string out = head;
    for (std::size_t i = 0; i < events.size(); ++i) {
        out += events[i] + (i + 1 < events.size() ? ",\n" : "\n");
    }
    return out + tail;
}

/// Waits (up to ten seconds) until `done()`.
void wait_until(const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!done() && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    REQUIRE(done());
}

} // namespace

TEST_CASE("the checker runs: python3 with its json module is installed") {
    REQUIRE_MESSAGE(std::system("python3 -c \"import json\"") == 0, "these tests need python3 on the PATH");
}

TEST_CASE("a recorded chain of three topics is a valid trace with delivery and cause arrows, and broken copies of "
          "it are not") {
    auto recorder = std::make_shared<herald::trace_recorder>();
    herald::bus bus{{.workers = 2, .observers = {recorder}}};
    constexpr int chains = 5;
    std::atomic<int> ends{0};
    // first (async, default pool) publishes second (inline, in first's handler), which
    // publishes third (async, on its own pool).
    auto on_first = bus.subscribe<first>([&](const step& s) { bus.publish<second>({s.n}); }, {.name = "first"});
    auto on_second = bus.subscribe<second>([&](const step& s) { bus.publish<third>({s.n}); },
                                           {.name = "second", .mode = herald::inline_delivery});
    auto on_third =
        bus.subscribe<third>([&](const step&) { ++ends; }, {.name = "third", .pool = bus.make_pool(1, "trace-third")});

    recorder->start();
    CHECK(recorder->is_recording());
    for (int i = 0; i < chains; ++i) {
        bus.publish<first>({i});
    }
    bus.drain();
    wait_until([&] { return ends.load() == chains; });
    bus.drain(); // the third topic's handler calls have ended
    recorder->stop();
    CHECK_FALSE(recorder->is_recording());
    CHECK(recorder->size() == chains * 6); // per chain: three publishes, three handler calls
    CHECK(recorder->dropped() == 0);

    temp_file file;
    recorder->write(file.path);
    const std::string trace = file.read();
    CHECK(count(trace, R"("cat":"herald.publish")") == chains * 3);
    CHECK(count(trace, R"("cat":"herald.handler")") == chains * 3);
    CHECK(count(trace, R"("ph":"s","id")") == chains * 5); // three deliveries, two causes
    CHECK(count(trace, R"("subscriber":"second")") == chains);
    CHECK(count(trace, R"("outcome":"handled")") == chains * 3);
    const std::string chain = "--chain trace.first,trace.second,trace.third --chains " + std::to_string(chains);
    const verdict good = check_trace(file.path, chain);
    INFO(good.output);
    REQUIRE(good.passed);

    // The same text through a stream.
    std::ostringstream streamed;
    recorder->write(streamed);
    CHECK(streamed.str() == trace);

    // Each broken copy fails the check for its own reason.
    std::string expected;
    SUBCASE("truncated") {
        file.write(trace.substr(0, trace.size() / 2));
        expected = "not valid JSON";
    }
    SUBCASE("a flow without its end") {
        bool dropped_one = false;
        file.write(without_events(trace, [&](std::string_view e) {
            if (!dropped_one && e.find(R"("ph":"f")") != std::string_view::npos) {
                dropped_one = true;
                return true;
            }
            return false;
        }));
        expected = "1 start(s) and 0 end(s)";
    }
    SUBCASE("a negative duration") {
        std::string broken = trace;
        broken.replace(broken.find(R"("dur":)"), 6, R"("dur":-)");
        file.write(broken);
        expected = "without a non-negative dur";
    }
    SUBCASE("a delivery arrow that starts outside its publish") {
        std::string broken = trace;
        const auto flow = broken.find(R"("cat":"herald.delivery","ph":"s")");
        const auto value = broken.find(R"("ts":)", flow) + 5;
        broken.replace(value, broken.find(',', value) - value, "999999999.000");
        file.write(broken);
        expected = "start not inside a herald.publish slice";
    }
    SUBCASE("no cause arrows") {
        file.write(without_events(
            trace, [](std::string_view e) { return e.find(R"("cat":"herald.cause")") != std::string_view::npos; }));
        expected = "0 complete chain(s)";
    }
    SUBCASE("a chain broken in the middle") {
        file.write(without_events(trace, [](std::string_view e) {
            return e.find(R"("name":"publish trace.second")") != std::string_view::npos;
        }));
        expected = "0 complete chain(s)";
    }
    const verdict bad = check_trace(file.path, chain);
    INFO(bad.output);
    CHECK_FALSE(bad.passed);
    CHECK(bad.output.find(expected) != std::string::npos);
}

TEST_CASE("nothing is recorded before start(), after stop() or of an unsampled trace; start() begins afresh") {
    auto recorder = std::make_shared<herald::trace_recorder>();
    herald::bus bus{{.workers = 1, .observers = {recorder}}};
    auto on_first = bus.subscribe<first>([](const step&) {}, {.name = "inline", .mode = herald::inline_delivery});

    CHECK_FALSE(recorder->is_recording());
    for (int i = 1; i <= 3; ++i) {
        bus.publish<first>({i});
    }
    CHECK(recorder->size() == 0);

    recorder->start();
    bus.publish<first>({4});
    bus.publish<first>({5});
    bus.publish<first>({6}, {.sampled = false}); // its trace is not recorded
    recorder->stop();
    for (int i = 7; i <= 9; ++i) {
        bus.publish<first>({i});
    }
    CHECK(recorder->size() == 4);

    temp_file file;
    recorder->write(file.path);
    const std::string trace = file.read();
    CHECK(count(trace, R"("cat":"herald.publish")") == 2);
    CHECK(count(trace, R"("sequence":4,)") == 2); // its publish and its handler call
    CHECK(count(trace, R"("sequence":5,)") == 2);
    for (const int outside : {1, 3, 6, 7, 9}) {
        CHECK(count(trace, R"("sequence":)" + std::to_string(outside) + ",") == 0);
    }
    check_valid(file.path);

    recorder->start();
    CHECK(recorder->size() == 0);
    bus.publish<first>({10});
    recorder->stop();
    CHECK(recorder->size() == 2);
}

TEST_CASE("a full recorder keeps capacity() records, counts the rest, and draws only arrows with both ends") {
    auto recorder = std::make_shared<herald::trace_recorder>(10);
    CHECK(recorder->capacity() == 10);
    herald::bus bus{{.workers = 1, .observers = {recorder}}};
    auto on_first = bus.subscribe<first>([](const step&) {}, {.name = "inline", .mode = herald::inline_delivery});

    recorder->start();
    for (int i = 0; i < 20; ++i) {
        bus.publish<first>({i});
    }
    recorder->stop();
    // Each publish is two records (its inline handler call, then the publish itself).
    CHECK(recorder->size() == 10);
    CHECK(recorder->dropped() == 30);

    temp_file file;
    recorder->write(file.path);
    const std::string trace = file.read();
    CHECK(count(trace, R"("dropped":30)") == 1);
    CHECK(count(trace, R"("ph":"X")") == 10);
    CHECK(count(trace, R"("ph":"f")") == 5);
    check_valid(file.path);

    recorder->start();
    CHECK(recorder->dropped() == 0);
    recorder->stop();
}

TEST_CASE("a handler that throws shows as failed; retries and dead letters are instant events") {
    auto recorder = std::make_shared<herald::trace_recorder>();
    herald::bus bus{{.workers = 1, .on_error = [](const herald::delivery_error&) {}, .observers = {recorder}}};
    auto thrower = bus.subscribe<first>([](const step&) { throw std::runtime_error("no"); },
                                        {.name = "thrower", .mode = herald::inline_delivery});
    auto retried = bus.subscribe<flaky>([](const step&) { throw std::runtime_error("never"); }, {.name = "retried"});
    std::atomic<bool> dead{false};
    auto morgue = bus.subscribe<herald::dead_letter_topic<flaky>>(
        [&](const herald::dead_letter<step>&) { dead = true; }, {.name = "morgue"});

    recorder->start();
    const auto result = bus.publish<first>({1});
    CHECK(result.failed_inline == 1);
    bus.publish<flaky>({2});
    wait_until([&] { return dead.load(); });
    bus.drain(); // the dead letter's handler call has ended
    recorder->stop();
    // Three publishes (the dead letter's too), four handler calls, a retry, a dead letter.
    CHECK(recorder->size() == 9);

    temp_file file;
    recorder->write(file.path);
    const std::string trace = file.read();
    CHECK(count(trace, R"("subscriber":"thrower","attempt":1,)") == 1);
    CHECK(count(trace, R"("outcome":"failed")") == 3); // thrower, and both attempts of retried
    CHECK(count(trace, R"("subscriber":"morgue","attempt":1,)") == 1);
    CHECK(count(trace, R"("outcome":"handled")") == 1);
    CHECK(count(trace, R"("failed_inline":1)") == 1);
    CHECK(count(trace, R"("name":"retry trace.flaky","cat":"herald.retry","ph":"i")") == 1);
    CHECK(count(trace, R"("name":"dead letter trace.flaky","cat":"herald.dead_letter","ph":"i")") == 1);
    CHECK(count(trace, R"("reason":"attempts_exhausted")") == 1);
    CHECK(count(trace, R"("subscriber":"retried","attempt":2,)") == 2); // the second call, the dead letter
    CHECK(count(trace, R"("ph":"f")") == 5); // each publish to its calls (four), the failed call to its dead letter
    check_valid(file.path, "--chain trace.flaky,trace.flaky.dead_letters");
}

TEST_CASE("names are escaped into valid JSON") {
    auto recorder = std::make_shared<herald::trace_recorder>();
    herald::bus bus{{.workers = 1, .observers = {recorder}}};
    // A quote, a backslash, a newline, a control character, a good two-byte character
    // and a lone byte that is not UTF-8.
    const std::string odd = "q\"b\\n\nc\x01 \xc3\xa9 \xff";
    auto on_first = bus.subscribe<first>([](const step&) {}, {.name = odd, .mode = herald::inline_delivery});
    recorder->start();
    bus.publish<first>({1});
    recorder->stop();

    temp_file file;
    recorder->write(file.path);
    CHECK(count(file.read(), R"("subscriber":"q\"b\\n\nc\u0001 )"
                             "\xc3\xa9"
                             R"( \ufffd")") == 1);
    check_valid(file.path);
}

#if defined(__linux__)
TEST_CASE("a thread's track is named after the thread, or numbered when it has no name") {
    auto recorder = std::make_shared<herald::trace_recorder>();
    herald::bus bus{{.workers = 1, .observers = {recorder}}};
    auto on_first = bus.subscribe<first>([](const step&) {}, {.name = "inline", .mode = herald::inline_delivery});
    recorder->start();
    bus.publish<first>({1}); // the main thread, whose name is the program's: "thread 1"
    std::thread named([&] {
        pthread_setname_np(pthread_self(), "trace-named");
        bus.publish<first>({2});
    });
    named.join();
    recorder->stop();

    std::ostringstream out;
    recorder->write(out);
    const std::string trace = out.str();
    CHECK(count(trace, R"({"name":"thread_name","ph":"M","pid":1,"tid":1,"args":{"name":"thread 1"}})") == 1);
    CHECK(count(trace, R"({"name":"thread_name","ph":"M","pid":1,"tid":2,"args":{"name":"trace-named"}})") == 1);
}
#endif

TEST_CASE("writing to a path that cannot be opened throws, naming the path") {
    herald::trace_recorder recorder;
    const auto nowhere = std::filesystem::temp_directory_path() / "herald-no-such-directory" / "trace.json";
    CHECK_THROWS_WITH_AS(recorder.write(nowhere), doctest::Contains("herald-no-such-directory"), std::runtime_error);
}
