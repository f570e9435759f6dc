// The Prometheus exporter end to end: a real prometheus::Exposer on a loopback port,
// scraped over HTTP by a small socket client, checked line by line (counters, labels,
// histogram buckets); and scrapes after the bus shut down or was destroyed, while it
// shuts down, and after the collector is gone.
#include "support/watchdog.hpp"

#include <doctest/doctest.h>

#include <herald/herald.hpp>
#include <herald/prometheus.hpp>

#include <arpa/inet.h>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <latch>
#include <map>
#include <memory>
#include <netinet/in.h>
#include <optional>
#include <prometheus/exposer.h>
#include <semaphore>
#include <stdexcept>
#include <string>
#include <string_view>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <utility>
#include <vector>

using namespace std::chrono_literals;

namespace {

struct order {
    int id = 0;
    bool fail = false;
};

struct orders : herald::topic<order> {
    static constexpr std::string_view name = "shop.orders";
};

struct naps : herald::topic<int> {
    static constexpr std::string_view name = "shop.naps";
};

/// Every handler call and every wait timed, so histogram counts are exact.
struct timed_traits : herald::default_bus_traits {
    static constexpr std::uint32_t latency_sample_every = 1;
};
using timed_bus = herald::basic_bus<timed_traits>;

/// No latency histograms at all.
struct untimed_traits : herald::default_bus_traits {
    static constexpr bool latency_metrics = false;
};

/// A GET over a fresh TCP connection to 127.0.0.1:`port` (HTTP/1.0: the server closes
/// the connection after the response). Returns the status code and the body.
std::pair<int, std::string> http_get(int port, const std::string& path) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<std::uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
        ::close(fd);
        FAIL("cannot connect to 127.0.0.1:" << port << " (errno " << errno << ")");
    }
    const std::string request = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: text/plain\r\n\r\n";
    std::size_t sent = 0;
    while (sent < request.size()) {
        const auto n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
        if (n <= 0) {
            ::close(fd);
            FAIL("send failed (errno " << errno << ")");
        }
        sent += static_cast<std::size_t>(n);
    }
    std::string response;
    char buffer[4096];
    for (;;) {
        const auto n = ::recv(fd, buffer, sizeof buffer, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        response.append(buffer, static_cast<std::size_t>(n));
    }
    ::close(fd);
    const auto head_end = response.find("\r\n\r\n");
    REQUIRE_MESSAGE(head_end != std::string::npos, "no complete HTTP response: " << response);
    // "HTTP/1.1 200 OK"
    const auto space = response.find(' ');
    REQUIRE(space != std::string::npos);
    const int status = std::atoi(response.c_str() + space + 1);
    return {status, response.substr(head_end + 4)};
}

/// One sample line of the text exposition format.
struct sample {
    std::string name;
    std::map<std::string, std::string> labels;
    std::string value; ///< as written ("3", "0.5", "+Inf")
};

/// The exposition, parsed: the samples, and each family's `# TYPE`.
struct exposition {
    std::vector<sample> samples;
    std::multimap<std::string, std::string> types; ///< family -> type, every TYPE line

    /// The samples named `name` whose labels include all of `labels`.
    [[nodiscard]] std::vector<const sample*> find(const std::string& name,
                                                  const std::map<std::string, std::string>& labels) const {
        std::vector<const sample*> out;
        for (const auto& s : samples) {
            if (s.name != name) {
                continue;
            }
            bool match = true;
            for (const auto& [key, value] : labels) {
                const auto it = s.labels.find(key);
                match = match && it != s.labels.end() && it->second == value;
            }
            if (match) {
                out.push_back(&s);
            }
        }
        return out;
    }

    /// The value of the one sample named `name` with (at least) `labels`, as a number.
    [[nodiscard]] double value(const std::string& name, const std::map<std::string, std::string>& labels) const {
        const auto found = find(name, labels);
        INFO("sample " << name << " with " << labels.size() << " given labels");
        REQUIRE(found.size() == 1);
        return number(found.front()->value);
    }

    [[nodiscard]] bool has(const std::string& name) const {
        for (const auto& s : samples) {
            if (s.name == name) {
                return true;
            }
        }
        return false;
    }

