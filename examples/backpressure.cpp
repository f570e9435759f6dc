// Backpressure: a bounded mailbox makes a fast producer wait for a slow consumer instead
// of growing memory without bound; a producer that must not wait hears "refused".
#include <herald/herald.hpp>

#include <chrono>
#include <cstdio>
#include <thread>

struct job {
    int id = 0;
};

struct jobs : herald::topic<job> {
    static constexpr std::string_view name = "jobs";
};

struct telemetry : herald::topic<job> {
    static constexpr std::string_view name = "telemetry";
};

int main() {
    herald::bus bus{{.source = "backpressure", .workers = 2}};

    // Jobs must not be lost: at most 100 wait; a producer ahead of the worker waits for
    // room (up to 2 s, then the job is refused and the producer decides).
    auto worker = bus.subscribe<jobs>([](const job&) { std::this_thread::sleep_for(std::chrono::microseconds(200)); },
                                      {.name = "worker",
                                       .capacity = 100,
                                       .overflow = herald::overflow::block,
                                       .block_timeout = std::chrono::seconds(2)});

    // Telemetry may be lost, but the producer must never wait: refuse when 10 wait.
    auto uploader =
        bus.subscribe<telemetry>([](const job&) { std::this_thread::sleep_for(std::chrono::microseconds(200)); },
                                 {.name = "uploader", .capacity = 10, .overflow = herald::overflow::reject});

    const auto start = std::chrono::steady_clock::now();
    int refused_jobs = 0;
    int refused_samples = 0;
    for (int i = 0; i < 1000; ++i) {
        refused_jobs += static_cast<int>(bus.publish<jobs>({i}).refused);
        const herald::publish_result sample = bus.publish<telemetry>({i});
        if (sample.refused != 0) {
            ++refused_samples; // sample.refused_by names the subscriber: "uploader"
        }
    }
    const auto producing = std::chrono::steady_clock::now() - start;
    bus.drain();

    const auto w = worker.stats();
    const auto u = uploader.stats();
    std::printf("producer took %lld ms for 1000 jobs (blocked %lld ms in all)\n",
                static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(producing).count()),
                static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(w.blocked).count()));
    std::printf("worker:   %llu delivered, %d refused, at most %zu waiting (capacity %zu)\n",
                static_cast<unsigned long long>(w.delivered), refused_jobs, w.high_water, w.capacity);
    std::printf("uploader: %llu delivered, %llu refused (capacity %zu)\n", static_cast<unsigned long long>(u.delivered),
                static_cast<unsigned long long>(u.rejected), u.capacity);
    const bool ok = w.delivered == 1000 && refused_jobs == 0 && w.high_water <= 100 &&
                    u.delivered + u.rejected == 1000 && u.rejected == static_cast<unsigned>(refused_samples);
    return ok ? 0 : 1;
}
