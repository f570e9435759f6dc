// Payments: a flaky gateway subscriber retried with backoff; a dead-letter monitor prints failures.
#include <herald/herald.hpp>

#include <atomic>
#include <cstdio>
#include <stdexcept>
#include <string>

struct payment_requested {
    int order = 0;
    double amount = 0;
};

// Up to 4 attempts, 5 ms then 10 ms then 20 ms apart (exponential, capped at 1 s).
struct payments
    : herald::topic<payment_requested,
                    herald::at_least_once<herald::max_attempts<4>,
                                          herald::exponential_backoff<herald::delay::ms(5), herald::delay::s(1)>>> {
    static constexpr std::string_view name = "payments";
};

int main() {
    herald::bus bus{{.source = "shop", .workers = 2, .on_error = [](const herald::delivery_error& e) {
                         std::printf("  gateway failed: order event %s, attempt %u: %s\n", e.id.to_string().c_str(),
                                     static_cast<unsigned>(e.attempt), e.message().c_str());
                     }}};

    // The gateway is flaky: order 2 succeeds on its third attempt; order 3 is refused for
    // good (a poison message, dead-lettered at once); order 4 never goes through.
    auto gateway = bus.subscribe<payments>(
        [](const herald::envelope<payment_requested>& e) -> herald::outcome {
            const int order = e.event().order;
            if (order == 2 && e.attempt() < 3) {
                throw std::runtime_error("gateway timeout");
            }
            if (order == 3) {
                return herald::reject("card number is malformed");
            }
            if (order == 4) {
                return herald::nack("gateway says: try later");
            }
            std::printf("charged order %d: %.2f (attempt %u)\n", order, e.event().amount,
                        static_cast<unsigned>(e.attempt()));
            return herald::ack();
        },
        {.name = "gateway"});

    // Whatever the gateway could not handle ends up here, with why.
    auto monitor = bus.subscribe<herald::dead_letter_topic<payments>>(
        [](const herald::dead_letter<payment_requested>& letter) {
            std::printf("DEAD LETTER order %d after %u attempt(s) [%s]: %s\n", letter.event().order,
                        static_cast<unsigned>(letter.attempts), std::string(to_string(letter.reason)).c_str(),
                        letter.error.c_str());
        },
        {.name = "monitor"});

    for (int order = 1; order <= 4; ++order) {
        bus.publish<payments>({order, 10.0 * order});
    }
    bus.drain(); // waits for retries too: every payment is now charged or dead-lettered

    const auto s = bus.stats();
    std::printf("retries: %llu, dead letters: %llu\n", static_cast<unsigned long long>(s.retried),
                static_cast<unsigned long long>(s.dead_lettered));
    return s.dead_lettered == 2 ? 0 : 1;
}