    static double number(const std::string& text) {
        if (text == "+Inf") {
            return HUGE_VAL;
        }
        std::size_t used = 0;
        const double v = std::stod(text, &used);
        REQUIRE(used == text.size());
        return v;
    }
};

/// Parses the text format (labels with escaped values; no timestamps expected).
exposition parse(const std::string& text) {
    exposition out;
    std::size_t at = 0;
    while (at < text.size()) {
        auto end = text.find('\n', at);
        if (end == std::string::npos) {
            end = text.size();
        }
        const std::string line = text.substr(at, end - at);
        at = end + 1;
        if (line.empty()) {
            continue;
        }
        if (line.rfind("# TYPE ", 0) == 0) {
            const auto rest = line.substr(7);
            const auto space = rest.find(' ');
            REQUIRE(space != std::string::npos);
            out.types.emplace(rest.substr(0, space), rest.substr(space + 1));
            continue;
        }
        if (line[0] == '#') {
            continue;
        }
        sample s;
        std::size_t i = 0;
        while (i < line.size() && line[i] != '{' && line[i] != ' ') {
            ++i;
        }
        s.name = line.substr(0, i);
        if (i < line.size() && line[i] == '{') {
            ++i;
            while (line.at(i) != '}') {
                const auto eq = line.find('=', i);
                REQUIRE(eq != std::string::npos);
                const std::string key = line.substr(i, eq - i);
                REQUIRE(line.at(eq + 1) == '"');
                std::string value;
                std::size_t j = eq + 2;
                while (line.at(j) != '"') {
                    if (line[j] == '\\') {
                        ++j;
                        value += line.at(j) == 'n' ? '\n' : line[j];
                    } else {
                        value += line[j];
                    }
                    ++j;
                }
                s.labels[key] = value;
                i = j + 1;
                if (line.at(i) == ',') {
                    ++i;
                }
            }
            ++i;
        }
        REQUIRE(line.at(i) == ' ');
        s.value = line.substr(i + 1);
        REQUIRE_MESSAGE(s.value.find(' ') == std::string::npos, "unexpected timestamp: " << line);
        out.samples.push_back(std::move(s));
    }
    return out;
}

/// An exposer on a free loopback port.
struct server {
    /// The one the tests share: stopping an exposer that has served takes civetweb about
    /// a second per worker thread.
    static server& shared() {
        static server instance;
        return instance;
    }

    server() : exposer("127.0.0.1:0", 2) {
        const auto ports = exposer.GetListeningPorts();
        REQUIRE(ports.size() == 1);
        port = ports.front();
        REQUIRE(port > 0);
    }

    /// GET /metrics, parsed (and its raw text, for failure messages).
    exposition scrape() {
        const auto [status, body] = http_get(port, "/metrics");
        REQUIRE(status == 200);
        last = body;
        return parse(body);
    }

    prometheus::Exposer exposer;
    int port = 0;
    std::string last;
};

/// Serves a collector on the shared exposer while alive.
class serving {
public:
    explicit serving(std::shared_ptr<herald::prometheus::collector> metrics) : metrics_(std::move(metrics)) {
        server::shared().exposer.RegisterCollectable(metrics_);
    }
    ~serving() { server::shared().exposer.RemoveCollectable(metrics_); }
    serving(const serving&) = delete;
    serving& operator=(const serving&) = delete;

private:
    std::weak_ptr<herald::prometheus::collector> metrics_;
};

/// A handler gate: the first call signals `entered` and every call waits until `open()`.
struct gate {
    std::binary_semaphore entered{0};
    std::latch opened{1};
    std::atomic<int> calls{0};

    void pass() {
        if (calls.fetch_add(1) == 0) {
            entered.release();
        }
        opened.wait();
    }
    void open() { opened.count_down(); }
};

