// A custom delivery policy: retry only transient errors (std::system_error), dead-letter the rest.
#include <herald/herald.hpp>

#include <cstdio>
#include <stdexcept>
#include <system_error>

// Derive from at_least_once and hide what you want to change; herald::delivery_policy
// (checked at compile time) says what a policy must provide.
struct retry_transient_only
    : herald::at_least_once<herald::max_attempts<3>, herald::fixed_backoff<herald::delay::ms(2)>> {
    static bool should_retry(const std::exception_ptr& error) noexcept {
        try {
            std::rethrow_exception(error);
        } catch (const std::system_error&) {
            return true; // the network hiccupped: try again
        } catch (...) {
            return false; // a bug or bad data: retrying will not help
        }
    }
};
static_assert(herald::delivery_policy<retry_transient_only>);

struct shipment {
    int id = 0;
};
struct shipments : herald::topic<shipment, retry_transient_only> {};

int main() {
    herald::bus bus{{.workers = 1, .on_error = [](const herald::delivery_error& e) {
                         std::printf("  attempt %u failed: %s\n", static_cast<unsigned>(e.attempt),
                                     e.message().c_str());
                     }}};
    auto carrier = bus.subscribe<shipments>([](const herald::envelope<shipment>& e) {
        if (e.event().id == 1 && e.attempt() == 1) {
            throw std::system_error(std::make_error_code(std::errc::connection_reset), "carrier API");
        }
        if (e.event().id == 2) {
            throw std::invalid_argument("unknown postcode");
        }
        std::printf("shipment %d booked on attempt %u\n", e.event().id, static_cast<unsigned>(e.attempt()));
    });
    bus.publish<shipments>({1});
    bus.publish<shipments>({2});
    bus.drain();
    for (const auto& letter : bus.dead_letters<shipments>()) {
        std::printf("dead letter: shipment %d, %s after %u attempt(s): %s\n", letter.event().id,
                    std::string(to_string(letter.reason)).c_str(), static_cast<unsigned>(letter.attempts),
                    letter.error.c_str());
    }
    return bus.dead_letters<shipments>().size() == 1 ? 0 : 1;
}
