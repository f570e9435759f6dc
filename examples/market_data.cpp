// Market data: a screen that repaints slower than quotes arrive sees only the newest
// quote of each symbol (conflation), and the strategy gets every quote of one symbol in
// order while symbols run in parallel (keyed ordering).
#include <herald/herald.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <thread>

struct quote {
    std::string symbol;
    double price = 0;
    int tick = 0;
};

struct quotes : herald::topic<quote> {
    static constexpr std::string_view name = "market.quotes";
};

int main() {
    herald::bus bus{{.source = "market-data", .workers = 2}};

    // The screen: 2 ms per repaint, far slower than the feed. While quotes wait, only the
    // newest per symbol is kept, in the place where its symbol first waited.
    std::mutex screen_mutex;
    std::map<std::string, quote> screen;
    std::atomic<int> repaints{0};
    auto display = bus.subscribe<quotes>(
        [&](const quote& q) {
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
            const std::lock_guard lock(screen_mutex);
            screen[q.symbol] = q;
            ++repaints;
        },
        {.name = "screen", .capacity = 16, .overflow = herald::overflow::conflate, .key = [](const quote& q) {
             return q.symbol;
         }});

    // The strategy: every quote, one at a time per symbol, symbols in parallel.
    std::mutex last_mutex;
    std::map<std::string, int> last_tick;
    std::atomic<int> out_of_order{0};
    auto strategy = bus.subscribe<quotes>(
        [&](const quote& q) {
            const std::lock_guard lock(last_mutex);
            int& last = last_tick[q.symbol];
            if (q.tick <= last) {
                ++out_of_order;
            }
            last = q.tick;
        },
        {.name = "strategy", .order = herald::ordering::by_key, .pool = bus.make_pool(4), .key = [](const quote& q) {
             return q.symbol;
         }});

    const char* const symbols[] = {"ACME", "GLOBEX", "INITECH", "UMBRELLA"};
    for (int tick = 1; tick <= 2000; ++tick) {
        const std::string symbol = symbols[tick % 4];
        bus.publish<quotes>({symbol, 100.0 + tick * 0.01, tick});
    }
    bus.drain();

    const auto shown = display.stats();
    std::printf("screen: %d repaints for %llu quotes (%llu conflated, %llu dropped)\n", repaints.load(),
                static_cast<unsigned long long>(shown.accepted), static_cast<unsigned long long>(shown.conflated),
                static_cast<unsigned long long>(shown.dropped));
    for (const auto& [symbol, q] : screen) {
        std::printf("  %-9s %.2f (tick %d)\n", symbol.c_str(), q.price, q.tick);
    }
    std::printf("strategy: %llu quotes, %d out of order\n", static_cast<unsigned long long>(strategy.stats().delivered),
                out_of_order.load());
    // Every symbol's last quote reached the screen; every quote reached the strategy.
    const bool ok = screen.size() == 4 && screen.at("ACME").tick == 2000 && out_of_order.load() == 0 &&
                    strategy.stats().delivered == 2000 &&
                    shown.accepted == shown.delivered + shown.conflated + shown.dropped;
    return ok ? 0 : 1;
}