/// The histogram of `name` for `labels`: checks its shape (bucket counts never fall,
/// `+Inf` equals `_count`, the bounds are herald's) and returns its count.
std::uint64_t checked_histogram(const exposition& e, const std::string& name,
                                const std::map<std::string, std::string>& labels) {
    const auto buckets = e.find(name + "_bucket", labels);
    REQUIRE(buckets.size() == herald::prometheus::histogram_bounds_ns.size() + 1);
    double previous_bound = -1;
    double previous_count = 0;
    for (std::size_t i = 0; i < buckets.size(); ++i) {
        const double bound = exposition::number(buckets[i]->labels.at("le"));
        const double count = exposition::number(buckets[i]->value);
        if (i + 1 < buckets.size()) {
            // herald's bound 2^k - 1 ns, as written in seconds.
            CHECK(
                bound ==
                doctest::Approx(static_cast<double>(herald::prometheus::histogram_bounds_ns[i]) / 1e9).epsilon(1e-12));
        } else {
            CHECK(buckets[i]->labels.at("le") == "+Inf");
        }
        CHECK(bound > previous_bound);
        CHECK(count >= previous_count);
        previous_bound = bound;
        previous_count = count;
    }
    const double count = e.value(name + "_count", labels);
    CHECK(previous_count == count);
    CHECK(e.value(name + "_sum", labels) >= 0);
    return static_cast<std::uint64_t>(count);
}

const std::vector<std::string> outcomes = {"delivered", "failed",    "discarded",     "dropped",
                                           "rejected",  "conflated", "dead_lettered", "expired"};

} // namespace

