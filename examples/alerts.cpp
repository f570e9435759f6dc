// Alerts: three priority levels; stale alerts expire instead of being shown late.
#include <herald/herald.hpp>

#include <atomic>
#include <cstdio>
#include <string>
#include <thread>

struct alert {
    std::string text;
};

enum level : std::uint8_t { info = 0, warning = 1, critical = 2 };

// Critical alerts jump the queue; an alert still waiting after 50 ms is dropped (and
// counted) rather than shown late.
struct alerts : herald::topic<alert, herald::priority<3, herald::expire_after<herald::delay::ms(50)>>> {
    static constexpr std::string_view name = "alerts";
};

int main() {
    herald::bus bus{{.source = "monitoring", .workers = 1}};

    std::atomic<bool> started{false};
    std::atomic<bool> busy{true};
    auto pager = bus.subscribe<alerts>(
        [&](const herald::envelope<alert>& e) {
            static const char* const names[] = {"info", "warning", "critical"};
            std::printf("[%s] %s\n", names[e.priority()], e.event().text.c_str());
            started = true;
            while (busy) { // the first alert keeps the pager busy while the others queue up
                std::this_thread::yield();
            }
        },
        {.name = "pager"});

    bus.publish<alerts>({"pager started"}, {.priority = info});
    while (!started) {
        std::this_thread::yield();
    }
    bus.publish<alerts>({"disk 80% full"}, {.priority = warning});
    bus.publish<alerts>({"nightly backup done"}, {.priority = info});
    std::this_thread::sleep_for(std::chrono::milliseconds(60)); // those two are now stale
    bus.publish<alerts>({"cpu at 95%"}, {.priority = warning});
    bus.publish<alerts>({"database down"}, {.priority = critical});
    bus.publish<alerts>({"weekly report ready"}, {.priority = info});
    busy = false;
    bus.drain();

    std::printf("expired before anyone saw them: %llu\n", static_cast<unsigned long long>(pager.stats().expired));
    return pager.stats().expired == 2 ? 0 : 1;
}