TEST_CASE("a scrape over HTTP shows exact counters, mailbox gauges and histograms") {
    const test::watchdog guard("prometheus exposer", 60s);
    auto& http = server::shared();
    timed_bus bus({.source = "test-shop", .workers = 2});
    bus.set_error_handler([](const herald::delivery_error&) {});
    auto metrics = herald::prometheus::collector::attach(bus);
    const serving served(metrics);

    // audit: inline, fails on odd ids > 1. slow: async, bounded (3, reject), held in its
    // first call. sleepy: async, sleeps 1 ms per call (above the 262 us bound).
    auto audit = bus.subscribe<orders>(
        [](const order& o) {
            if (o.fail) {
                throw std::runtime_error("audit refused");
            }
        },
        {.name = "audit", .mode = herald::inline_delivery});
    gate slow_gate;
    auto slow = bus.subscribe<orders>([&](const order&) { slow_gate.pass(); },
                                      {.name = "slow", .capacity = 3, .overflow = herald::overflow::reject});
    auto sleepy = bus.subscribe<naps>([](int) { std::this_thread::sleep_for(1ms); }, {.name = "sleepy"});

    static_cast<void>(bus.publish<orders>({1, false}));
    slow_gate.entered.acquire(); // slow now runs order 1; its mailbox is empty
    for (int id = 2; id <= 6; ++id) {
        static_cast<void>(bus.publish<orders>({id, id == 3 || id == 5}));
    }
    for (int i = 0; i < 3; ++i) {
        static_cast<void>(bus.publish<naps>(i));
    }

    // While slow is held: its mailbox (capacity 3, counting the batch being handled)
    // holds orders 1, 2 and 3; 4, 5 and 6 were refused.
    {
        const auto e = http.scrape();
        INFO(http.last);
        const std::map<std::string, std::string> shop{{"source", "test-shop"}, {"topic", "shop.orders"}};
        auto audit_labels = shop;
        audit_labels["subscriber"] = "audit";
        auto slow_labels = shop;
        slow_labels["subscriber"] = "slow";

        CHECK(e.value("herald_published_total", shop) == 6);
        CHECK(e.value("herald_subscribers", shop) == 2);
        CHECK(e.value("herald_dead_letters_stored", shop) == 0);

        auto outcome = [&](std::map<std::string, std::string> labels, const std::string& which) {
            labels["outcome"] = which;
            return e.value("herald_deliveries_total", labels);
        };
        CHECK(outcome(audit_labels, "delivered") == 4);
        CHECK(outcome(audit_labels, "failed") == 2);
        CHECK(e.value("herald_accepted_total", audit_labels) == 6);
        CHECK(outcome(slow_labels, "delivered") == 0);
        CHECK(outcome(slow_labels, "rejected") == 3);
        CHECK(e.value("herald_accepted_total", slow_labels) == 6);
        CHECK(e.value("herald_retries_total", slow_labels) == 0);
        for (const auto& which : outcomes) {
            CHECK(e.find("herald_deliveries_total",
                         [&] {
                             auto labels = slow_labels;
                             labels["outcome"] = which;
                             return labels;
                         }())
                      .size() == 1);
        }

        CHECK(e.value("herald_mailbox_depth", slow_labels) == 3);
        CHECK(e.value("herald_mailbox_high_water", slow_labels) == 3);
        CHECK(e.value("herald_mailbox_capacity", slow_labels) == 3);
        CHECK(e.value("herald_blocked_seconds_total", slow_labels) == 0);
        // An inline subscriber has no mailbox; an unbounded one no capacity.
        CHECK(e.find("herald_mailbox_depth", audit_labels).empty());
        CHECK(e.find("herald_mailbox_capacity", {{"subscriber", "sleepy"}}).empty());
        CHECK(e.find("herald_mailbox_depth", {{"subscriber", "sleepy"}}).size() == 1);

        // Every audit call was timed (sample_every = 1), failures included.
        CHECK(checked_histogram(e, "herald_handler_seconds", audit_labels) == 6);
        CHECK(e.find("herald_wait_seconds_count", audit_labels).empty());

        CHECK(e.value("herald_rejected_publishes_total", {{"source", "test-shop"}}) == 0);
        CHECK(e.value("herald_error_handler_failures_total", {{"source", "test-shop"}}) == 0);
        CHECK(e.value("herald_observer_failures_total", {{"source", "test-shop"}}) == 0);

        // Each family once, with its type.
        const std::map<std::string, std::string> expected_types = {
            {"herald_published_total", "counter"},
            {"herald_deliveries_total", "counter"},
            {"herald_accepted_total", "counter"},
            {"herald_retries_total", "counter"},
            {"herald_mailbox_depth", "gauge"},
            {"herald_mailbox_high_water", "gauge"},
            {"herald_mailbox_capacity", "gauge"},
            {"herald_blocked_seconds_total", "counter"},
            {"herald_subscribers", "gauge"},
            {"herald_dead_letters_stored", "gauge"},
            {"herald_handler_seconds", "histogram"},
            {"herald_wait_seconds", "histogram"},
            {"herald_rejected_publishes_total", "counter"},
            {"herald_error_handler_failures_total", "counter"},
            {"herald_observer_failures_total", "counter"},
        };
        for (const auto& expected : expected_types) {
            const std::string& family = expected.first; // not a structured binding: INFO captures it
            INFO(family);
            CHECK(e.types.count(family) == 1);
            const auto it = e.types.find(family);
            REQUIRE(it != e.types.end());
            CHECK(it->second == expected.second);
        }
    }

    slow_gate.open();
    bus.drain();
    {
        const auto e = http.scrape();
        INFO(http.last);
        const std::map<std::string, std::string> slow_labels{
            {"source", "test-shop"}, {"topic", "shop.orders"}, {"subscriber", "slow"}};
        const std::map<std::string, std::string> sleepy_labels{
            {"source", "test-shop"}, {"topic", "shop.naps"}, {"subscriber", "sleepy"}};
        auto delivered = slow_labels;
        delivered["outcome"] = "delivered";
        CHECK(e.value("herald_deliveries_total", delivered) == 3);
        CHECK(e.value("herald_mailbox_depth", slow_labels) == 0);
        CHECK(e.value("herald_mailbox_high_water", slow_labels) == 3);
        CHECK(checked_histogram(e, "herald_handler_seconds", slow_labels) == 3);
        CHECK(checked_histogram(e, "herald_wait_seconds", slow_labels) == 3);

        // sleepy's calls took at least 1 ms: none in the buckets up to 262 us, all in +Inf.
        CHECK(checked_histogram(e, "herald_handler_seconds", sleepy_labels) == 3);
        auto small = sleepy_labels;
        small["le"] = "0.000262143";
        CHECK(e.value("herald_handler_seconds_bucket", small) == 0);
        CHECK(e.value("herald_handler_seconds_sum", sleepy_labels) >= 0.003);
        CHECK(e.value("herald_published_total", {{"topic", "shop.naps"}}) == 3);
    }
}

TEST_CASE("after the bus shut down, scrapes report its final values; after it is gone too") {
    const test::watchdog guard("prometheus after shutdown", 60s);
    auto& http = server::shared();
    auto bus = std::make_unique<timed_bus>(herald::bus_options{.source = "short-lived", .workers = 1});
    auto metrics = herald::prometheus::collector::attach(*bus);
    const serving served(metrics);
    auto sub = bus->subscribe<orders>([](const order&) {}, {.name = "counter"});
    for (int id = 1; id <= 5; ++id) {
        static_cast<void>(bus->publish<orders>({id, false}));
    }
    bus->shutdown();
    const std::map<std::string, std::string> labels{
        {"source", "short-lived"}, {"topic", "shop.orders"}, {"subscriber", "counter"}, {"outcome", "delivered"}};
    {
        const auto e = http.scrape();
        INFO(http.last);
        CHECK(e.value("herald_published_total", {{"source", "short-lived"}}) == 5);
        CHECK(e.value("herald_deliveries_total", labels) == 5);
    }
    bus.reset();
    {
        const auto e = http.scrape();
        INFO(http.last);
        CHECK(e.value("herald_deliveries_total", labels) == 5);
        CHECK(checked_histogram(e, "herald_handler_seconds", {{"subscriber", "counter"}}) == 5);
    }
    // And a collector attached to a bus that had already stopped.
    timed_bus stopped({.source = "stopped", .workers = 1});
    stopped.shutdown();
    metrics->add(stopped);
    const auto e = http.scrape();
    CHECK(e.value("herald_rejected_publishes_total", {{"source", "stopped"}}) == 0);
    CHECK(e.value("herald_deliveries_total", labels) == 5);
}

TEST_CASE("a bus destroyed without an explicit shutdown, while scrapes run") {
    const test::watchdog guard("prometheus scrape during shutdown", 120s);
    auto& http = server::shared();
    for (int round = 0; round < 20; ++round) {
        auto bus = std::make_unique<timed_bus>(herald::bus_options{.source = "racing", .workers = 2});
        auto metrics = herald::prometheus::collector::attach(*bus);
        const serving served(metrics);
        auto sub = bus->subscribe<orders>([](const order&) {}, {.name = "racer"});
        std::atomic<bool> done{false};
        std::atomic<int> scrapes{0};
        std::thread scraper([&] {
            while (!done.load()) {
                const auto families = metrics->Collect();
                static_cast<void>(families);
                ++scrapes;
            }
        });
        for (int id = 0; id < 200; ++id) {
            static_cast<void>(bus->publish<orders>({id, false}));
        }
        while (scrapes.load() < 2) {
            std::this_thread::yield();
        }
        const auto during = http.scrape(); // over HTTP as well, while the bus lives
        CHECK(during.has("herald_published_total"));
        bus.reset(); // ~basic_bus shuts down while the scraper reads
        const auto before = scrapes.load();
        while (scrapes.load() < before + 2) {
            std::this_thread::yield();
        }
        done = true;
        scraper.join();
        const auto after = http.scrape();
        INFO(http.last);
        CHECK(after.value("herald_published_total", {{"source", "racing"}}) == 200);
    }
}

TEST_CASE("a collector destroyed first ends the export; the bus goes on") {
    const test::watchdog guard("prometheus collector first", 60s);
    auto& http = server::shared();
    herald::bus bus({.source = "outliving", .workers = 1});
    std::atomic<int> seen{0};
    auto sub = bus.subscribe<orders>([&](const order&) { ++seen; });
    {
        auto metrics = herald::prometheus::collector::attach(bus);
        // Registered for good: only the expired weak_ptr ends the export.
        http.exposer.RegisterCollectable(metrics);
        static_cast<void>(bus.publish<orders>({1, false}));
        bus.drain();
        CHECK(http.scrape().value("herald_published_total", {{"source", "outliving"}}) == 1);
    }
    // The exposer's weak_ptr has expired: nothing of herald is served any more.
    const auto e = http.scrape();
    CHECK(e.find("herald_published_total", {{"source", "outliving"}}).empty());
    static_cast<void>(bus.publish<orders>({2, false}));
    bus.shutdown();
    CHECK(seen.load() == 2);
}

TEST_CASE("one collector for two buses: one family each, told apart by source") {
    const test::watchdog guard("prometheus two buses", 60s);
    auto& http = server::shared();
    timed_bus shop({.source = "shop", .workers = 1});
    herald::basic_bus<untimed_traits> billing({.source = "billing", .workers = 1});
    auto metrics = herald::prometheus::collector::attach(shop);
    metrics->add(billing);
    const serving served(metrics);
    // Two subscribers of one topic that share a name are one series (summed).
    auto a = shop.subscribe<orders>([](const order&) {}, {.name = "twin"});
    auto b = shop.subscribe<orders>([](const order&) {}, {.name = "twin"});
    auto c = billing.subscribe<orders>([](const order&) {}, {.name = "ledger"});
    static_cast<void>(shop.publish<orders>({1, false}));
    static_cast<void>(shop.publish<orders>({2, false}));
    static_cast<void>(billing.publish<orders>({3, false}));
    shop.drain();
    billing.drain();

    const auto e = http.scrape();
    INFO(http.last);
    CHECK(e.types.count("herald_published_total") == 1);
    CHECK(e.value("herald_published_total", {{"source", "shop"}}) == 2);
    CHECK(e.value("herald_published_total", {{"source", "billing"}}) == 1);
    CHECK(e.value("herald_subscribers", {{"source", "shop"}}) == 2);
    CHECK(e.value("herald_deliveries_total", {{"subscriber", "twin"}, {"outcome", "delivered"}}) == 4);
    CHECK(checked_histogram(e, "herald_handler_seconds", {{"subscriber", "twin"}}) == 4);
    // billing keeps no histograms (latency_metrics = false).
    CHECK(e.find("herald_handler_seconds_count", {{"source", "billing"}}).empty());
    CHECK(e.value("herald_deliveries_total", {{"subscriber", "ledger"}, {"outcome", "delivered"}}) == 1);
}

TEST_CASE("the histogram buckets are exact at their bounds") {
    // Times of exactly 2^k - 1 ns and 2^k ns, for every bound: the first is in its bucket,
    // the second only in the next one.
    herald::detail::latency_cells cells;
    for (const std::uint64_t bound : herald::prometheus::histogram_bounds_ns) {
        cells.record(std::chrono::nanoseconds(static_cast<std::int64_t>(bound)));
        cells.record(std::chrono::nanoseconds(static_cast<std::int64_t>(bound + 1)));
    }
    cells.record(std::chrono::hours(3)); // past herald's last bucket
    herald::subscriber_metrics subscriber;
    subscriber.name = "exact";
    subscriber.handled = cells.snapshot();
    herald::topic_metrics topic;
    topic.name = "t";
    topic.subscribers.push_back(subscriber);
    herald::bus_metrics snapshot;
    snapshot.source = "synthetic";
    snapshot.sample_every = 1;
    snapshot.topics.push_back(topic);

    const auto families = herald::prometheus::detail::families_of({snapshot});
    const prometheus::ClientMetric* handled = nullptr;
    for (const auto& family : families) {
        if (family.name == "herald_handler_seconds") {
            REQUIRE(family.metric.size() == 1);
            handled = &family.metric.front();
        }
    }
    REQUIRE(handled != nullptr);
    const auto& h = handled->histogram;
    const auto bounds = herald::prometheus::histogram_bounds_ns;
    REQUIRE(h.bucket.size() == bounds.size() + 1);
    CHECK(h.sample_count == 2 * bounds.size() + 1);
    for (std::size_t i = 0; i < bounds.size(); ++i) {
        INFO("bound " << bounds[i] << " ns");
        CHECK(h.bucket[i].upper_bound == static_cast<double>(bounds[i]) / 1e9);
        // Both values of every lower bound, and the 2^k - 1 ns value of this one.
        CHECK(h.bucket[i].cumulative_count == 2 * i + 1);
    }
    CHECK(std::isinf(h.bucket.back().upper_bound));
    CHECK(h.bucket.back().cumulative_count == h.sample_count);
    double sum_ns = 3.0 * 3600 * 1e9;
    for (const std::uint64_t bound : bounds) {
        sum_ns += static_cast<double>(2 * bound + 1);
    }
    CHECK(h.sample_sum == doctest::Approx(sum_ns / 1e9));
    // An async subscriber by default: a wait histogram too, empty.
    bool has_wait = false;
    for (const auto& family : families) {
        has_wait = has_wait || family.name == "herald_wait_seconds";
    }
    CHECK(has_wait);
}
